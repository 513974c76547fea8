"""ETTh1/ETTh2 long-horizon forecasting with the standard protocol (Informer, Autoformer, DLinear):
12/4/4 months (train rows 0–8640, val 8640−L..11520, test 11520−L..14400 for lookback L),
StandardScaler fit on train only, multivariate (7 variables), MSE and MAE on the normalised scale,
the full test set. Files: `path`, $LSTM_BENCH_DATA_DIR/ETT-small/ETTh1.csv, or a checked download."""

import pandas as pd

from tasks._data import resolve
from tasks._forecasting import WindowForecastTask
from suite.errors import ConfigError, DataError

FILES = {
    "ETTh1": "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066",
    "ETTh2": "a3dc2c597b9218c7ce1cd55eb77b283fd459a1d09d753063f944967dd6b9218b",
}
URL = "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small/{}.csv"
TRAIN, VAL, TEST = 12 * 30 * 24, 4 * 30 * 24, 4 * 30 * 24  # hours: 8640, 2880, 2880


class ETTForecasting(WindowForecastTask):
    name = "ett"
    description = "ETTh1/ETTh2 multivariate long-horizon forecasting (lookback 96; horizons 96/192/336/720)"

    def __init__(self, dataset: str = "ETTh1", lookback: int = 96, horizon: int = 96, path: str | None = None, seed: int = 0):
        super().__init__(seed)
        if dataset not in FILES:
            raise ConfigError(f"ett dataset must be one of {sorted(FILES)}, got {dataset!r}")
        file = resolve(f"ETT-small/{dataset}.csv", FILES[dataset], URL.format(dataset), path)
        try:
            frame = pd.read_csv(file)
        except Exception as exc:
            raise DataError(f"{file} is not a readable ETT CSV ({type(exc).__name__}); replace it with {URL.format(dataset)}") from None
        self.dataset = dataset
        values = frame.drop(columns=["date"]).to_numpy(dtype="float64")
        L = int(lookback)
        borders = {"train": (0, TRAIN), "val": (TRAIN - L, TRAIN + VAL), "test": (TRAIN + VAL - L, TRAIN + VAL + TEST)}
        self._setup(values, borders, lookback, horizon, season=24)

    def describe(self):
        return {**super().describe(), "dataset": self.dataset}
