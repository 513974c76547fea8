"""The verdict of one comparison (the best LSTM against the best Transformer of a task config), in a
fixed vocabulary, decided from the per-seed test metrics, the task's baseline and its success threshold
alone: never from a flag a record stores.

    both solved         both sides solved the task (a majority of >= 3 seeds reach its threshold) in runs
                        that stop once solved (their final metrics then all sit at the threshold); they
                        are compared on what still differs, the steps to solve (`faster`). Where runs
                        train on past the threshold (a language model's or a forecaster's threshold is
                        its baseline), their final metrics are compared as below.
    neither learned     neither side beats the task's baseline (one-sided test of the seeds against it)
    LSTM better / Transformer better
                        Welch's t-test on the test metric, Holm-corrected over the configs
    equivalent          TOST against the metric's stated margin (stats.MARGINS), Holm-corrected
    inconclusive        none of the above: the reason, and the seeds per side that would decide it
                        (stats.n_to_decide, a power calculation at the observed spread)

`judge` takes every pair of one table at once, so that each family of tests is Holm-corrected together.
Words are for the page: code reads `kind`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from suite.report import stats

KINDS = ("LSTM better", "Transformer better", "equivalent", "both solved", "neither learned", "inconclusive")


@dataclass
class Side:
    """One side of a comparison: a model's runs on one task config."""

    model: str
    metric: str
    higher_is_better: bool
    values: list[float]  # the finished seeds' test metric
    seeds: int  # runs, finished or not
    solved: int  # runs whose test metric reaches the success threshold (re-derived from both)
    baseline: float | None
    solve_steps: list[float] = field(default_factory=list)  # steps to the validation threshold, where reached
    stops_when_solved: bool = True  # the recipe's until_solved: its runs end at the threshold

    @property
    def log(self) -> bool:
        return stats.log_scale(self.metric, self.higher_is_better)

    @property
    def solved_majority(self) -> bool:
        return self.seeds >= stats.MIN_N and self.solved * 2 > self.seeds

    def learned(self) -> dict:
        return stats.versus_baseline(
            self.values, self.baseline, log=self.log, higher_is_better=self.higher_is_better
        )


@dataclass
class Verdict:
    kind: str  # one of KINDS
    why: str
    compared_on: str  # "test metric" or "steps to solve"
    welch: dict
    equivalence: dict
    learned: tuple[dict, dict]
    faster: str | None = None  # both solved: which side solved in fewer steps (same vocabulary)
    n_to_decide: int | None = None
    margin: str = ""


def _n(result: dict) -> str:
    return f"n = {result.get('n_a', '?')} vs {result.get('n_b', '?')}"


def _speed_words(welch: dict, tost: dict, names, margin: stats.Margin, a, b, alpha: float) -> tuple:
    """Both solved: which solved in fewer steps, in the comparison vocabulary."""
    if not welch.get("testable"):
        return "inconclusive", f"steps to solve not testable ({welch['why']})", None
    ratio = (
        f"steps ratio {names[0]}/{names[1]} {welch['difference']:.3g} (95% CI {welch['ci_low']:.3g} to "
        + (f"{welch['ci_high']:.3g})")
    )
    if stats.significant(welch):
        faster = names[0] if welch["difference"] < 1 else names[1]
        return faster, f"{faster} solved in fewer steps: {ratio}", None
    if tost.get("testable") and stats.significant(tost):
        return "equivalent", f"as fast within {margin}: {ratio}", None
    n = stats.n_to_decide(a, b, margin, alpha)
    return (
        "inconclusive",
        f"no difference shown in steps to solve ({ratio}; {n} seeds a side would decide)",
        n,
    )


def judge(pairs: list[tuple[Side, Side]], names: tuple[str, str] = ("LSTM", "Transformer")) -> list[Verdict]:
    """The verdict of every pair (a = names[0]'s side, b = names[1]'s), Holm-corrected over the pairs."""
    plans = []
    for a, b in pairs:
        steps = a.solved_majority and b.solved_majority and a.stops_when_solved and b.stops_when_solved
        if steps:
            x, y, log, margin = a.solve_steps, b.solve_steps, True, stats.MARGINS["steps"]
        else:
            x, y, log, margin = a.values, b.values, a.log, stats.margin_for(a.metric, a.higher_is_better)
        plans.append((a, b, steps, x, y, margin, stats.welch(x, y, log=log), stats.equivalence(x, y, margin)))
    stats.holm([p[6] for p in plans])
    stats.holm([p[7] for p in plans])
    alpha = stats.strictest_alpha(len(plans))
    return [_decide(*plan, names, alpha) for plan in plans]


def _decide(a: Side, b: Side, steps: bool, x, y, margin, welch, tost, names, alpha: float) -> Verdict:
    learned = (a.learned(), b.learned())
    common = dict(welch=welch, equivalence=tost, learned=learned, margin=str(margin))
    if steps:
        faster, words, n = _speed_words(welch, tost, names, margin, x, y, alpha)
        why = f"both solved ({names[0]} {a.solved}/{a.seeds}, {names[1]} {b.solved}/{b.seeds} seeds); {words}"
        return Verdict("both solved", why, "steps to solve", faster=faster, n_to_decide=n, **common)
    said = "; ".join(f"{name} {learned_words(r)}" for name, r in zip(names, learned))
    if all(r.get("learned") is False for r in learned):
        return Verdict("neither learned", f"neither beats the baseline ({said})", "test metric", **common)
    if not welch.get("testable"):
        return Verdict("inconclusive", welch["why"], "test metric", **common)
    if stats.significant(welch):
        better = names[0] if stats.a_is_better(welch, a.higher_is_better) else names[1]
        why = f"{better} significantly better ({stats.describe(welch)}); {said}"
        return Verdict(f"{better} better", why, "test metric", **common)
    if tost.get("testable") and stats.significant(tost):
        why = f"equivalent within {margin} (TOST, Holm-adjusted p = {tost['p_holm']:.2g}); {said}"
        return Verdict("equivalent", why, "test metric", **common)
    n = stats.n_to_decide(x, y, margin, alpha)
    decide = f"{n} seeds a side would decide" if n else "no spread to plan more seeds with"
    why = f"no significant difference and no equivalence within {margin} at {_n(welch)} ({decide}); {said}"
    return Verdict("inconclusive", why, "test metric", n_to_decide=n, **common)


def learned_words(result: dict) -> str:
    if result.get("learned") is None:
        return f"learning not testable ({result.get('why')})"
    p = result.get("p")
    tail = f" (p = {p:.2g})" if isinstance(p, float) and math.isfinite(p) and 0 < p < 1 else ""
    return ("beats the baseline" if result["learned"] else "does not beat the baseline") + tail
