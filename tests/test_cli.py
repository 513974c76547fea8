"""The CLI as a user runs it: resume, kill -9, bad input (one line, exit 2, nothing written)."""

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from conftest import FIXTURES, ROOT, suite

TINY = FIXTURES / "tiny.toml"


def _keys(out):
    df = pd.read_json(out / "records.jsonl", lines=True)
    return sorted(df["key"]), df


def test_smoke_rerun_skips_everything(smoke_run):
    start = time.perf_counter()
    proc = suite("run", "--profile", "smoke", "--out", smoke_run, "--no-progress")
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    assert " 0 ok" in proc.stderr and "already finished" in proc.stderr
    assert elapsed < 30, elapsed
    keys, df = _keys(smoke_run)
    assert len(keys) == len(set(keys)) and set(df["status"]) <= {"ok", "diverged"}


def test_a_run_builds_only_for_the_jobs_it_will_run(smoke_run, monkeypatch, capsys):
    """The driver's C++ builds (cli._start_builds) cover the models of the jobs that will run: a resumed
    run with nothing left builds nothing (a cold build would cost it half a minute)."""
    from suite import cli

    asked: list[list] = []
    monkeypatch.setattr(cli, "_start_builds", lambda shapes: asked.append(shapes) or [])
    assert cli.main(["run", "--profile", "smoke", "--out", str(smoke_run), "--no-progress"]) == 0
    assert asked == [[]], asked


def test_the_drivers_early_builds_draw_nothing_from_the_global_generator(registry):
    """cli._start_builds runs beside the first job, which seeds torch's global generator and draws its
    initial weights from it: models built for their C++ loops on the CPU drew from it too, and the
    kill-and-resume test saw a resumed job start from other weights. On the meta device they draw
    nothing, and the loops are still built."""
    from suite import cli
    from suite.models import lstm_fast
    from tasks.adding_problem import AddingProblem

    spec = AddingProblem(seq_len=10).spec
    shapes = [(registry.model(name), spec, None, {}) for name in ("lstm-fast", "transformer", "nn-lstm")]
    torch.manual_seed(0)
    want = torch.randn(4)
    torch.manual_seed(0)
    for thread in cli._start_builds(shapes):
        thread.join()
    assert torch.equal(torch.randn(4), want)
    assert lstm_fast._state["module"] is not None or lstm_fast._state["error"] is not None


@pytest.mark.slow
def test_kill_9_then_resume_gives_the_uninterrupted_records(tmp_path):
    ref = tmp_path / "ref"
    assert suite("run", "--profile", TINY, "--out", ref, "--no-progress").returncode == 0
    ref_keys, ref_df = _keys(ref)
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "suite", "run", "--profile", str(TINY), "--out", str(out), "--no-progress"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    records = out / "records.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (records.exists() and records.read_bytes().count(b"\n") >= 3):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with open(records, "ab") as fh:  # the worst case: a kill in the middle of a write
        fh.write(b'{"key": "torn", "stat')
    assert suite("run", "--profile", TINY, "--out", out, "--no-progress").returncode == 0
    keys, df = _keys(out)
    assert keys == ref_keys
    cols = ["key", "status", "test"]
    merged = df[cols].merge(ref_df[cols], on="key", suffixes=("", "_ref"))
    assert (merged["test"] == merged["test_ref"]).all(), "resumed results differ from the uninterrupted run"


BAD = [
    (["run", "--task", "nope"], "unknown task 'nope'"),
    (["run", "--model", "nope"], "unknown model 'nope'"),
    (["run", "--profile", "nope"], "unknown profile 'nope'"),
    (["run", "--device", "tpu"], "unknown device 'tpu'"),
    (["run", "--seeds", "0,x"], "--seeds"),
    (["--plugin", str(FIXTURES / "bad_import.py"), "run"], "failed to import"),
    (["--plugin", str(FIXTURES / "bad_missing_method.py"), "run"], "missing method baseline()"),
    (
        [
            "--plugin",
            str(FIXTURES / "bad_return_type.py"),
            "run",
            "--profile",
            "PLUGIN",
            "--task",
            "wrong_type",
        ],
        "must return suite.interfaces.Batch",
    ),
    (["--plugin", "no_such_module_xyz", "list", "tasks"], "failed to import"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[m for _, m in BAD])
def test_bad_input_one_line_error_nonzero_exit_nothing_written(tmp_path, args, message):
    args = list(args)
    if "PLUGIN" in args:
        profile = tmp_path / "p.toml"
        profile.write_text('[[experiment]]\nmodels = ["nn-lstm"]\n[[experiment.task]]\nname = "wrong_type"\n')
        args[args.index("PLUGIN")] = str(profile)
    out = tmp_path / "out"
    if args[-1] == "run" or "run" in args:
        args += ["--out", str(out)]
    proc = suite(*args)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-500:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert not out.exists()


def test_out_naming_a_file_is_a_one_line_error(tmp_path):
    (tmp_path / "afile").write_text("mine")
    proc = suite("run", "--profile", "smoke", "--out", tmp_path / "afile")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "is a file, not a directory" in proc.stderr and (tmp_path / "afile").read_text() == "mine"


def test_invalid_config_value_in_profile(tmp_path):
    profile = tmp_path / "neg.toml"
    profile.write_text(
        '[train]\nsteps = -5\n[[experiment]]\nmodels = ["nn-lstm"]\n[[experiment.task]]\nname = "adding"\n'
    )
    proc = suite("run", "--profile", profile, "--out", tmp_path / "out")
    assert proc.returncode == 2 and "steps must be a positive integer" in proc.stderr
    assert not (tmp_path / "out").exists()
    profile.write_text(
        '[[experiment]]\nmodels = ["nn-lstm"]\n[[experiment.task]]\nname = "adding"\nparams = '
        "{ seq_len = -3 }\n"
    )
    proc = suite("run", "--profile", profile, "--out", tmp_path / "out")
    assert proc.returncode == 2 and "seq_len" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_report_of_missing_or_unreadable_dir(tmp_path):
    proc = suite("report", tmp_path / "nope")
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "records.jsonl").write_text("")
    os.chmod(locked / "records.jsonl", 0)
    try:
        if os.access(locked / "records.jsonl", os.R_OK):
            pytest.skip("running as root: permissions do not stop reads")
        proc = suite("report", locked)
        assert proc.returncode == 2 and "not readable" in proc.stderr
    finally:
        os.chmod(locked / "records.jsonl", 0o644)


def test_list_models_and_profiles():
    models = suite("list", "models").stdout
    for name in (
        "lstm-reference",
        "lstm-manual",
        "lstm-fast",
        "lstm-triton",
        "nn-lstm",
        "lstm-cifg",
        "gru",
        "minlstm",
        "transformer",
        "hf-gpt2",
        "hf-llama",
    ):
        assert name in models
    assert all(p in suite("list", "profiles").stdout for p in ("smoke", "quick", "standard", "full", "gpu"))


def test_experiment_filter_selects_the_measure_experiments_by_name(registry):
    """--experiment ablation runs the ablation only; the [measure] tables answer to "scaling", "latency"."""
    from suite.profiles import expand, load_profile

    quick = load_profile("quick")
    kinds = lambda names: {j.kind for j in expand(quick, registry, experiments=names).jobs}
    ablation = expand(quick, registry, experiments=["ablation"])
    assert not ablation.jobs and {g.template.experiment for g in ablation.tuned} == {"ablation"}
    assert kinds(["scaling"]) == {"scaling"} and kinds(["latency"]) == {"latency"}
