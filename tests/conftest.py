import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
SHARED = ROOT.parent / "shared" / "data"

if "LSTM_BENCH_DATA_DIR" not in os.environ and SHARED.is_dir():
    os.environ["LSTM_BENCH_DATA_DIR"] = str(SHARED)


def data_dir() -> Path | None:
    path = os.environ.get("LSTM_BENCH_DATA_DIR")
    return Path(path) if path and Path(path).is_dir() else None


def suite(*args, cwd=ROOT, env=None, timeout=600):
    """Run `python -m suite ARGS` as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "suite", *map(str, args)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def registry():
    from suite.registry import load_registry

    return load_registry()


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The smoke profile, run once per test session through the CLI, in this process at 1 thread (the
    parallel test compares it with 2 workers of 1 thread each)."""
    out = tmp_path_factory.mktemp("smoke") / "results"
    proc = suite("run", "--profile", "smoke", "--out", out, "--threads", "1", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.fixture
def two_threads():
    """torch at 2 threads for the test (the compiled kernels' parallel paths), restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)
