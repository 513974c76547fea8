"""The declared record (suite/records.py): runners build it, old files stay readable, newer ones stop
with one line, and every record column the report reads is a declared field."""

import ast
import json
from dataclasses import fields
from pathlib import Path

import pandas as pd
import pytest

from suite import records
from suite.jobs import JOB_KINDS, Job, Recipe
from suite.report import tables
from suite.store import ResultsStore

SUITE = Path(records.__file__).parent


def _as_version_1(record: dict) -> dict:
    """What lstm-bench wrote before records were declared: no version, the recipe under `train`."""
    old = {("train" if k == "recipe" else k): v for k, v in record.items() if k != "record_version"}
    return {k: v for k, v in old.items() if v is not None or k not in ("error", "traceback")}


def _write(path: Path, rows: list[dict]) -> ResultsStore:
    path.mkdir(parents=True, exist_ok=True)
    (path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return ResultsStore(path)


def test_version_1_records_read_as_today_and_keep_their_keys(smoke_run, tmp_path):
    today = ResultsStore(smoke_run).records()
    assert {r["record_version"] for r in today} == {records.RECORD_VERSION}
    old = _write(tmp_path / "v1", [_as_version_1(r) for r in today])
    read = old.records()
    assert all(r["record_version"] == 1 and "train" not in r and "recipe" in r for r in read)
    for r in read:  # the job key is unchanged: a results directory of version 1 resumes
        assert Job(**{k: r[k] for k in records.JOB_FIELDS}).key == r["key"]
    new, v1 = tables.load(ResultsStore(smoke_run)), tables.load(old)
    assert not v1["train"].empty and not tables.throughput_table(v1.get("throughput")).empty
    cols = ["config", "model", "mean", "std", "seeds", "lr", "budget", "params"]
    pd.testing.assert_frame_equal(tables.task_table(v1["train"])[cols], tables.task_table(new["train"])[cols])


def test_version_2_names_read_as_today(tmp_path):
    """Version 2 called a scaling step's median `train_seconds` (a training run's total loop time) and
    wikitext2's bits per word `bpc`: read today as `train_step_seconds` and `bpw`."""
    from suite.report.claims import _scaling_evidence

    scaling = [
        {
            "record_version": 2,
            "kind": "scaling",
            "model": "m",
            "status": "ok",
            "seq_len": T,
            "train_seconds": s,
        }
        for T, s in ((64, 0.01), (128, 0.02))
    ]
    wiki = {
        "record_version": 2,
        "kind": "train",
        "task": "wikitext2",
        "train_seconds": 9.0,
        "primary_metric": "bpc",
        "test": {"loss": 3.0, "bpc": 4.3},
        "baseline": {"bpc": 5.0, "unigram_bpc": 6.0, "strongest": "trigram"},
        "curve": [{"step": 5, "val_bpc": 4.5, "val_loss": 3.1}],
    }
    char = {**wiki, "task": "char_lm"}
    read = _write(tmp_path / "v2", [*scaling, wiki, char]).records()
    assert [r["train_step_seconds"] for r in read[:2]] == [0.01, 0.02]
    assert not any("train_seconds" in r for r in read[:2])
    assert read[2]["train_seconds"] == 9.0 and read[2]["primary_metric"] == "bpw"  # a training run's own
    assert read[2]["test"] == {"loss": 3.0, "bpw": 4.3} and read[2]["curve"][0]["val_bpw"] == 4.5
    assert read[2]["baseline"] == {"bpw": 5.0, "unigram_bpw": 6.0, "strongest": "trigram"}
    assert read[3] == char  # bits per character keep their name
    assert "T^1.00" in _scaling_evidence(pd.DataFrame(read[:2]))[0]


def test_read_records_keeps_the_last_line_of_each_key(tmp_path):
    """After --retry-failed the file holds the failed record and then the new one: the new one counts."""
    from suite.store import read_records

    lines = [
        {"key": "a", "kind": "train", "status": "failed", "error": "killed"},
        {"key": "b", "kind": "scaling", "status": "ok"},
        {"key": "a", "kind": "train", "status": "ok"},
    ]
    _write(tmp_path / "r", lines)
    assert len(pd.read_json(tmp_path / "r" / "records.jsonl", lines=True)) == 3  # every line
    for where in (tmp_path / "r", tmp_path / "r" / "records.jsonl"):
        df = read_records(where)
        assert list(df["key"]) == ["b", "a"] and list(df["status"]) == ["ok", "ok"]
        assert (df["record_version"] == 1).all()  # read in today's shape
    assert list(read_records(tmp_path / "r", kind="train")["status"]) == ["ok"]
    assert read_records(tmp_path / "none").empty


def test_a_key_made_before_the_rename_still_matches():
    job = Job(
        kind="train",
        experiment="main",
        task="copy_memory",
        model="nn-lstm",
        seed=1,
        task_params={"delay": 10},
        model_options={},
        param_budget=5000,
        layers=None,
        recipe={"steps": 100, "lr": 0.01},
        width=None,
        extra={},
        role="main",
    )
    assert job.key == "ab16d25a87106fc2a030"  # computed by lstm-bench before Job.train became Job.recipe


def test_a_job_takes_keywords_only():
    """Positional fields would let a swapped pair (seed and budget, two dicts) silently make another key."""
    with pytest.raises(TypeError):
        Job("train", "main", "copy_memory", "nn-lstm", 1, {}, {}, 5000)  # type: ignore[misc]


def test_a_newer_record_version_is_one_line_and_exit_2(tmp_path, capsys):
    from suite.cli import main

    _write(tmp_path / "new", [{"record_version": records.RECORD_VERSION + 1, "key": "k", "kind": "train"}])
    assert main(["report", str(tmp_path / "new"), "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"record version {records.RECORD_VERSION + 1}" in err
    assert f"reads up to {records.RECORD_VERSION}: upgrade lstm-bench" in err
    assert not (tmp_path / "rep").exists()
    assert main(["run", "--profile", "smoke", "--out", str(tmp_path / "new"), "--no-progress"]) == 2
    assert "upgrade lstm-bench" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["records.jsonl"]  # no run.json, no record


def test_dry_run_cost_hints_skip_a_sibling_written_by_a_newer_version(tmp_path):
    from suite.estimate import _records_near

    _write(tmp_path / "newer", [{"record_version": records.RECORD_VERSION + 1, "key": "n", "kind": "train"}])
    _write(tmp_path / "older", [{"key": "o", "kind": "train", "train": {"lr": 0.1}}])
    assert [r["key"] for r in _records_near(tmp_path / "mine")] == ["o"]


def test_a_result_with_an_undeclared_field_fails_where_it_is_made():
    with pytest.raises(TypeError, match="tokens_per_sec"):
        records.Latency(
            latency_seconds=1.0,
            latency_iqr_seconds=0.1,
            latency_steps=4,
            timing_threads=1,
            tokens_per_sec=3.0,
        )


def test_a_runner_that_returns_an_undeclared_result_is_a_failed_record(registry, monkeypatch):
    import torch

    from suite import executor
    from suite.environment import environment

    job = Job(
        kind="latency",
        experiment="latency",
        task="synthetic",
        model="nn-lstm",
        seed=0,
        param_budget=2000,
        recipe={"batch_size": 2},
        extra={"context": 8},
        role="latency",
    )
    cpu = torch.device("cpu")
    run = executor.RunContext(registry, cpu, "float32", environment(cpu, "float32"))
    monkeypatch.setitem(executor.RUNNERS, "latency", lambda job, run: {"latency_seconds": 1.0})
    record = executor.run_job(job, run)
    assert record["status"] == "failed" and "returned a dict" in record["error"]
    assert set(record) <= records.COLUMNS["latency"]


# ---- every record column the report reads is declared -----------------------------------------------

READERS = {  # the functions that read record columns (the others read the report's own tables)
    "report/tables.py": (
        "load",
        "_split_tuning",
        "config_label",
        "_metric",
        "_baseline",
        "task_table",
        "_tuning_cost",
        "tuning_table",
        "throughput_table",
        "seed_scores",
    ),
    "report/claims.py": ("_scaling_evidence",),
}
MADE_BY_THE_REPORT = {"config", "sweep", "lr_tuned", "value"}  # columns the report adds (load, seed_scores)
NOT_COLUMNS = (
    {f.name for f in fields(Recipe)}  # keys of the recipe,
    | {"lr_grid", "tune_seed", "scores", "points", "solved_steps"}  # a tuned job's extra, tuning.choose
    | {"mean", "std", "min", "max", "n"}  # of stability.seed_summary,
    | set(JOB_KINDS)
    | {"tuning"}
)  # and of the frames tables.load returns


def _strings_read(fn: ast.FunctionDef) -> set[str]:
    """Column names a function reads: x["a"], x[["a", "b"]], x.get("a"), "a" in x, _col(g, "a"),
    groupby/drop_duplicates/dropna(subset=)/sort_values arguments and the `cols` list."""
    out: set[str] = set()

    def consts(node) -> list[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return [node.value]
        if isinstance(node, (ast.List, ast.Tuple)):
            return [s for e in node.elts for s in consts(e)]
        return []

    for node in ast.walk(fn):
        if isinstance(node, ast.Subscript):
            out.update(consts(node.slice))
        elif isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
            out.update(consts(node.left))
        elif isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name == "get" and node.args:
                out.update(consts(node.args[0]))
            elif name in ("groupby", "drop_duplicates", "dropna", "sort_values"):
                for arg in [*node.args, *(k.value for k in node.keywords if k.arg in ("subset", "by"))]:
                    out.update(consts(arg))
            elif name in ("_col", "_family_best") and len(node.args) > 1:
                out.update(consts(node.args[1]))
        elif isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "cols" for t in node.targets):
            out.update(consts(node.value))
    return out


def test_the_throughput_figure_reads_declared_columns():
    from suite.report.figures import RATES

    assert {c for _, *columns in RATES for c in columns} <= records.names(records.Throughput)


@pytest.mark.parametrize("module", sorted(READERS))
def test_every_record_column_the_report_reads_is_declared(module):
    tree = ast.parse((SUITE / module).read_text())
    functions = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert set(READERS[module]) <= set(functions), "a reader was renamed: update READERS"
    read = set().union(*(_strings_read(functions[name]) for name in READERS[module]))
    assert "train_tokens_per_s" in read or module.endswith("claims.py")  # the scan sees the reads
    unknown = read - records.ALL_COLUMNS - MADE_BY_THE_REPORT - NOT_COLUMNS
    assert not unknown, f"{module} reads record columns suite/records.py does not declare: {sorted(unknown)}"
