"""`compare` as a gate, and the learning-rate tuning protocol, end to end through the CLI."""

import json
import shutil

import pandas as pd
from conftest import suite

ROLE_PROFILE = '[[experiment]]\nrole = "{role}"\nmodels = ["nn-lstm"]\n[[experiment.task]]\nname = "adding"\n'


def _forge_worse(src, dst):
    """B: a copy of A whose every primary metric is worse for every seed (losses x3, accuracies -0.5)."""
    shutil.copytree(src, dst)
    lines = []
    for line in (dst / "records.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("kind") == "train" and isinstance(r.get("test"), dict):
            m = r["primary_metric"]
            r["test"][m] = r["test"][m] - 0.5 if r["higher_is_better"] else r["test"][m] * 3
        lines.append(json.dumps(r))
    (dst / "records.jsonl").write_text("\n".join(lines) + "\n")


def test_compare_fails_on_a_forged_regression_and_passes_a_run_against_itself(smoke_run, tmp_path):
    same = suite("compare", smoke_run, smoke_run, "--fail-on-regression")
    assert same.returncode == 0, same.stdout[-1500:]
    _forge_worse(smoke_run, tmp_path / "worse")
    worse = suite("compare", smoke_run, tmp_path / "worse", "--fail-on-regression")
    assert worse.returncode == 1, worse.stdout[-2000:]
    assert "REGRESSED" in worse.stdout and "df=" in worse.stdout and "regression:" in worse.stderr
    assert suite("compare", smoke_run, tmp_path / "worse").returncode == 0  # a gate only when asked


def test_compare_warns_when_protocols_differ(smoke_run, tmp_path):
    shutil.copytree(smoke_run, tmp_path / "other")
    info = json.loads((tmp_path / "other" / "run.json").read_text())
    info["env"]["threads"] = 99
    (tmp_path / "other" / "run.json").write_text(json.dumps(info))
    proc = suite("compare", smoke_run, tmp_path / "other")
    assert "warning: threads differs: 2 vs 99" in proc.stdout or "warning: threads differs" in proc.stdout


def test_unknown_role_is_a_one_line_error(tmp_path):
    profile = tmp_path / "p.toml"
    profile.write_text(ROLE_PROFILE.format(role="clr-test"))
    proc = suite("run", "--profile", profile, "--out", tmp_path / "out")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "unknown role 'clr-test'" in proc.stderr and not (tmp_path / "out").exists()


def test_learning_rate_is_tuned_on_validation_then_seeds_run_at_the_choice(tmp_path):
    profile = tmp_path / "tune.toml"
    profile.write_text(
        "seeds = 2\n[train]\nsteps = 12\nbatch_size = 8\neval_every = 6\nwarmup = 0\n"
        "[tune]\nlr = [1e-4, 3e-2]\n" + ROLE_PROFILE.format(role="main") + "params = { seq_len = 10 }\n"
    )
    out = tmp_path / "out"
    proc = suite("run", "--profile", profile, "--out", out, "--no-progress")
    assert proc.returncode == 0, proc.stderr[-1500:]
    df = pd.read_json(out / "records.jsonl", lines=True)
    lrs = {(r.seed, r.recipe["lr"]) for r in df.itertuples()}
    tuning = df[df["seed"] == 0].set_index(df[df["seed"] == 0]["recipe"].map(lambda t: t["lr"]))["best_val"]
    chosen = tuning.idxmin()  # MSE: lower is better
    assert lrs == {(0, 1e-4), (0, 3e-2), (1, chosen)}, (
        lrs
    )  # 2 grid points on seed 0, then seed 1 at the choice
    assert len(df) == 3 and df["key"].is_unique
    rerun = suite("run", "--profile", profile, "--out", out, "--no-progress")
    assert rerun.returncode == 0 and " 0 ok" in rerun.stderr
    report = suite("report", out, "--out", tmp_path / "rep")
    assert report.returncode == 0, report.stderr[-1500:]
    text = (tmp_path / "rep" / "report.html").read_text()
    assert "tuned per (task config, model)" in text and f"{chosen:g}" in text
