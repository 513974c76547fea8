"""The length-generalization claim on hand-built tables that must give each of its verdicts, the
published-numbers table and the accuracy-against-length figure from hand-built records."""

import numpy as np
import pandas as pd

from suite.report import length_generalization as lg
from suite.report.figures import Colors

FAMILY = {"lstm-fast": "lstm", "transformer-rope": "transformer", "transformer-nope": "transformer"}
GOOD, CHANCE = [1.0, 0.99, 0.995], [0.51, 0.5, 0.52]


def row(model, values, task="parity_check", role=lg.ROLE):
    values = list(values)
    return {
        "role": role,
        "task": task,
        "config": f"{task}(test_max_len=256)",
        "model": model,
        "family": FAMILY[model],
        "mean": float(np.mean(values)) if values else None,
        "values": values,
        "seeds": len(values),
    }


def table(*per_task):
    """per_task: (task, LSTM values, Transformer values)."""
    rows = []
    for task, lstm, attn in per_task:
        rows += [row("lstm-fast", lstm, task), row("transformer-rope", attn, task)]
    return pd.DataFrame(rows)


def test_supported_when_the_lstm_solves_every_state_tracking_task_and_the_transformer_none():
    t = table(*((task, GOOD, CHANCE) for task in lg.STATE_TRACKING))
    got = lg.claim(t)
    assert got["verdict"] == "supported", got
    assert len(got["evidence"]) == 4 and all("-> for" in e for e in got["evidence"])


def test_the_best_transformer_counts_and_a_transformer_that_generalises_speaks_against():
    rows = [
        r
        for task in lg.STATE_TRACKING
        for r in (row("lstm-fast", GOOD, task), row("transformer-rope", CHANCE, task))
    ]
    rows.append(row("transformer-nope", [0.95, 0.97, 0.96], "even_pairs"))  # solves it: the best Transformer
    got = lg.claim(pd.DataFrame(rows))
    assert got["verdict"] == "supported" and "matched or beat it on 1" in got["why"], got  # the paper's shape
    rows = [r for r in rows if r["task"] in ("even_pairs", "parity_check")]
    got = lg.claim(pd.DataFrame(rows))  # one for, one against
    assert got["verdict"] == "not supported", got


def test_not_supported_when_a_transformer_generalises_as_well():
    got = lg.claim(table(*((task, GOOD, [0.98, 0.97, 0.99]) for task in lg.STATE_TRACKING)))
    assert got["verdict"] == "not supported", got  # both generalise
    got = lg.claim(table(*((task, CHANCE, GOOD) for task in lg.STATE_TRACKING)))
    assert got["verdict"] == "not supported", got


def test_inconclusive_when_neither_generalises():
    got = lg.claim(table(*((task, [0.6, 0.62, 0.58], CHANCE) for task in lg.STATE_TRACKING)))
    assert got["verdict"] == "inconclusive", got  # significantly better, but below 90%: not "generalises"
    assert "neither generalised" in got["why"]


def test_inconclusive_when_underpowered_mixed_or_absent():
    got = lg.claim(table(*((task, GOOD[:2], CHANCE[:2]) for task in lg.STATE_TRACKING)))
    assert got["verdict"] == "inconclusive" and "underpowered" in got["why"]
    half = [(t, GOOD, CHANCE) for t in lg.STATE_TRACKING[:2]] + [
        (t, CHANCE, CHANCE) for t in lg.STATE_TRACKING[2:]
    ]
    got = lg.claim(table(*half))
    assert got["verdict"] == "inconclusive" and "2/4" in got["why"]
    assert (
        lg.claim(table(("reverse_string", GOOD, CHANCE)))["verdict"] == "inconclusive"
    )  # not state tracking
    assert lg.claim(pd.DataFrame([row("lstm-fast", GOOD)]))["verdict"] == "inconclusive"
    assert lg.claim(pd.DataFrame())["verdict"] == "inconclusive"
    other_role = pd.DataFrame(
        [row("lstm-fast", GOOD, role="main"), row("transformer-rope", CHANCE, role="main")]
    )
    assert lg.claim(other_role)["verdict"] == "inconclusive"


def test_no_spread_on_either_side_is_decided_by_the_threshold_alone():
    got = lg.claim(table(*((task, [1.0, 1.0, 1.0], [0.5, 0.5, 0.5]) for task in lg.STATE_TRACKING)))
    assert got["verdict"] == "supported" and "no spread" in got["evidence"][0], got


def _records():
    out = []
    for model, family, positions, level in (
        ("lstm-fast", "lstm", None, 1.0),
        ("transformer-rope", "transformer", "rope", 0.5),
    ):
        for seed in range(3):
            groups = {
                str(L): {"accuracy": level - 0.001 * seed * (L > 50), "loss": 0.1} for L in (41, 51, 61)
            }
            out.append(
                {
                    "role": lg.ROLE,
                    "task": "parity_check",
                    "config": "parity_check(test_max_len=61)",
                    "model": model,
                    "model_family": family,
                    "seed": seed,
                    "status": "ok",
                    "test": {"accuracy": float(np.mean([g["accuracy"] for g in groups.values()]))},
                    "test_by_group": groups,
                    "best_val": 1.0,
                    "positions": positions,
                    "task_info": {
                        "chomsky_level": "regular",
                        "train_lengths": "1..40",
                        "test_lengths": "41..61",
                    },
                    "baseline": {"accuracy": 0.5},
                    "env": {"device": "cpu", "device_name": "x", "dtype": "float32", "threads": 1},
                    "recipe": {"steps": 10, "batch_size": 8, "lr": 0.01},
                }
            )
    return pd.DataFrame(out)


def test_published_table_puts_ours_beside_both_sources():
    t = lg.published_table(_records()).iloc[0]
    assert t["LSTM model"] == "lstm-fast" and t["Transformer model"] == "transformer-rope"
    assert (
        t["LSTM solved"] == "3/3"
        and t["Transformer solved"] == "0/3"
        and t["Transformer positions"] == "rope"
    )
    assert (t["Walker LSTM"], t["Walker Transformer"]) == (100.0, 52.2)
    assert (t["Delétang LSTM"], t["Delétang Transformer"]) == (100.0, 52.0)
    assert not lg.view(lg.published_table(_records())).empty


def test_accuracy_against_length_has_one_line_per_model_over_the_test_lengths():
    records = _records()
    fig = lg.accuracy_vs_length(
        records, "parity_check", Colors({"lstm-fast": "lstm", "transformer-rope": "transformer"})
    )
    lines = {t.name: t for t in fig.panels[0].traces if t.kind == "line"}
    assert lines["lstm-fast"].x == [41, 51, 61] and lines["lstm-fast"].y[0] == 1.0
    assert "transformer-rope (rope)" in lines and "90% (solved)" in lines and lines["chance"].y == [0.5, 0.5]
    assert lg.accuracy_vs_length(records, "even_pairs", Colors({})) is None
