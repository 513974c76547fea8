"""Mackey-Glass chaotic series (τ = 17), the classic LSTM forecasting benchmark of Gers et al. 2001:
dx/dt = 0.2·x(t−τ) / (1 + x(t−τ)^10) − 0.1·x(t), integrated with 10 Euler sub-steps per unit and
sampled once per unit. The seed perturbs the initial history. Split 60/20/20 in time."""

import numpy as np

from tasks._forecasting import WindowForecastTask


def mackey_glass(n: int, tau: int = 17, seed: int = 0, substeps: int = 10) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dt = 1.0 / substeps
    lag = tau * substeps
    history = list(1.2 + 0.05 * rng.standard_normal(lag + 1))
    out = []
    warmup = 500
    for step in range((n + warmup) * substeps):
        x, x_tau = history[-1], history[-lag - 1]
        history.append(x + dt * (0.2 * x_tau / (1 + x_tau**10) - 0.1 * x))
        if len(history) > lag + 2:
            history.pop(0)
        if step % substeps == 0 and step // substeps >= warmup:
            out.append(history[-1])
    return np.asarray(out[:n])[:, None]


class MackeyGlass(WindowForecastTask):
    name = "mackey_glass"
    description = "Mackey-Glass chaotic series (tau=17), univariate multi-step forecasting (generated)"

    param_help = {"length": "time steps generated (split 60/20/20 in time)"}

    def __init__(self, length: int = 4000, lookback: int = 64, horizon: int = 16, seed: int = 0):
        super().__init__(seed)
        series = mackey_glass(int(length), seed=seed)
        a, b = int(0.6 * length), int(0.8 * length)
        L = int(lookback)
        borders = {"train": (0, a), "val": (a - L, b), "test": (b - L, int(length))}
        self._setup(series, borders, lookback, horizon, season=None)
