"""The statistics behind every verdict, from scipy.stats and statsmodels, stated in full.

Two samples of per-seed scores are compared with Welch's t-test (two-sided; unequal variances),
on the log scale for losses, MSE and bits (positive, multiplicative: a 2x gap means the same at any
level) and on the raw scale for accuracies. The 95% confidence interval is Welch's interval of the
difference of means on that scale; on the log scale it is reported as a ratio. Several comparisons
at once are Holm-corrected. Fewer than MIN_N runs on either side, or no spread at all, is never a
finding: it is "inconclusive (underpowered)" or "not testable (no spread)".
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests

MIN_N = 3  # runs per side below which nothing is tested
ALPHA = 0.05
LOG_METRICS = ("loss", "mse", "mae", "bpc", "ppl", "perplexity")


def log_scale(metric: str, higher_is_better: bool) -> bool:
    return not higher_is_better and metric in LOG_METRICS


def _finite(values) -> np.ndarray:
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    return arr[np.isfinite(arr)]


def welch(a, b, *, log: bool, min_n: int = MIN_N) -> dict:
    """Welch's t-test of mean(a) − mean(b) on the given scale. Returns the test, scale, n, df, p and the
    95% CI (as a ratio a/b when log), or testable=False with the reason."""
    a, b = _finite(a), _finite(b)
    out = {"test": "Welch's t, two-sided", "scale": "log" if log else "raw", "n_a": len(a), "n_b": len(b)}
    if log:
        if (a <= 0).any() or (b <= 0).any():
            return {**out, "testable": False, "why": "values not positive: no log scale"}
        a, b = np.log(a), np.log(b)
    if min(len(a), len(b)) < min_n:
        return {
            **out,
            "testable": False,
            "why": f"underpowered, n = {len(a)} vs {len(b)} (needs {min_n} per side)",
        }
    if np.ptp(a) == 0 and np.ptp(b) == 0:  # identical values (std can be 1e-17 from rounding)
        return {**out, "testable": False, "why": f"no spread across seeds, n = {len(a)} vs {len(b)}"}
    res = stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(0.95)
    diff, low, high = float(a.mean() - b.mean()), float(ci.low), float(ci.high)
    if log:
        diff, low, high = math.exp(diff), math.exp(low), math.exp(high)
    return {
        **out,
        "testable": True,
        "df": float(res.df),
        "t": float(res.statistic),
        "p": float(res.pvalue),
        "difference": diff,
        "ci_low": low,
        "ci_high": high,
        "difference_is": "ratio a/b" if log else "a − b",
    }


def holm(results: list[dict]) -> list[dict]:
    """Holm-correct the p-values of the testable results (in place, as p_holm) and return them."""
    testable = [r for r in results if r.get("testable")]
    if testable:
        _, adjusted, _, _ = multipletests([r["p"] for r in testable], alpha=ALPHA, method="holm")
        for r, p in zip(testable, adjusted):
            r["p_holm"] = float(p)
    return results


def significant(result: dict) -> bool:
    return bool(result.get("testable")) and result.get("p_holm", result.get("p", 1.0)) < ALPHA


def a_is_better(result: dict, higher_is_better: bool) -> bool:
    """Direction of a significant result: is sample a the better one?"""
    d = result["difference"]
    above = d > 1 if result["scale"] == "log" else d > 0
    return above == higher_is_better


def describe(result: dict) -> str:
    """One line: test, scale, n, df, CI and (Holm) p; or why it was not tested."""
    if not result.get("testable"):
        return f"not tested: {result['why']}"
    p = result.get("p_holm", result["p"])
    what = "ratio" if result["scale"] == "log" else "difference"
    adj = "Holm-adjusted " if "p_holm" in result else ""
    return (
        f"{what} {result['difference']:.3g} (95% CI {result['ci_low']:.3g} to {result['ci_high']:.3g}); "
        f"{result['test']} on the {result['scale']} scale, n = {result['n_a']} vs {result['n_b']}, "
        f"df = {result['df']:.1f}, {adj}p = {p:.2g}"
    )


def fisher_rates(events_a: int, runs_a: int, events_b: int, runs_b: int) -> dict:
    """Two event rates (e.g. divergences) compared with Fisher's exact test."""
    if min(runs_a, runs_b) < MIN_N:
        return {"testable": False, "why": f"underpowered, {runs_a} vs {runs_b} runs"}
    res = stats.fisher_exact([[events_a, runs_a - events_a], [events_b, runs_b - events_b]])
    return {
        "testable": True,
        "test": "Fisher's exact",
        "p": float(res.pvalue),
        "rate_a": events_a / runs_a,
        "rate_b": events_b / runs_b,
    }
