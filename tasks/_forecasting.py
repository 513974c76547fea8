"""Shared parts of the forecasting tasks: sliding windows over a multivariate series, a scaler fit
on the training rows only, MSE/MAE on the normalised scale over the full split (no drop_last),
and the baselines: naive (repeat the last value), seasonal naive, and a linear map of the lookback
window fitted by least squares (the function class of NLinear/DLinear, at its training optimum)."""

from __future__ import annotations

import numpy as np
import torch

from suite.errors import DataError
from suite.interfaces import Batch, Task, TaskSpec, check_positive


class WindowForecastTask(Task):
    """Subclasses call _setup(series (N, C) float array, borders {split: (start, end)} in rows of
    the *targets*, lookback, horizon, season, targets, source). A window's lookback may reach back
    before its split's start (as in the Informer/Autoformer/DLinear protocol: val starts at 8640 − L).
    Every channel is an input; `targets` (channel indices, default all) are the ones predicted."""

    family = "forecasting"
    primary_metric = "mse"
    higher_is_better = False
    param_help = {
        "lookback": "input window: past time steps the model sees",
        "horizon": "time steps predicted after the lookback",
    }

    def _setup(
        self,
        series: np.ndarray,
        borders: dict,
        lookback: int,
        horizon: int,
        season: int | None,
        targets: list[int] | None = None,
        source: str | None = None,
    ):
        check_positive("lookback", lookback)
        check_positive("horizon", horizon)
        self.lookback, self.horizon, self.season = int(lookback), int(horizon), season
        train_start, train_end = borders["train"]
        self.mean = series[train_start:train_end].mean(0)  # StandardScaler fit on training rows only
        self.std = series[train_start:train_end].std(0) + 1e-8
        self.data = torch.tensor((series - self.mean) / self.std, dtype=torch.float32)
        self.borders = borders
        self.channels = series.shape[1]
        self.targets = list(range(self.channels)) if targets is None else list(targets)
        K = len(self.targets)
        self.spec = TaskSpec(
            seq_len=self.lookback,
            input_dim=self.channels,
            output_dim=self.horizon * K,
            output="regression",
            readout="last",
            causal=False,
        )
        for split in ("train", "val", "test"):
            if self.window_count(split) < 1:
                start, end = borders[split]
                raise DataError(
                    f"{source or self.name}: the {split} split (rows {start}..{end}, lookback "
                    f"included) is too short for lookback {lookback} + horizon {horizon}; use a "
                    f"shorter lookback or horizon, or a longer series"
                )

    def window_starts(self, split: str) -> torch.Tensor:
        start, end = self.borders[split]
        return torch.arange(start, max(start, end - self.lookback - self.horizon + 1))

    def window_count(self, split: str) -> int:
        return len(self.window_starts(split))

    def _windows(self, starts: torch.Tensor) -> Batch:
        L, H = self.lookback, self.horizon
        x = self.data[starts[:, None] + torch.arange(L)]
        y = self.data[starts[:, None] + L + torch.arange(H)][:, :, self.targets]
        return Batch(x, y.reshape(len(starts), -1))

    def train_batch(self, batch_size, generator):
        starts = self.window_starts("train")
        pick = torch.randint(0, len(starts), (batch_size,), generator=generator)
        return self._windows(starts[pick])

    def eval_batches(self, split, batch_size):
        starts = self.window_starts(split)
        for i in range(0, len(starts), batch_size):  # every window: no drop_last
            yield self._windows(starts[i : i + batch_size])

    # ---- baselines --------------------------------------------------------------------
    def _score(self, predict, split: str = "test") -> dict:
        se = ae = 0.0
        n = 0
        for batch in self.eval_batches(split, 1024):
            err = predict(batch.x) - batch.y
            se += err.pow(2).sum().item()
            ae += err.abs().sum().item()
            n += err.numel()
        return {"loss": se / n, "mse": se / n, "mae": ae / n}

    def _naive(self, x):
        return x[:, -1:, self.targets].expand(-1, self.horizon, -1).reshape(len(x), -1)

    def _seasonal_naive(self, x):
        s = self.season
        reps = -(-self.horizon // s)
        return x[:, -s:, self.targets].repeat(1, reps, 1)[:, : self.horizon].reshape(len(x), -1)

    def _fit_linear(self):
        """One linear map lookback -> horizon shared by the predicted channels, each from its own
        past, with bias (least squares)."""
        batch = self._windows(self.window_starts("train"))
        C = len(self.targets)
        X = batch.x[:, :, self.targets].permute(0, 2, 1).reshape(-1, self.lookback).double()
        Y = batch.y.reshape(len(batch.y), self.horizon, C).permute(0, 2, 1).reshape(-1, self.horizon).double()
        X1 = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], 1)
        ridge = 1e-3 * torch.eye(X1.shape[1], dtype=X.dtype)
        W = torch.linalg.solve(X1.T @ X1 + ridge, X1.T @ Y)

        def predict(x):
            xx = x[:, :, self.targets].permute(0, 2, 1).reshape(-1, self.lookback).double()
            out = torch.cat([xx, torch.ones(len(xx), 1, dtype=xx.dtype)], 1) @ W
            return out.reshape(len(x), C, self.horizon).permute(0, 2, 1).reshape(len(x), -1).float()

        return predict

    def baselines(self, split: str = "test") -> dict[str, dict]:
        """Every cheap forecast scored on `split`: naive, seasonal naive (if a season), linear."""
        methods = {"naive": self._naive, "linear": self._fit_linear()}
        if self.season:
            methods["seasonal_naive"] = self._seasonal_naive
        return {name: self._score(fn, split) for name, fn in methods.items()}

    def baseline(self):
        """The strongest baseline's scores (by MSE) under the metric keys, every one beside them."""
        scores = self.baselines("test")
        best = min(scores, key=lambda k: scores[k]["mse"])
        beside = {f"{name}_{k}": v for name, s in scores.items() for k, v in s.items() if k != "loss"}
        return {**scores[best], **beside, "strongest": best}

    def baseline_name(self):
        return "strongest of naive, seasonal naive and least-squares linear (by MSE)"

    def threshold(self, split):
        return min(s["mse"] for s in self.baselines(split).values())

    def describe(self):
        return {
            "lookback": self.lookback,
            "horizon": self.horizon,
            "channels": self.channels,
            "targets": len(self.targets),
            "windows": {s: self.window_count(s) for s in ("train", "val", "test")},
        }
