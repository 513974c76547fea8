"""The seed article's claims, each tested against this run's numbers. Every verdict is computed
from the tables; when the data to judge is missing the verdict says "inconclusive" and why."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

RNN = ("lstm", "lstm-variant", "gru", "minlstm")
ATTN = ("transformer", "transformer-hf")


def _fmt(x, digits=3):
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


def _family_ratios(frame: pd.DataFrame, column: str, ratio) -> dict[str, float]:
    """Per task config: ratio(LSTM-family values, Transformer values) of `column`."""
    out = {}
    for config, g in frame.groupby("config"):
        rnn = g[g["family"].isin(RNN)][column].dropna()
        att = g[g["family"].isin(ATTN)][column].dropna()
        if len(rnn) and len(att):
            out[config] = ratio(rnn, att)
    return out


def claim_compute(table: pd.DataFrame, thr: pd.DataFrame, scaling: pd.DataFrame | None) -> dict:
    """Two measures of compute at matched parameters: FLOPs per token (counted) and training
    tokens per second (timed on this device). They can disagree: the verdict says so."""
    evidence, flop_votes, time_votes = [], [], []
    main = table[table["experiment"] == "main"]
    for config, ratio in _family_ratios(main, "flops_per_token", lambda r, a: a.median() / r.median()).items():
        flop_votes.append(ratio > 1.1)
        evidence.append(f"{config}: Transformer/LSTM FLOPs per token = {ratio:.2f}x at matched parameters")
    if thr is not None and not thr.empty:
        thr = thr.assign(family=thr["model"].map(table.drop_duplicates("model").set_index("model")["family"]))
        for config, ratio in _family_ratios(thr, "train_tokens_per_s", lambda r, a: r.max() / a.max()).items():
            time_votes.append(ratio > 1.25)
            evidence.append(f"{config}: fastest LSTM trains {ratio:.2f}x the tokens/s of the fastest Transformer on this device")
    if scaling is not None and not scaling.empty:
        for model, g in scaling[scaling["status"] == "ok"].groupby("model"):
            if g["seq_len"].nunique() >= 2:
                slope = np.polyfit(np.log(g["seq_len"]), np.log(g["train_seconds"]), 1)[0]
                evidence.append(f"{model}: training time grows as T^{slope:.2f} over T={g['seq_len'].min()}..{g['seq_len'].max()}")
    if not flop_votes and not time_votes:
        return {"verdict": "inconclusive", "why": "no main-experiment run holds both an LSTM and a Transformer", "evidence": evidence}
    flops_say = sum(flop_votes) / len(flop_votes) >= 0.75 if flop_votes else None
    time_says = sum(time_votes) / len(time_votes) >= 0.75 if time_votes else None
    said = {v for v in (flops_say, time_says) if v is not None}
    flop_text = f"more FLOPs per token on {sum(flop_votes)}/{len(flop_votes)} task configs" if flop_votes else "no FLOP counts"
    time_text = f"slower training (>1.25x) on {sum(time_votes)}/{len(time_votes)}" if time_votes else "no throughput runs"
    why = f"parameter-matched Transformers needed {flop_text}; {time_text}"
    if said == {True}:
        return {"verdict": "supported", "why": why, "evidence": evidence}
    if said == {False}:
        return {"verdict": "not supported", "why": why, "evidence": evidence}
    return {"verdict": "inconclusive", "why": why + ": counted FLOPs and measured time disagree at these sequence lengths", "evidence": evidence}


def claim_stability(table: pd.DataFrame, lr: pd.DataFrame) -> dict:
    evidence = []
    rnn, att = table[table["family"].isin(RNN)], table[table["family"].isin(ATTN)]
    if rnn.empty or att.empty:
        return {"verdict": "inconclusive", "why": "needs runs of both families", "evidence": evidence}
    div_r = rnn["diverged"].sum() / max(rnn["seeds"].sum(), 1)
    div_a = att["diverged"].sum() / max(att["seeds"].sum(), 1)
    evidence.append(f"divergence rate: LSTM family {div_r:.1%} of {int(rnn['seeds'].sum())} runs, Transformers {div_a:.1%} of {int(att['seeds'].sum())}")
    cv = lambda g: (g["std"] / g["mean"].abs()).replace([np.inf], np.nan).median()  # noqa: E731
    evidence.append(f"median seed coefficient of variation: LSTM family {_fmt(cv(rnn))}, Transformers {_fmt(cv(att))}")
    score = 0
    if not lr.empty:
        wr = lr[lr["family"].isin(RNN)]["window_decades"].mean()
        wa = lr[lr["family"].isin(ATTN)]["window_decades"].mean()
        evidence.append(f"LR window where training succeeds: LSTM family {_fmt(wr)} decades, Transformers {_fmt(wa)} decades")
        if not (math.isnan(wr) or math.isnan(wa)):
            score += 1 if wr > wa + 0.25 else -1 if wa > wr + 0.25 else 0
    score += 1 if div_r < div_a else -1 if div_a < div_r else 0
    if lr.empty:
        return {"verdict": "inconclusive", "why": "no learning-rate sweep in this run (the 'lr-sweep' experiment)", "evidence": evidence}
    verdict = "supported" if score >= 1 else "not supported" if score <= -1 else "inconclusive"
    why = {"supported": "LSTMs trained over a wider LR window and/or diverged less",
           "not supported": "Transformers trained over a wider LR window and/or diverged less",
           "inconclusive": "LR windows and divergence rates do not separate the families"}[verdict]
    return {"verdict": verdict, "why": why, "evidence": evidence}


def claim_long_memory(table: pd.DataFrame) -> dict:
    long = table[(table["task_family"] == "long-dependency") & table["family"].isin(("lstm",))]
    if long.empty:
        return {"verdict": "inconclusive", "why": "no LSTM run on a long-dependency task", "evidence": []}
    evidence, wins = [], []
    for task, g in long.groupby("task"):
        g = g.sort_values("seq_len")
        longest = g[g["seq_len"] == g["seq_len"].max()]
        best = longest.sort_values("mean", ascending=not bool(longest["higher_is_better"].iloc[0])).iloc[0]
        higher = bool(best["higher_is_better"])
        margin = (best["mean"] - best["baseline"]) * (1 if higher else -1) if best["baseline"] is not None and best["mean"] is not None else None
        clear = margin is not None and margin > max(2 * (best["std"] or 0), 0.05 * abs(best["baseline"]))
        wins.append(clear)
        evidence.append(f"{task} at T={int(best['seq_len'])}: best LSTM {best['model']} {best['metric']}={_fmt(best['mean'])}±{_fmt(best['std'])} "
                        f"vs trivial {_fmt(best['baseline'])}; success rate {best['success_rate']:.0%}")
    share = sum(wins) / len(wins)
    verdict = "supported" if share >= 0.75 else "not supported" if share == 0 else "inconclusive"
    return {"verdict": verdict, "why": f"an LSTM beat the memoryless baseline clearly (by > 2 seed std) at the longest length on {sum(wins)}/{len(wins)} tasks",
            "evidence": evidence}


def claim_variants(table: pd.DataFrame) -> dict:
    abl = table[table["experiment"].str.contains("ablation", case=False)]
    vanilla = abl[abl["model"].isin(["lstm-reference", "lstm-np", "lstm-peephole"])]
    if abl.empty or vanilla.empty:
        return {"verdict": "inconclusive", "why": "no variant ablation in this run", "evidence": []}
    evidence, much_better = [], []
    for config, g in abl.groupby("config"):
        higher = bool(g["higher_is_better"].iloc[0])
        base = g[g["model"] == "lstm-peephole"] if (g["model"] == "lstm-peephole").any() else g[g["model"].isin(["lstm-reference", "lstm-np"])]
        if base.empty:
            continue
        b = base.iloc[0]
        for _, r in g[g["family"] == "lstm-variant"].iterrows():
            if r["model"] == b["model"] or r["mean"] is None:
                continue
            gain = (r["mean"] - b["mean"]) * (1 if higher else -1)
            noise = 2 * math.sqrt((r["std"] or 0) ** 2 + (b["std"] or 0) ** 2)
            if gain > noise and gain > 0.05 * abs(b["mean"]):
                much_better.append(r["model"])
            evidence.append(f"{config}: {r['model']} {r['metric']}={_fmt(r['mean'])}±{_fmt(r['std'])} vs {b['model']} {_fmt(b['mean'])}±{_fmt(b['std'])}")
    verdict = "supported" if not much_better else "not supported"
    why = "no variant beat the peephole/vanilla LSTM by more than 2 combined seed std and 5%" if not much_better \
        else f"{', '.join(sorted(set(much_better)))} beat it by more than 2 combined seed std and 5%"
    return {"verdict": verdict, "why": why, "evidence": evidence[:12]}


def all_claims(table, lr, thr, scaling) -> list[dict]:
    return [
        {"claim": "Transformers need more compute", **claim_compute(table, thr, scaling)},
        {"claim": "Transformers are harder to train; LSTMs train more stably", **claim_stability(table, lr)},
        {"claim": "LSTMs learn long-term dependencies", **claim_long_memory(table)},
        {"claim": "No LSTM variant beats the vanilla one by much (Greff et al.)", **claim_variants(table)},
    ]
