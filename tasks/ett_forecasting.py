"""ETTh1/ETTh2 long-horizon forecasting with the standard protocol (Informer, Autoformer, DLinear):
a preset of csv_forecast with the published borders, 12/4/4 months (train rows 0–8640, val
8640−L..11520, test 11520−L..14400 for lookback L), StandardScaler fit on train only, multivariate
(7 variables) unless `target` says otherwise, MSE and MAE on the normalised scale, the full test set.
Files: `path`, $LSTM_BENCH_DATA_DIR/ETT-small/ETTh1.csv, or a download, checked by SHA-256."""

from suite.errors import ConfigError
from tasks._data import resolve
from tasks._forecasting import WindowForecastTask
from tasks.csv_forecast import CSVForecast

FILES = {
    "ETTh1": "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066",
    "ETTh2": "a3dc2c597b9218c7ce1cd55eb77b283fd459a1d09d753063f944967dd6b9218b",
}
URL = "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small/{}.csv"
TRAIN, VAL, TEST = 12 * 30 * 24, 4 * 30 * 24, 4 * 30 * 24  # hours: 8640, 2880, 2880


def ett_borders(lookback: int) -> dict[str, tuple[int, int]]:
    L = int(lookback)
    return {
        "train": (0, TRAIN),
        "val": (TRAIN - L, TRAIN + VAL),
        "test": (TRAIN + VAL - L, TRAIN + VAL + TEST),
    }


class ETTForecasting(CSVForecast):
    name = "ett"
    description = "ETTh1/ETTh2 multivariate long-horizon forecasting (lookback 96; horizons 96/192/336/720)"
    param_help = {
        "dataset": "ETTh1 or ETTh2",
        "path": "its CSV (checked by SHA-256); else $LSTM_BENCH_DATA_DIR/ETT-small/<dataset>.csv",
    }

    def __init__(
        self,
        dataset: str = "ETTh1",
        lookback: int = 96,
        horizon: int = 96,
        path: str | None = None,
        target: str | None = None,
        columns: str | None = None,
        seed: int = 0,
    ):
        WindowForecastTask.__init__(self, seed)  # csv_forecast's machinery; a checked file, fixed borders
        if dataset not in FILES:
            raise ConfigError(f"ett dataset must be one of {sorted(FILES)}, got {dataset!r}")
        self.dataset = dataset
        file = resolve(f"ETT-small/{dataset}.csv", FILES[dataset], URL.format(dataset), path)
        self._load(file, lambda rows: ett_borders(lookback), lookback, horizon, 24, "date", columns, target)

    def describe(self):
        return {**super().describe(), "dataset": self.dataset}
