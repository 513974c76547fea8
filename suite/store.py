"""Results store: one directory per run of the suite.

  RUN_DIR/records.jsonl   one JSON object per finished job, appended with one write() + fsync,
                          so a SIGKILL leaves at worst a torn last line, which is cut on reopen
  RUN_DIR/run.json        the profile, the command and the environment of the (latest) run
  RUN_DIR/microbench.json pytest-benchmark output, when the micro suite ran

The file is append-only: a job run again (`--retry-failed`) appends its new record after the failed
one, and the last line of a key wins. Appending is what makes a kill at any moment safe (one write,
one fsync, never a rewrite of earlier lines) and keeps the failed attempt on file as what happened.
Read it with `read_records(RUN_DIR)`: a pandas DataFrame, one row per job (its latest record), every
record in today's shape (suite.records.upgrade). `pd.read_json(..., lines=True)` returns every line.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from suite.errors import SuiteError
from suite.records import upgrade

RECORDS = "records.jsonl"
RUN_INFO = "run.json"
MICROBENCH = "microbench.json"


def _clean(value):
    """JSON has no NaN/inf: store them as null (and say so in the record's status)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class ResultsStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def records_path(self) -> Path:
        return self.root / RECORDS

    def open_for_append(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._repair_torn_tail()

    def _repair_torn_tail(self) -> None:
        path = self.records_path
        if not path.exists() or path.stat().st_size == 0:
            return
        data = path.read_bytes()
        if data.endswith(b"\n"):
            return
        keep = data.rfind(b"\n") + 1  # drop the partial line a kill left behind
        with open(path, "r+b") as fh:
            fh.truncate(keep)

    def append(self, record: dict) -> None:
        line = (json.dumps(_clean(record), sort_keys=True) + "\n").encode()
        fd = os.open(self.records_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def records(self) -> list[dict]:
        """Every record in today's shape (suite.records.upgrade); a SuiteError for one written by a newer
        version of lstm-bench than this one."""
        path = self.records_path
        if not path.exists():
            return []
        out = []
        for line in path.read_bytes().split(b"\n"):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line from a killed run
            out.append(upgrade(record, str(path)))
        return out

    def write_run_info(self, info: dict) -> None:
        tmp = self.root / (RUN_INFO + ".tmp")
        tmp.write_text(json.dumps(_clean(info), indent=2, sort_keys=True, default=str))
        os.replace(tmp, self.root / RUN_INFO)  # atomic: never a half-written run.json

    def run_info(self) -> dict:
        path = self.root / RUN_INFO
        return json.loads(path.read_text()) if path.exists() else {}

    def latest(self) -> list[dict]:
        """One record per job: the last line of each key (see the module's docstring)."""
        return latest(self.records())

    def frame(self, kind: str | None = None):
        """The latest record of each job as a DataFrame, of one kind or all."""
        import pandas as pd

        df = pd.DataFrame(self.latest())
        if kind is not None and not df.empty:
            df = df[df["kind"] == kind].reset_index(drop=True)
        return df


def latest(records: list[dict]) -> list[dict]:
    """The last record of each key, in the order those last records were written."""
    last = {r.get("key"): i for i, r in enumerate(records)}
    return [r for i, r in enumerate(records) if last[r.get("key")] == i]


def read_records(path: str | Path, kind: str | None = None):
    """A results directory (or its records.jsonl) -> a pandas DataFrame with one row per job, its latest
    record (the last line of its key), in today's shape; `kind` keeps one job kind."""
    path = Path(path)
    return ResultsStore(path.parent if path.name == RECORDS else path).frame(kind)


def open_existing(root: str | Path) -> ResultsStore:
    """For `report`/`compare`: the directory must exist and be readable."""
    path = Path(root)
    if not path.is_dir():
        raise SuiteError(
            f"results directory {str(path)!r} does not exist; pass the directory a `suite run` wrote (e.g. "
            "results/smoke)"
        )
    if not os.access(path, os.R_OK | os.X_OK):
        raise SuiteError(f"results directory {str(path)!r} is not readable; check its permissions")
    records = path / RECORDS
    if records.exists() and not os.access(records, os.R_OK):
        raise SuiteError(f"{records} is not readable; check its permissions")
    store = ResultsStore(path)
    store.records()  # a record from a newer lstm-bench stops here, before a report writes anything
    return store
