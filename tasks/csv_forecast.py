"""Forecasting on any CSV of yours: a time column (named, or the first) and numeric columns.
`columns` chooses the inputs and `target` what is predicted (default: every column, multivariate as
in the ETT protocol; one target = Time-Series-Library's "MS", columns = target alone = "S").
Split by ratios with Time-Series-Library's Dataset_Custom rule (default 0.7/0.1/0.2): train =
the first int(0.7·n) rows, test = the last int(0.2·n) rows, validation = the rows between; the
validation and test windows' lookback reaches back across the split border, as in the ETT protocol.
StandardScaler fit on the training rows only; MSE and MAE on that normalised scale, every window."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from suite.errors import ConfigError, DataError
from tasks._data import read_text_file
from tasks._forecasting import WindowForecastTask


@dataclass
class Table:
    """The numeric columns of a CSV, checked: values (rows, columns), names, the predicted columns."""

    values: np.ndarray
    names: list[str]
    targets: list[int]
    time: str
    span: tuple[str, str]  # first and last value of the time column


def names_of(value, what: str) -> list[str] | None:
    """A list of column names from "a,b" or ["a", "b"] (None: not given)."""
    if value is None:
        return None
    names = [n.strip() for n in value.split(",")] if isinstance(value, str) else value
    if not (isinstance(names, (list, tuple)) and names and all(isinstance(n, str) and n for n in names)):
        raise ConfigError(f'csv {what} takes column names, as "a,b" or a list of strings, got {value!r}')
    return list(names)


def load_csv(path, time_column: str | None = None, columns=None, target=None) -> Table:
    fix = "pass path=<a UTF-8 CSV with a time column and numeric columns>"
    text = read_text_file(path, fix)
    try:
        frame = pd.read_csv(io.StringIO(text))
    except Exception as exc:  # pandas' parser errors carry the line they stopped at
        raise DataError(
            f"{path} is not a readable CSV ({type(exc).__name__}: {' '.join(str(exc).split())}); {fix}"
        ) from None
    header = [str(c) for c in frame.columns]
    frame.columns = header
    time = time_column or header[0]
    inputs, predicted = names_of(columns, "columns"), names_of(target, "target")
    for name in [time, *(inputs or []), *(predicted or [])]:
        if name not in header:
            raise DataError(
                f"{path} has no column {name!r}; its columns are {', '.join(header)}: name one of those"
            )
    inputs = inputs or [c for c in header if c != time]
    inputs += [c for c in predicted or [] if c not in inputs]  # a target is always an input too
    if time in inputs:
        raise ConfigError(
            f"{path}: column {time!r} is the time column, so it cannot be an input or target; "
            f"name another time column with time_column=<name>"
        )
    if not inputs:
        raise DataError(f"{path} has no column besides the time column {time!r}; add numeric columns")
    if len(frame) == 0:
        raise DataError(f"{path} has a header but no rows; {fix}")
    values = _numeric(frame[inputs], path)
    targets = [inputs.index(c) for c in predicted] if predicted else list(range(len(inputs)))
    return Table(values, inputs, targets, time, (str(frame[time].iloc[0]), str(frame[time].iloc[-1])))


def _numeric(frame: pd.DataFrame, path) -> np.ndarray:
    """The columns as floats (rows, columns); every column is checked before the error, so its counts
    are the whole file's: the first bad cell, then how many rows and cells are bad, per column."""
    values = frame.apply(pd.to_numeric, errors="coerce").to_numpy(dtype="float64")
    bad = ~np.isfinite(values)
    if not bad.any():
        return values
    row, col = divmod(int(np.argmax(bad)), bad.shape[1])  # the first bad cell, in reading order
    raw = frame.iloc[row, col]
    what = "a missing value" if pd.isna(raw) else f"the non-numeric value {str(raw)[:40]!r}"
    per_column = {name: int(n) for name, n in zip(frame.columns, bad.sum(0)) if n}
    rows, cells = int(bad.any(1).sum()), int(bad.sum())
    where = (
        "" if len(per_column) == 1 else " (" + ", ".join(f"{k!r} {n}" for k, n in per_column.items()) + ")"
    )
    raise DataError(
        f"{path}: column {frame.columns[col]!r} has {what} at data row {row + 1} "
        f"({rows} bad row{'s' if rows > 1 else ''}, {cells} bad cell{'s' if cells > 1 else ''} "
        f"in all{where}); "
        f"fill or drop those rows, or leave the column out with columns=<names>"
    )


def ratio_split(value) -> tuple[float, float, float]:
    """ "0.7/0.1/0.2" (or three numbers) -> train, val, test fractions that sum to 1."""
    try:
        parts = (
            [float(p) for p in value.replace(",", "/").split("/")]
            if isinstance(value, str)
            else [float(p) for p in value]
        )
    except (TypeError, ValueError):
        parts = []
    if len(parts) != 3 or min(parts) <= 0 or not math.isclose(sum(parts), 1.0, abs_tol=1e-6):
        raise ConfigError(
            f'csv_forecast split takes three positive fractions summing to 1, as "0.7/0.1/0.2", got {value!r}'
        )
    return parts[0], parts[1], parts[2]


def ratio_borders(n: int, ratios: tuple[float, float, float], lookback: int) -> dict[str, tuple[int, int]]:
    """Time-Series-Library's Dataset_Custom borders: int() of the train and test shares, validation
    the rest; val and test start `lookback` rows early so their first window predicts their first row."""
    num_train, num_test = int(n * ratios[0]), int(n * ratios[2])
    num_val = n - num_train - num_test
    return {
        "train": (0, num_train),
        "val": (num_train - lookback, num_train + num_val),
        "test": (n - num_test - lookback, n),
    }


class CSVForecast(WindowForecastTask):
    name = "csv_forecast"
    description = "forecasting on your CSV: time + numeric columns, ratio split 0.7/0.1/0.2, train-fit scaler"
    param_help = {
        "path": "your CSV file (UTF-8, a header row, a time column and numeric columns)",
        "target": 'column(s) predicted, "OT" or "a,b"; unset: every input column (multivariate)',
        "columns": 'input columns, "a,b"; unset: every column but the time column (targets are inputs too)',
        "time_column": "the time column (dropped from the inputs); unset: the first column",
        "split": "train/validation/test fractions of the rows, in time order",
        "season": "period in rows for the seasonal-naive baseline (e.g. 24 for hourly data); 0: none",
    }

    def __init__(
        self,
        path: str,
        lookback: int = 96,
        horizon: int = 24,
        target: str | None = None,
        columns: str | None = None,
        time_column: str | None = None,
        split: str = "0.7/0.1/0.2",
        season: int = 0,
        seed: int = 0,
    ):
        super().__init__(seed)
        if not isinstance(season, int) or season < 0:
            raise ConfigError(f"csv_forecast season must be an integer >= 0, got {season!r}")
        ratios = ratio_split(split)
        borders = lambda rows: ratio_borders(rows, ratios, int(lookback))
        self._load(path, borders, lookback, horizon, season or None, time_column, columns, target)

    def _load(self, path, borders, lookback, horizon, season, time_column, columns, target):
        """The machinery every CSV task shares (presets such as ETT differ only in file and borders)."""
        self.path = str(path)
        self.table = load_csv(path, time_column, columns, target)
        self._setup(
            self.table.values,
            borders(len(self.table.values)),
            lookback,
            horizon,
            season,
            self.table.targets,
            self.path,
        )

    def describe(self):
        t = self.table
        return {
            **super().describe(),
            "file": self.path,
            "time_column": t.time,
            "time_span": list(t.span),
            "columns": t.names,
            "target": [t.names[i] for i in t.targets],
            "rows": len(t.values),
            "borders": {k: list(v) for k, v in self.borders.items()},
        }
