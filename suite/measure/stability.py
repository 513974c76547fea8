"""Training-stability statistics: gradient norms, loss spikes, divergence, and seed statistics."""

from __future__ import annotations

import math
import statistics

import numpy as np


class GradientStats:
    """Gradient norms (before clipping) over training: median, 99th percentile, clipping events."""

    def __init__(self, clip: float):
        self.clip, self.norms = clip, list[float]()

    def add(self, norm: float) -> None:
        self.norms.append(norm)

    def summary(self) -> dict:
        if not self.norms:
            return {
                "median": None,
                "p99": None,
                "max": None,
                "clip_events": 0,
                "clip_fraction": 0.0,
                "hist": [],
            }
        arr = np.asarray(self.norms)
        edges = np.logspace(-3, 3, 25)
        hist, _ = np.histogram(np.clip(arr, 1e-3, 1e3), bins=edges)
        clipped = int((arr > self.clip).sum())
        return {
            "median": float(np.median(arr)),
            "p99": float(np.percentile(arr, 99)),
            "max": float(arr.max()),
            "clip_events": clipped,
            "clip_fraction": clipped / len(arr),
            "hist": hist.tolist(),
        }


class LossWatch:
    """Watches the training loss: non-finite values, blow-up above divergence_factor x its
    initial value (mean of the first 5 steps, compared with a running mean of 10), and spikes
    (a step above spike_factor x the median of the previous 50)."""

    def __init__(self, divergence_factor: float, spike_factor: float):
        self.divergence_factor, self.spike_factor = divergence_factor, spike_factor
        self.losses: list[float] = []
        self.spikes = 0

    def check(self, loss: float) -> str | None:
        if not math.isfinite(loss):
            return "non-finite loss"
        self.losses.append(loss)
        if len(self.losses) >= 10:
            initial = statistics.fmean(self.losses[:5])
            if statistics.fmean(self.losses[-10:]) > self.divergence_factor * max(initial, 1e-8):
                return f"loss blew up above {self.divergence_factor:g}x its initial value"
        if len(self.losses) > 20:
            window = self.losses[-51:-1]
            if loss > self.spike_factor * statistics.median(window):
                self.spikes += 1
        return None

    def recent(self) -> float | None:
        return statistics.fmean(self.losses[-10:]) if self.losses else None

    def curve(self, points: int = 100) -> list:
        """Subsampled (step, mean loss of the bucket) pairs for learning curves."""
        n = len(self.losses)
        if n == 0:
            return []
        size = max(1, n // points)
        return [[i + size, statistics.fmean(self.losses[i : i + size])] for i in range(0, n, size)]


def seed_summary(values) -> dict:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {
        "mean": statistics.fmean(vals),
        "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
        "min": min(vals),
        "max": max(vals),
        "n": len(vals),
    }


def lr_window(points: list[tuple[float, bool]]) -> dict:
    """Width of the learning-rate window in which training succeeds: the longest run of
    consecutive grid points that succeeded, in decades (log10 of max/min LR of that run)."""
    points = sorted(points)
    best: list[float] = []
    run: list[float] = []
    for lr, ok in points:
        run = run + [lr] if ok else []
        if len(run) > len(best):
            best = run
    if not best:
        return {"decades": 0.0, "low": None, "high": None, "points_ok": 0, "points": len(points)}
    return {
        "decades": math.log10(best[-1] / best[0]),
        "low": best[0],
        "high": best[-1],
        "points_ok": sum(ok for _, ok in points),
        "points": len(points),
    }
