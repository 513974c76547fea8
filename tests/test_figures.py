"""Figure specs on hand-built tables: each shows every row it is given, and its caption what was run."""

import pandas as pd

from suite.report import figures

COLORS = figures.Colors({"lstm": "lstm", "transformer": "transformer"})


def test_a_timing_caption_shows_mixed_thread_counts():
    """timing_threads is a list where one job's timed calls saw different counts: the case it flags."""
    records = pd.DataFrame(
        {
            "env": [{"device": "cpu", "device_name": "Xeon", "dtype": "float32", "threads": 2}] * 2,
            "timing_threads": [2, [1, 2]],
            "recipe": [{"batch_size": 8}] * 2,
        }
    )
    caption = figures.timing_caption(records)
    assert "timed with 1, 2 thread(s) (the count changed inside a timed job), batch 8" in caption
    assert "the count changed" not in figures.timing_caption(records.iloc[:1])


def test_the_lr_sensitivity_figure_has_a_panel_per_task():
    tasks, lrs, models = ["adding", "copy_memory", "char_lm", "selective_copy"], [1e-3, 1e-2], ["lstm"]
    rows = [(t, m, lr) for t in tasks for m in models for lr in lrs]
    table = pd.DataFrame(
        [
            {"task": t, "model": m, "lr": lr, "role": "lr-sweep", "metric": "loss", "mean": 1.0, "std": 0.1}
            | {"successes": 1, "seeds": 2, "baseline": 2.0}
            for t, m, lr in rows
        ]
    )
    scores = pd.DataFrame(
        [{"task": t, "model": m, "lr": lr, "role": "lr-sweep", "seed": 0, "value": 1.0} for t, m, lr in rows]
    )
    train = pd.DataFrame({"role": ["lr-sweep"], "seed": [0], "env": [{"device": "cpu"}]})
    fig = figures.lr_sensitivity(table, scores, train, COLORS)
    assert [p.title for p in fig.panels] == tasks
