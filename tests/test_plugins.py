"""The README's example plugin, installed and loaded exactly as a user would."""

import re
import subprocess
import sys

import pandas as pd
import pytest
from conftest import FIXTURES, suite


@pytest.mark.slow
def test_plugin_package_via_entry_point(tmp_path):
    target = tmp_path / "site"
    pip = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            str(FIXTURES / "example_plugin"),
        ],
        capture_output=True,
        text=True,
    )
    assert pip.returncode == 0, pip.stderr[-1500:]
    env = {"PYTHONPATH": str(target)}
    listed = suite("list", "tasks", env=env)
    assert listed.returncode == 0 and re.search(r"^parity\s", listed.stdout, re.M), listed.stderr
    profile = tmp_path / "p.toml"
    profile.write_text(
        "seeds = 1\n[train]\nsteps = 10\nbatch_size = 8\neval_every = 5\n"
        '[[experiment]]\nmodels = ["nn-lstm", "transformer"]\nparam_budget = 2000\n'
        '[[experiment.task]]\nname = "parity"\n'
    )
    run = suite("run", "--profile", profile, "--out", tmp_path / "res", "--no-progress", env=env)
    assert run.returncode == 0, run.stderr[-1500:]
    df = pd.read_json(tmp_path / "res" / "records.jsonl", lines=True)
    assert set(df["task"]) == {"parity"} and set(df["status"]) == {"ok"}
    rep = suite("report", tmp_path / "res", "--out", tmp_path / "rep" / "res", env=env)
    assert rep.returncode == 0
    assert "parity" in (tmp_path / "rep" / "res" / "report.html").read_text()


def test_plugin_file_via_option_and_environment(tmp_path):
    plugin = FIXTURES / "example_plugin" / "parity_task.py"
    listed = lambda out: re.search(r"^parity\s", out, re.M) is not None  # the name column (not parity_check)
    assert listed(suite("--plugin", plugin, "list", "tasks").stdout)
    assert listed(suite("list", "tasks", env={"LSTM_BENCH_PLUGINS": str(plugin)}).stdout)
    assert not listed(suite("list", "tasks").stdout)


def test_a_bare_plugin_model_runs_every_job_kind(tmp_path):
    """Optional model methods are looked up with defaults: each job works or is skipped with the reason."""
    profile = tmp_path / "bare.toml"
    profile.write_text(
        "seeds = 1\n[train]\nsteps = 6\nbatch_size = 4\neval_every = 3\n"
        '[[experiment]]\nmodels = ["bare"]\nparam_budget = 500\n'
        '[[experiment.task]]\nname = "adding"\nparams = { seq_len = 8 }\nmeasure_throughput = true\n'
        '[measure.scaling]\nmodels = ["bare"]\nseq_lens = [8]\nparam_budget = 500\nbatch_size = 2\n'
        '[measure.latency]\nmodels = ["bare"]\ncontexts = [20]\nparam_budget = 500\n'
    )
    proc = suite(
        "--plugin",
        FIXTURES / "bare_model.py",
        "run",
        "--profile",
        profile,
        "--out",
        tmp_path / "r",
        "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr[-1500:]
    df = pd.read_json(tmp_path / "r" / "records.jsonl", lines=True).set_index("kind")
    assert {k: df.loc[k, "status"] for k in ("train", "throughput", "scaling", "latency")} == {
        "train": "ok",
        "throughput": "ok",
        "scaling": "ok",
        "latency": "skipped",
    }
    assert "no incremental decoding" in df.loc["latency", "skip_reason"]
    assert "names no backend" in df.loc["train", "backend"] and df.loc["train", "flops_per_token"] > 0
    assert df.loc["train", "compile_seconds"] is None or pd.isna(df.loc["train", "compile_seconds"])
