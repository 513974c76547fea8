"""The usual claims about LSTMs and Transformers, each judged only as far as this run's data can
carry it. Every verdict is "supported", "not supported" or "inconclusive" with the reason; the tests
behind them are in suite/report/stats.py (n, test, scale, CI, Holm). Experiments are selected by
their declared role, never by name.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from suite.report import length_generalization, stats, tables, verdicts
from suite.report.tables import ATTN, RNN, representatives

LONG = 100  # the shortest sequence that counts as "long" for the long-dependency claim
LSTM_FAMILIES = ("lstm", "lstm-variant")


def _fmt(x, digits=3):
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


def _verdict(verdict: str, why: str, evidence: list[str]) -> dict:
    return {"verdict": verdict, "why": why, "evidence": evidence}


def _vote(votes: list[bool]) -> bool | str:
    """True when at least 3/4 of the configs say so, False when none does, "mixed" in between."""
    share = sum(votes) / len(votes)
    return True if share >= 0.75 else False if share == 0 else "mixed"


# ---- compute ------------------------------------------------------------------------------------


def _family_best(g: pd.DataFrame, column: str, pick) -> tuple[float, float] | None:
    rnn = g[g["family"].isin(RNN)][column].dropna()
    att = g[g["family"].isin(ATTN)][column].dropna()
    return (pick(rnn), pick(att)) if len(rnn) and len(att) else None


def claim_compute(table: pd.DataFrame, thr: pd.DataFrame | None, scaling: pd.DataFrame | None) -> dict:
    """Compute at matched backbones, three ways: training FLOPs per token (counted, attention
    included), measured training tokens/s, and compute to reach the target (training FLOPs x tokens
    to the validation threshold), where both families reached it."""
    evidence, per_token, timed, to_target = [], [], [], []
    main = table[table["role"] == "main"]
    for (_, config), g in main.groupby(["experiment", "config"]):
        pair = _family_best(g, "train_flops_per_token", np.min)
        if pair:
            per_token.append(pair[1] / pair[0] > 1.1)
            evidence.append(
                f"{config}: training FLOPs per token, Transformer/LSTM = {pair[1] / pair[0]:.2f}x"
            )
        pair = _family_best(g[g["successes"] * 2 > g["seeds"]], "flops_to_threshold", np.min)
        if pair:
            to_target.append(pair[1] > pair[0])
            evidence.append(
                f"{config}: FLOPs to reach the target, Transformer/LSTM = {pair[1] / pair[0]:.2f}x"
            )
    if thr is not None and not thr.empty and "train_tokens_per_s" in thr:
        fam = main.drop_duplicates("model").set_index("model")["family"]
        thr = thr.assign(family=thr["model"].map(fam))
        for config, g in thr.groupby("config"):
            pair = _family_best(g, "train_tokens_per_s", np.max)
            if pair:
                timed.append(pair[0] / pair[1] > 1.25)
                evidence.append(
                    f"{config}: fastest LSTM trains {pair[0] / pair[1]:.2f}x the tokens/s of the fastest "
                    f"Transformer ({g['timing_threads'].iloc[0] if 'timing_threads' in g else '?'} threads)"
                )
    evidence += _scaling_evidence(scaling)
    said = {
        name: _vote(v)
        for name, v in (("FLOPs per token", per_token), ("tokens/s", timed), ("FLOPs to target", to_target))
        if v
    }
    if not said:
        return _verdict(
            "inconclusive", "no main-role task config holds both an LSTM and a Transformer", evidence
        )
    why = "; ".join(
        f"{k}: Transformers need more on {_share(v)}"
        for k, v in (("FLOPs per token", per_token), ("tokens/s", timed), ("FLOPs to target", to_target))
        if v
    )
    if set(said.values()) == {True}:
        return _verdict("supported", why, evidence)
    if set(said.values()) == {False}:
        return _verdict("not supported", why, evidence)
    return _verdict("inconclusive", why + " (the measures disagree)", evidence)


def _share(votes: list[bool]) -> str:
    return f"{sum(votes)}/{len(votes)} configs"


def _scaling_evidence(scaling: pd.DataFrame | None) -> list[str]:
    if scaling is None or scaling.empty:
        return []
    ok = scaling[scaling["status"] == "ok"]
    lines = []
    for model, g in ok.groupby("model"):
        if g["seq_len"].nunique() >= 2:
            slope = np.polyfit(np.log(g["seq_len"]), np.log(g["train_step_seconds"]), 1)[0]
            lines.append(
                f"{model}: training time grows as T^{slope:.2f} over "
                f"T={g['seq_len'].min()}..{g['seq_len'].max()}"
            )
    if "flops_per_token" in ok and "model_family" in ok:
        for T, g in ok.groupby("seq_len"):
            pair = _family_best(g.rename(columns={"model_family": "family"}), "flops_per_token", np.min)
            if pair:
                lines.append(
                    f"scaling sweep T={T}: forward FLOPs per token, Transformer/LSTM = "
                    f"{pair[1] / pair[0]:.2f}x"
                )
    return lines


# ---- stability ----------------------------------------------------------------------------------


def claim_stability(table: pd.DataFrame, lr: pd.DataFrame) -> dict:
    """LR windows from the lr-sweep role (a grid point is good when a majority of >= 3 seeds succeed),
    the spread of the final metric over the grid, and divergence rates compared by Fisher's exact
    test only within experiments where both families ran the same configs and seeds."""
    evidence = []
    score = []
    if lr is not None and not lr.empty:
        for task, g in lr.groupby("config"):
            reps = g.drop_duplicates("architecture")
            wr, wa = (reps[reps["family"].isin(fam)]["window_decades"].dropna().max() for fam in (RNN, ATTN))
            sr, sa = (
                reps[reps["family"].isin(fam)]["metric_spread_over_grid"].dropna().min()
                for fam in (RNN, ATTN)
            )
            evidence.append(
                f"{task}: LR window (majority of seeds succeed) LSTM {_fmt(wr)} vs Transformer {_fmt(wa)} "
                f"decades; final-metric spread over the grid LSTM {_fmt(sr)} vs Transformer {_fmt(sa)}"
            )
            if not (pd.isna(wr) or pd.isna(wa)):
                score.append(1 if wr > wa + 0.25 else -1 if wa > wr + 0.25 else 0)
    for exp, g in table.groupby("experiment"):
        rnn, att = (representatives(g[g["family"].isin(fam)]) for fam in (RNN, ATTN))
        if (
            rnn.empty
            or att.empty
            or not _balanced(g[g["architecture"].isin(set(rnn["architecture"]) | set(att["architecture"]))])
        ):
            continue
        dr, nr, da, na = rnn["diverged"].sum(), rnn["seeds"].sum(), att["diverged"].sum(), att["seeds"].sum()
        test = stats.fisher_rates(int(dr), int(nr), int(da), int(na))
        evidence.append(
            f"{exp}: divergence LSTM {dr}/{nr}, Transformer {da}/{na}"
            + (f" (Fisher's exact p = {test['p']:.2g})" if test["testable"] else f" ({test['why']})")
        )
        if test["testable"] and test["p"] < stats.ALPHA:
            score.append(1 if dr / nr < da / na else -1)
    if not score:
        return _verdict(
            "inconclusive",
            "no lr-sweep with >= 3 seeds per point and no significant divergence "
            "difference in a balanced experiment",
            evidence,
        )
    if all(s >= 0 for s in score) and any(s > 0 for s in score):
        return _verdict(
            "supported", "LSTMs trained over a wider LR window and/or diverged significantly less", evidence
        )
    if all(s <= 0 for s in score) and any(s < 0 for s in score):
        return _verdict(
            "not supported",
            "Transformers trained over a wider LR window and/or diverged significantly less",
            evidence,
        )
    return _verdict(
        "inconclusive", "the LR windows and divergence rates do not separate the families", evidence
    )


def _balanced(g: pd.DataFrame) -> bool:
    """Every architecture ran the same task configs with the same number of seeds."""
    runs = g.groupby("architecture").apply(
        lambda a: tuple(sorted(zip(a["config"], a["seeds"]))), include_groups=False
    )
    return runs.nunique() == 1


# ---- long-term dependencies ---------------------------------------------------------------------


def claim_long_memory(table: pd.DataFrame) -> dict:
    """An LSTM succeeds (reaches the task's threshold on a majority of >= 3 seeds) at T >= 100."""
    long = table[(table["task_family"] == "long-dependency") & table["family"].isin(LSTM_FAMILIES)]
    tested = long[long["seq_len"].fillna(0) >= LONG]
    if tested.empty:
        lengths = sorted({int(t) for t in long["seq_len"].dropna()})
        return _verdict(
            "inconclusive", f"not tested at T >= {LONG} (this run's lengths: {lengths or 'none'})", []
        )
    evidence, wins, underpowered = [], [], []
    for task, g in tested.groupby("task"):
        g = g[g["seq_len"] == g["seq_len"].max()]
        best = g.sort_values(
            ["successes", "mean"], ascending=[False, not bool(g["higher_is_better"].iloc[0])]
        ).iloc[0]
        if best["seeds"] < stats.MIN_N:
            underpowered.append(task)
        wins.append(best["successes"] * 2 > best["seeds"])
        learned = tables.side(best).learned()
        evidence.append(
            f"{task} at T={int(best['seq_len'])}: best LSTM {best['model']} solved "
            f"{best['successes']}/{best['seeds']} seeds (test {best['metric']} {_fmt(best['mean'])}, "
            f"threshold {_fmt(best.get('threshold'))}, headline baseline {_fmt(best['baseline'])}; "
            f"{verdicts.learned_words(learned)}; stopped: {best.get('stops') or '?'})"
        )
    if underpowered:
        return _verdict(
            "inconclusive",
            f"fewer than {stats.MIN_N} seeds on {', '.join(underpowered)} ({stats.MIN_N} seeds would decide)",
            evidence,
        )
    why = f"an LSTM succeeded on a majority of seeds at T >= {LONG} on {sum(wins)}/{len(wins)} tasks"
    verdict = (
        "supported" if sum(wins) / len(wins) >= 0.75 else "not supported" if not any(wins) else "inconclusive"
    )
    return _verdict(verdict, why, evidence)


# ---- Greff et al.'s variants --------------------------------------------------------------------

REFERENCES = ("lstm-peephole", "lstm-reference", "lstm-np")  # the variants' base, in order of preference


# "By much": the margin a variant must beat the reference by to count as better, per what is compared.
BY_MUCH = {
    "accuracy": stats.Margin(0.05, log=False),
    "steps": stats.Margin(1.5, log=True),
}
BY_MUCH_DEFAULT = stats.Margin(1.5, log=True)  # losses, MSE, bits: a factor of 1.5


def claim_variants(table: pd.DataFrame) -> dict:
    """Does any variant beat the reference LSTM *by much* (BY_MUCH)? Per variant, two one-sided Welch
    tests against a shifted null (stats.beyond), each family Holm-corrected: "better by more than the
    margin" (any such: not supported) and "not better by as much as the margin" (all such: supported).
    Where both the variant and the reference solved the task on a majority of seeds, they are compared on
    steps to solve (stopping at the threshold makes their final metrics alike); else on the test metric.
    Only where the reference learned (beats its baseline)."""
    abl = table[table["role"] == "ablation"]
    if abl.empty:
        return _verdict("inconclusive", "no experiment with role 'ablation' in this run", [])
    evidence, pairs, not_learned = [], [], []
    for config, g in abl.groupby("config"):
        ref = next((g[g["model"] == m].iloc[0] for m in REFERENCES if (g["model"] == m).any()), None)
        if ref is None:
            continue
        reference = tables.side(ref)
        learned = reference.learned()
        if not learned.get("learned"):
            not_learned.append(
                f"{config}: the reference {ref['model']} did not learn ({verdicts.learned_words(learned)})"
            )
            continue
        for _, var in g[
            (g["family"] == "lstm-variant") & (g["architecture"] != ref["architecture"])
        ].iterrows():
            pairs.append((config, tables.side(var), reference))
    alpha = stats.strictest_alpha(len(pairs))
    tests = [_by_much(v, r, alpha) for _, v, r in pairs]
    stats.holm([t["much"] for t in tests])
    stats.holm([t["not"] for t in tests])
    much, fine, open_n = [], [], []
    for (config, var, ref), t in zip(pairs, tests):
        if stats.significant(t["much"]):
            much.append(var.model)
            said = f"better by more than {t['margin']}"
        elif stats.significant(t["not"]):
            fine.append(var.model)
            said = f"not better by {t['margin']} or more"
        else:
            open_n.append(t["n"])
            said = "undecided" + (f" ({t['n']} seeds a side would decide)" if t["n"] else "")
        evidence.append(
            f"{config}: {var.model} vs {ref.model} on {t['on']}: {said}; "
            f"{t['describe']} (Holm-adjusted p: better by much {_p(t['much'])}, not by much {_p(t['not'])})"
        )
    evidence += not_learned
    if much:
        return _verdict(
            "not supported",
            f"{', '.join(sorted(set(much)))} beat the reference by more than the margin "
            f"(one-sided Welch against the margin, Holm over {len(tests)})",
            evidence,
        )
    if not pairs:
        return _verdict(
            "inconclusive",
            "the reference LSTM did not learn (did not beat its baseline)"
            if not_learned
            else "no variant beside a reference LSTM",
            evidence,
        )
    if len(fine) == len(pairs):
        return _verdict(
            "supported",
            f"every variant shown not better than the reference by the margin ({_margins(tests)}; "
            f"one-sided Welch against the margin, Holm over {len(tests)})",
            evidence,
        )
    n = max((x for x in open_n if x), default=None)
    return _verdict(
        "inconclusive",
        f"{len(pairs) - len(fine)} of {len(pairs)} variants neither shown better by much nor shown "
        f"not better by much ({_margins(tests)})" + (f"; {n} seeds a side would decide" if n else ""),
        evidence,
    )


def _p(result: dict) -> str:
    return f"{result['p_holm']:.2g}" if "p_holm" in result else f"not tested ({result.get('why')})"


def _margins(tests: list[dict]) -> str:
    return "margin " + ", ".join(sorted({f"{t['on']} {t['margin']}" for t in tests}))


def _by_much(var: verdicts.Side, ref: verdicts.Side, alpha: float) -> dict:
    """The two one-sided tests of one variant against the reference, and the seeds that would decide."""
    if var.solved_majority and ref.solved_majority and var.stops_when_solved and ref.stops_when_solved:
        on, a, b, higher, margin = "steps to solve", var.solve_steps, ref.solve_steps, False, BY_MUCH["steps"]
    else:
        on, a, b, higher = f"test {var.metric}", var.values, ref.values, var.higher_is_better
        margin = BY_MUCH.get(var.metric, BY_MUCH_DEFAULT)
        if margin.log and not var.log:
            margin = BY_MUCH["accuracy"] if var.metric == "accuracy" else stats.Margin(0.05, log=False)
    welch = stats.welch(a, b, log=margin.log)
    return {
        "on": on,
        "margin": str(margin),
        "much": stats.beyond(a, b, margin, a_better_if_higher=higher, by_much=True),
        "not": stats.beyond(a, b, margin, a_better_if_higher=higher, by_much=False),
        "n": stats.n_to_decide(a, b, margin, alpha),
        "describe": stats.describe(welch),
    }


def all_claims(table, lr, thr, scaling) -> list[dict]:
    return [
        {"claim": "Transformers need more compute", **claim_compute(table, thr, scaling)},
        {"claim": "Transformers are harder to train; LSTMs train more stably", **claim_stability(table, lr)},
        {"claim": "LSTMs learn long-term dependencies (T >= 100)", **claim_long_memory(table)},
        {"claim": "No LSTM variant beats the vanilla one by much (Greff et al.)", **claim_variants(table)},
        {"claim": length_generalization.CLAIM, **length_generalization.claim(table)},
    ]
