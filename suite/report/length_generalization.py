"""The length-generalization part of the report (experiments with role "length-generalization": trained on
short strings, tested on longer ones; Delétang et al. 2023's protocol, tasks/_length_generalization.py).

  * `claim(table)`: "LSTMs generalise to longer sequences than Transformers on state-tracking tasks",
    judged from the recorded test accuracies (mean over test lengths, per seed) and the 90% threshold,
    with Welch's t per task (Holm-corrected) — never from a stored success flag;
  * `published_table(train)`: our numbers beside the published ones (Walker et al. 2025; Delétang et
    al. 2023), per task;
  * `accuracy_vs_length(train, task, colors)`: test accuracy against test length per model (one figure
    per task) from each record's per-length breakdown (`test_by_group`).

The build hooks are in suite/report/build.py (section and figures) and claims.py (the claim).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from suite.report import stats
from suite.report.figures import BASELINE, Colors, Figure, Panel, Trace, run_caption
from suite.report.html_tables import MISSING, Cell, chip, pm
from suite.report.tables import ATTN

ROLE = "length-generalization"
SOLVED = 0.9  # Delétang et al.: a task is solved at >= 90% mean accuracy over the test lengths
LSTM_FAMILIES = ("lstm", "lstm-variant")
# The state-tracking tasks of the claim: the regular tasks of Delétang et al. (a finite-state machine
# solves each, and the state must be carried across the whole string).
STATE_TRACKING = ("parity_check", "even_pairs", "cycle_navigation", "modular_arithmetic")
CLAIM = "LSTMs generalise to longer sequences than Transformers on state-tracking tasks"

# Published scores, accuracy in % on the test lengths beyond training (41..500).
WALKER = "Walker et al. 2025 (via PD-SSM), mean of 5 seeds"
DELETANG = (
    "Delétang et al. 2023, Table 2: best of 10 seeds × 3 lr; Transformer: best of 5 positional encodings"
)
PUBLISHED: dict[str, dict[str, tuple[float, float]]] = {  # source -> task -> (LSTM, Transformer)
    WALKER: {
        "cycle_navigation": (100.0, 24.4),
        "even_pairs": (100.0, 90.4),
        "modular_arithmetic": (99.9, 23.6),
        "parity_check": (100.0, 52.2),
    },
    # Transcribed from the paper's Table 2 (ICLR 2023 version) from our reading notes: this machine has no
    # internet, so the figures were not re-checked against the PDF here. Check them before citing.
    DELETANG: {
        "even_pairs": (100.0, 96.4),
        "modular_arithmetic": (100.0, 24.2),
        "parity_check": (100.0, 52.0),
        "cycle_navigation": (100.0, 61.9),
        "stack_manipulation": (59.1, 57.5),
        "reverse_string": (60.9, 62.3),
        "duplicate_string": (57.6, 52.8),
        "binary_addition": (55.5, 54.3),
    },
}
TASK_ORDER = (*STATE_TRACKING, "stack_manipulation", "reverse_string", "duplicate_string", "binary_addition")


def _verdict(verdict: str, why: str, evidence: list[str]) -> dict:
    return {"verdict": verdict, "why": why, "evidence": evidence}


def _best(g: pd.DataFrame, families) -> pd.Series | None:
    """The model of these families with the highest mean test accuracy (the paper reports the best
    Transformer of its position schemes; we pick the best of ours the same way, for both families)."""
    rows = g[g["family"].isin(families)].dropna(subset=["mean"])
    return None if rows.empty else rows.sort_values("mean", ascending=False).iloc[0]


def _solved(values) -> int:
    return sum(1 for v in values if v is not None and math.isfinite(v) and v >= SOLVED)


def claim(table: pd.DataFrame) -> dict:
    """Per state-tracking task config of the length-generalization role: the best LSTM against the best
    Transformer. A task speaks for the claim when a majority of the LSTM's seeds reach 90% at the test
    lengths, a majority of the Transformer's do not, and Welch's t (two-sided, Holm over the tasks)
    finds the LSTM significantly better (or, with no spread on either side, every seed lies on its side
    of 90%). It speaks against when the Transformer reaches 90% on a majority of seeds or is
    significantly better. Supported: >= 3/4 of the tasks for (Delétang et al.'s Transformer solves
    even pairs: one task against does not overturn three); not supported: as many tasks against as for
    (and at least one); otherwise (fewer for, the rest undecided because neither generalised, or < 3 seeds a
    side) inconclusive: a failure of both says nothing about which generalises better."""
    if table is None or table.empty or "role" not in table:
        return _verdict("inconclusive", f"no experiment with role {ROLE!r} in this run", [])
    rows = table[(table["role"] == ROLE) & table["task"].isin(STATE_TRACKING)]
    if rows.empty:
        return _verdict(
            "inconclusive", f"no {ROLE} run on a state-tracking task ({', '.join(STATE_TRACKING)})", []
        )
    pairs, evidence = [], []
    for config, g in rows.groupby("config", sort=False):
        lstm, attn = _best(g, LSTM_FAMILIES), _best(g, ATTN)
        if lstm is None or attn is None:
            evidence.append(
                f"{config}: needs an LSTM and a Transformer (has {', '.join(sorted(g['model']))})"
            )
            continue
        pairs.append((config, lstm, attn, stats.welch(lstm["values"], attn["values"], log=False)))
    stats.holm([r for *_, r in pairs])
    votes, underpowered = [], []
    for config, lstm, attn, r in pairs:
        ls, ts = _solved(lstm["values"]), _solved(attn["values"])
        ln, tn = len(lstm["values"]), len(attn["values"])
        if min(ln, tn) < stats.MIN_N:
            underpowered.append(config)
        separated = ls == ln and ts == 0  # every seed on its side of the threshold
        if 2 * ts > tn or (stats.significant(r) and not stats.a_is_better(r, True)):
            vote = "against"
        elif (
            2 * ls > ln
            and 2 * ts <= tn
            and (
                (stats.significant(r) and stats.a_is_better(r, True)) or (not r.get("testable") and separated)
            )
        ):
            vote = "for"
        else:
            vote = "open"
        votes.append(vote)
        evidence.append(
            f"{config}: best LSTM {lstm['model']} {_pct(lstm['mean'])} ({ls}/{ln} seeds >= 90%) vs best "
            f"Transformer {attn['model']} {_pct(attn['mean'])} ({ts}/{tn}); {stats.describe(r)} -> {vote}"
        )
    if not votes:
        return _verdict(
            "inconclusive", "no state-tracking task config holds both an LSTM and a Transformer", evidence
        )
    if underpowered:
        return _verdict(
            "inconclusive",
            f"underpowered: fewer than {stats.MIN_N} seeds a side on {', '.join(underpowered)}",
            evidence,
        )
    n_for, n_against = votes.count("for"), votes.count("against")
    why = (
        f"the LSTM generalised (mean test accuracy >= 90% on a majority of seeds) and beat the Transformer "
        f"significantly on {n_for}/{len(votes)} state-tracking tasks; the Transformer matched or beat it "
        f"on {n_against}"
    )
    if n_for / len(votes) >= 0.75:  # the published pattern: even pairs may go to the Transformer
        return _verdict("supported", why, evidence)
    if n_against and n_against >= n_for:
        return _verdict("not supported", why, evidence)
    # neither side generalised on the rest: an answer needs a learned model (did the LSTM fit the
    # training lengths? the length-generalization table shows it)
    return _verdict(
        "inconclusive", why + "; on the others neither generalised (too little training?)", evidence
    )


def _pct(x) -> str:
    return MISSING if x is None or not math.isfinite(x) else f"{100 * x:.1f}%"


# ---- our numbers beside the published ones -------------------------------------------------------------


def runs(train: pd.DataFrame) -> pd.DataFrame:
    """The finished runs of the role, one row per seed: task, model, family, seed, test accuracy (the mean
    over test lengths), accuracy at the training lengths (best validation), positions, lengths."""
    if train is None or train.empty or "role" not in train:
        return pd.DataFrame()
    g = train[(train["role"] == ROLE) & (train["status"] == "ok")]
    out = []
    for _, r in g.iterrows():
        test = r.get("test") if isinstance(r.get("test"), dict) else {}
        info = r.get("task_info") if isinstance(r.get("task_info"), dict) else {}
        positions = r.get("positions")
        out.append(
            {
                "task": r["task"],
                "config": r["config"],
                "model": r["model"],
                "family": r.get("model_family"),
                "seed": int(r["seed"]),
                "accuracy": test.get("accuracy"),
                "train_length_accuracy": r.get("best_val"),
                "positions": positions if isinstance(positions, str) else "recurrent",
                "level": info.get("chomsky_level", ""),
                "test_lengths": info.get("test_lengths", ""),
            }
        )
    return pd.DataFrame(out)


def published_table(train: pd.DataFrame) -> pd.DataFrame:
    """Per task config of the role: our best LSTM and best Transformer (mean ± std over seeds, best seed,
    seeds >= 90%), beside each published pair."""
    seeds = runs(train)
    if seeds.empty:
        return seeds
    rows = []
    order = {t: i for i, t in enumerate(TASK_ORDER)}
    for config, g in sorted(
        seeds.groupby("config"), key=lambda kv: (order.get(kv[1]["task"].iloc[0], 99), kv[0])
    ):
        task = g["task"].iloc[0]
        row = {"task": task, "config": config, "level": g["level"].iloc[0]}
        for side, families in (("LSTM", LSTM_FAMILIES), ("Transformer", ATTN)):
            mine = g[g["family"].isin(families)]
            means = mine.groupby("model")["accuracy"].mean()
            if means.empty:
                continue
            best = str(means.idxmax())
            acc = mine[mine["model"] == best]["accuracy"].dropna()
            row |= {
                f"{side} model": best,
                f"{side} positions": mine[mine["model"] == best]["positions"].iloc[0],
                f"{side} mean": float(acc.mean()),
                f"{side} std": float(acc.std(ddof=1)) if len(acc) > 1 else float("nan"),
                f"{side} best seed": float(acc.max()),
                f"{side} solved": f"{_solved(acc)}/{len(acc)}",
                f"{side} at training lengths": float(
                    mine[mine["model"] == best]["train_length_accuracy"].mean()
                ),
            }
        for source, table in PUBLISHED.items():
            pair = table.get(task)
            tag = "Walker" if source == WALKER else "Delétang"
            row[f"{tag} LSTM"], row[f"{tag} Transformer"] = pair if pair else (float("nan"), float("nan"))
        rows.append(row)
    return pd.DataFrame(rows)


def view(raw: pd.DataFrame) -> pd.DataFrame:
    """The page's cells: ours in %, mean ± std over seeds, best seed and seeds solved on hover."""

    def ours(r, side):
        if not isinstance(r.get(f"{side} model"), str):
            return Cell(MISSING)
        cell = pm(
            100 * r[f"{side} mean"], 100 * r[f"{side} std"] if math.isfinite(r[f"{side} std"]) else None
        )
        hover = (
            f"{r[f'{side} model']} ({r[f'{side} positions']}); best seed {_pct(r[f'{side} best seed'])}; "
            f"{r[f'{side} solved']} seeds >= 90%; at the training lengths "
            f"{_pct(r[f'{side} at training lengths'])}"
        )
        return Cell(f"{cell.text} ({r[f'{side} model']})", cell.sort, title=hover)

    def published(x):
        return Cell(f"{x:.1f}", float(x)) if isinstance(x, float) and math.isfinite(x) else Cell(MISSING)

    out = []
    for _, r in raw.iterrows():
        out.append(
            {
                "task": Cell(r["task"], r["task"], title=r["config"]),
                "level": r["level"],
                "our LSTM %": ours(r, "LSTM"),
                "our Transformer %": ours(r, "Transformer"),
                "solved (LSTM / Transformer)": f"{r.get('LSTM solved', MISSING)} / "
                f"{r.get('Transformer solved', MISSING)}",
                "Walker LSTM": published(r["Walker LSTM"]),
                "Walker Transformer": published(r["Walker Transformer"]),
                "Delétang LSTM": published(r["Delétang LSTM"]),
                "Delétang Transformer": published(r["Delétang Transformer"]),
                "_task": r["task"],
            }
        )
    return pd.DataFrame(out)


CAPTION = (
    "Length generalization: test accuracy (%, mean over the test lengths, mean ± std over seeds; the best "
    f"LSTM and the best Transformer of this run) beside the published scores. Walker: {WALKER}. Delétang: "
    f"{DELETANG} (transcribed from our notes of the paper, not re-checked on this machine). Their "
    "numbers come from far longer training (Delétang: 1M steps, batch 128) and the full test range "
    "41..500; read each row's test range on hover. Hover ours for the model, positions, best seed and "
    "accuracy at the training lengths."
)


def verdict_chip(verdict: str) -> Cell:
    return chip(verdict, {"supported": "yes", "not supported": "no"}.get(verdict, "inconclusive"))


# ---- accuracy against test length ------------------------------------------------------------------------


def _by_length(r) -> pd.Series | None:
    groups = r.get("test_by_group")
    if not isinstance(groups, dict) or not groups:
        return None
    return pd.Series({int(k): v.get("accuracy") for k, v in groups.items()}).sort_index()


def accuracy_vs_length(train: pd.DataFrame, task: str, colors: Colors) -> Figure | None:
    """Per model: the mean over seeds of the accuracy at each test length, a min-max band over seeds; the
    90% line and chance. One figure per task (every config of the task on it)."""
    g = train[(train["role"] == ROLE) & (train["task"] == task) & (train["status"] == "ok")]
    if g.empty:
        return None
    traces: list[Trace] = []
    for model, rows in colors.groups(g):
        curves = {
            int(s): c
            for s, c in ((s, _by_length(r)) for s, (_, r) in zip(rows["seed"], rows.iterrows()))
            if c is not None
        }
        if not curves:
            continue
        frame = pd.concat(curves, axis=1).sort_index()
        mean, color = frame.mean(axis=1), colors(model)
        positions = (
            rows["positions"].dropna().iloc[0]
            if "positions" in rows and rows["positions"].notna().any()
            else ""
        )
        label = f"{model} ({positions})" if isinstance(positions, str) and positions else model
        xs = [int(x) for x in mean.index]
        traces.append(
            Trace(
                f"{model} band",
                xs,
                list(frame.min(axis=1)),
                "band",
                model,
                color,
                high=list(frame.max(axis=1)),
                legend=False,
            )
        )
        traces.append(
            Trace(
                label,
                xs,
                list(mean),
                "line",
                model,
                color,
                hover=[
                    f"{model}: length {x}, mean of {frame.shape[1]} seeds {100 * v:.1f}%"
                    for x, v in zip(xs, mean)
                ],
            )
        )
    if not traces:
        return None
    xs = sorted({x for t in traces for x in t.x})
    traces.append(
        Trace("90% (solved)", [xs[0], xs[-1]], [SOLVED, SOLVED], "line", color="#2e7d32", dash=True)
    )
    chance = _chance(g)
    if chance is not None:
        traces.append(Trace("chance", [xs[0], xs[-1]], [chance, chance], "line", color=BASELINE, dash=True))
    info = next((i for i in g["task_info"] if isinstance(i, dict)), {}) if "task_info" in g else {}
    return Figure(
        f"length_generalization_{task}",
        f"{task}: test accuracy against test length (trained on {info.get('train_lengths', '?')})",
        f"{run_caption(g)}. Tested on {info.get('test_lengths', '?')}. Line: mean over seeds at each length; "
        "band: min to max over seeds; dashed: 90% (solved) and chance. The legend names each Transformer's "
        "positions.",
        [Panel(traces, "test length (input symbols)", "test accuracy (per output token)")],
    )


def _chance(g: pd.DataFrame) -> float | None:
    found = [b.get("accuracy") for b in g.get("baseline", []) if isinstance(b, dict)]
    values = [float(v) for v in found if isinstance(v, (int, float)) and math.isfinite(v)]
    return float(np.mean(values)) if values else None
