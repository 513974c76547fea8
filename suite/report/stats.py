"""The statistics behind every verdict, from scipy.stats and statsmodels, stated in full.

Two samples of per-seed scores are compared with Welch's t-test (two-sided; unequal variances),
on the log scale for losses, MSE and bits (positive, multiplicative: a 2x gap means the same at any
level) and on the raw scale for accuracies. The 95% confidence interval is Welch's interval of the
difference of means on that scale; on the log scale it is reported as a ratio. Several comparisons
at once are Holm-corrected. Fewer than MIN_N runs on either side, or no spread at all, is never a
finding: it is "inconclusive (underpowered)" or "not testable (no spread)".

A non-significant difference is not sameness. Sameness is claimed only by an equivalence test
(`equivalence`: two one-sided Welch tests, TOST, against a margin stated per metric in MARGINS), and
"not better by much" only by a one-sided test against a shifted null (`beyond`). Where neither test
decides, `n_to_decide` says how many seeds per side would (a power calculation at the observed spread).
Whether a model learned at all is a one-sided test of its seeds against the task's baseline
(`versus_baseline`).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower
from statsmodels.stats.weightstats import ttest_ind as shifted_welch
from statsmodels.stats.weightstats import ttost_ind

MIN_N = 3  # runs per side below which nothing is tested
ALPHA = 0.05
LOG_METRICS = ("loss", "mse", "mae", "bpc", "bpw", "ppl", "perplexity")


def log_scale(metric: str, higher_is_better: bool) -> bool:
    return not higher_is_better and metric in LOG_METRICS


@contextlib.contextmanager
def _nearly_identical_ok():
    """scipy warns when seeds agree to the last digits (accuracies of 1.0 and 0.99998); the test it
    returns is still the right one, and the warning would bury a report's real messages."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Precision loss occurred", category=RuntimeWarning)
        yield


@dataclass(frozen=True)
class Margin:
    """How close two results must be to count as the same: on the log scale a ratio (1.1: within 10%
    either way), on the raw scale a difference (0.02: two points of accuracy)."""

    value: float
    log: bool

    @property
    def delta(self) -> float:
        """The margin on the test's scale."""
        return math.log(self.value) if self.log else self.value

    def __str__(self) -> str:
        return f"±{(self.value - 1) * 100:.3g}%" if self.log else f"±{self.value:g}"


# Sameness margins per metric, on the test's scale (see log_scale); anything unlisted: DEFAULT_MARGIN.
MARGINS = {
    "accuracy": Margin(0.02, log=False),
    "bpc": Margin(1.02, log=True),
    "bpw": Margin(1.02, log=True),
    "ppl": Margin(1.02, log=True),
    "perplexity": Margin(1.02, log=True),
    "mse": Margin(1.10, log=True),
    "mae": Margin(1.10, log=True),
    "loss": Margin(1.10, log=True),
    "steps": Margin(1.25, log=True),  # steps (or FLOPs) to solve: learning speed
}
DEFAULT_MARGIN = Margin(1.10, log=True)
POWER = 0.8  # the power an "n that would decide it" is computed for
MAX_N = 1000


def margin_for(metric: str, higher_is_better: bool) -> Margin:
    margin = MARGINS.get(metric, DEFAULT_MARGIN)
    if margin.log and not log_scale(metric, higher_is_better) and metric != "steps":
        return Margin(0.02, log=False)  # a raw-scale metric with no margin of its own
    return margin


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
    with _nearly_identical_ok():
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


def _scaled(a, b, log: bool):
    a, b = _finite(a), _finite(b)
    if log:
        if (a <= 0).any() or (b <= 0).any():
            return None, None, "values not positive: no log scale"
        a, b = np.log(a), np.log(b)
    if min(len(a), len(b)) < MIN_N:
        return None, None, f"underpowered, n = {len(a)} vs {len(b)} (needs {MIN_N} per side)"
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return None, None, f"no spread across seeds, n = {len(a)} vs {len(b)}"
    return a, b, None


def equivalence(a, b, margin: Margin) -> dict:
    """TOST (two one-sided Welch tests, statsmodels' ttost_ind): is |mean(a) − mean(b)| < margin on the
    margin's scale? p < ALPHA claims equivalence."""
    x, y, why = _scaled(a, b, margin.log)
    out = {"test": f"TOST (two one-sided Welch tests), margin {margin}", "margin": str(margin)}
    if why:
        return {**out, "testable": False, "why": why}
    p, _, _ = ttost_ind(x, y, -margin.delta, margin.delta, usevar="unequal")
    return {**out, "testable": True, "p": float(p), "n_a": len(x), "n_b": len(y)}


def beyond(a, b, margin: Margin, *, a_better_if_higher: bool, by_much: bool) -> dict:
    """One-sided Welch test against a shifted null. by_much=True: is a better than b by MORE than the
    margin? by_much=False: is a NOT better than b by the margin or more (non-superiority)? "Better"
    is higher or lower as a_better_if_higher says (on the log scale: a ratio beyond the margin)."""
    x, y, why = _scaled(a, b, margin.log)
    sign = 1.0 if a_better_if_higher else -1.0  # gain = sign * (mean(a) − mean(b))
    name = "better by more than" if by_much else "not better by as much as"
    out = {"test": f"one-sided Welch: {name} {margin}", "margin": str(margin)}
    if why:
        return {**out, "testable": False, "why": why}
    # H1 (by_much): gain > delta, i.e. sign·d > delta; H1 (not): gain < delta
    larger = (sign > 0) == by_much
    _, p, _ = shifted_welch(
        x, y, alternative="larger" if larger else "smaller", usevar="unequal", value=sign * margin.delta
    )
    return {**out, "testable": True, "p": float(p), "n_a": len(x), "n_b": len(y)}


def versus_baseline(values, baseline: float | None, *, log: bool, higher_is_better: bool) -> dict:
    """Did the runs learn? One-sided one-sample t-test of the seeds against the task's baseline score,
    better = higher or lower as the metric says. With no spread at all, every seed on the better side
    of the baseline counts as learned (there is no noise to be within)."""
    x = _finite(values)
    out = {"test": "one-sided one-sample t-test against the baseline", "n": len(x)}
    if baseline is None or not math.isfinite(baseline) or len(x) == 0:
        return {**out, "testable": False, "learned": None, "why": "no baseline or no finished run"}
    if log:
        if (x <= 0).any() or baseline <= 0:
            return {**out, "testable": False, "learned": None, "why": "values not positive: no log scale"}
        x, base = np.log(x), math.log(baseline)
    else:
        base = baseline
    beats = (x > base) if higher_is_better else (x < base)
    if len(x) < MIN_N:
        return {**out, "testable": False, "learned": None, "why": f"underpowered, n = {len(x)}"}
    if np.ptp(x) == 0:
        return {**out, "testable": True, "p": 0.0 if beats.all() else 1.0, "learned": bool(beats.all())}
    with _nearly_identical_ok():
        res = stats.ttest_1samp(x, base, alternative="greater" if higher_is_better else "less")
    p = float(res.pvalue)
    return {**out, "testable": True, "p": p, "learned": p < ALPHA}


def strictest_alpha(tests: int) -> float:
    """The level of Holm's first (strictest) step over `tests` comparisons: seeds planned at it decide
    however the others turn out."""
    return ALPHA / max(1, tests)


def n_to_decide(a, b, margin: Margin, alpha: float = ALPHA) -> int | None:
    """Seeds per side that would decide at POWER, at the observed spread (pooled sd) and difference:
    a Welch test of the observed difference where it exceeds the margin, else an equivalence test
    (TOST, approximated by its one-sided test at the margin less the observed difference). None when
    there is no spread to plan with. `alpha`: strictest_alpha(tests in the Holm family), or the plan
    names the n that decides one test alone."""
    x, y = _finite(a), _finite(b)
    if margin.log:
        if (x <= 0).any() or (y <= 0).any():
            return None
        x, y = np.log(x), np.log(y)
    if len(x) < 2 or len(y) < 2:
        return None
    sd = math.sqrt((np.var(x, ddof=1) + np.var(y, ddof=1)) / 2)
    if (np.ptp(x) == 0 and np.ptp(y) == 0) or not sd > 0:
        return None
    d = abs(float(x.mean() - y.mean()))
    if d >= margin.delta:
        effect, alternative = d / sd, "two-sided"
    else:
        effect, alternative = (margin.delta - d) / sd, "larger"
    solver = TTestIndPower()
    if solver.power(effect, nobs1=MIN_N, alpha=alpha, alternative=alternative) >= POWER:
        return MIN_N
    if solver.power(effect, nobs1=MAX_N, alpha=alpha, alternative=alternative) < POWER:
        return MAX_N
    n = float(np.squeeze(solver.solve_power(effect, alpha=alpha, power=POWER, alternative=alternative)))
    return min(MAX_N, max(MIN_N, math.ceil(n))) if math.isfinite(n) else None
