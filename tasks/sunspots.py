"""Yearly sunspot numbers 1700–2008 (309 values), the series that ships inside statsmodels, so
forecasting runs offline with no file. Season ≈ 11 years. Split 70/15/15 in time."""

from tasks._forecasting import WindowForecastTask


class Sunspots(WindowForecastTask):
    name = "sunspots"
    description = (
        "yearly sunspot numbers (ships with statsmodels), univariate forecasting with an 11-year season"
    )

    def __init__(self, lookback: int = 24, horizon: int = 4, seed: int = 0):
        super().__init__(seed)
        from statsmodels.datasets import sunspots

        series = sunspots.load_pandas().data["SUNACTIVITY"].to_numpy(dtype="float64")[:, None]
        n, L = len(series), int(lookback)
        a, b = int(0.7 * n), int(0.85 * n)
        borders = {"train": (0, a), "val": (a - L, b), "test": (b - L, n)}
        self._setup(series, borders, lookback, horizon, season=11)
