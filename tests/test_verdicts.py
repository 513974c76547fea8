"""Every verdict on hand-built tables that must give each outcome, and the statistics helpers
against scipy's own numbers. No training runs here: these tests are about judgement, not models."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from suite.report import claims, stats, tables, verdicts

FAMILY = {
    "lstm-fast": "lstm",
    "nn-lstm": "lstm",
    "transformer": "transformer",
    "hf-gpt2": "transformer-hf",
    "lstm-peephole": "lstm-variant",
    "lstm-cifg": "lstm-variant",
    "lstm-nfg": "lstm-variant",
}
ARCH = {"lstm-fast": "vanilla", "nn-lstm": "vanilla", "transformer": "gpt2", "hf-gpt2": "gpt2"}


def row(
    model,
    values,
    config="adding(seq_len=25)",
    role="main",
    metric="mse",
    higher=False,
    baseline=1 / 6,
    seq_len=25,
    successes=0,
    task_family="long-dependency",
    **extra,
):
    values = list(values)
    return {
        "experiment": role,
        "role": role,
        "task": config.split("(")[0],
        "config": config,
        "model": model,
        "family": FAMILY[model],
        "architecture": ARCH.get(model, model),
        "metric": metric,
        "higher_is_better": higher,
        "mean": float(np.mean(values)) if values else None,
        "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        "seeds": len(values),
        "values": values,
        "baseline": baseline,
        "baseline_name": "b",
        "successes": successes,
        "diverged": 0,
        "seq_len": seq_len,
        "task_family": task_family,
        "lr": 3e-3,
        "lr_tuned": True,
        "params": 1000,
        "backbone_params": 900,
        "budget": "300 steps",
        "train_flops_per_token": None,
        "flops_to_threshold": None,
        **extra,
    }


def table(*rows):
    return pd.DataFrame(list(rows))


LOW, HIGH = [0.010, 0.011, 0.012, 0.0105], [0.050, 0.055, 0.052, 0.051]

# ---- statistics helpers against scipy ------------------------------------------------------------


def test_welch_on_the_log_scale_matches_scipy():
    got = stats.welch(LOW, HIGH, log=True)
    ref = sps.ttest_ind(np.log(LOW), np.log(HIGH), equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert got["p"] == pytest.approx(ref.pvalue) and got["df"] == pytest.approx(ref.df)
    assert got["difference"] == pytest.approx(math.exp(np.log(LOW).mean() - np.log(HIGH).mean()))
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((math.exp(ci.low), math.exp(ci.high)))


def test_welch_refuses_small_samples_and_zero_spread():
    assert stats.welch([1, 2], [3, 4], log=False)["why"].startswith("underpowered")
    flat = stats.welch([0.5, 0.5, 0.5], [0.7, 0.7, 0.7], log=False)
    assert not flat["testable"] and "no spread" in flat["why"] and not stats.significant(flat)


def test_holm_matches_the_textbook_adjustment():
    results = [{"testable": True, "p": p} for p in (0.01, 0.04, 0.03)]
    assert [r["p_holm"] for r in stats.holm(results)] == pytest.approx([0.03, 0.06, 0.06])


# ---- the family verdict --------------------------------------------------------------------------


NEAR = [0.0200, 0.0201, 0.0199, 0.02005]  # tight around 0.02: TOST within ±10% holds
NEAR2 = [0.0202, 0.0200, 0.0201, 0.0199]
NOISY, NOISY2 = [0.02, 0.03, 0.025], [0.021, 0.035, 0.019]  # neither different nor shown the same
AT_CHANCE, AT_CHANCE2 = [0.166, 0.168, 0.165], [0.167, 0.166, 0.169]  # the baseline is 1/6


@pytest.mark.parametrize(
    "lstm,transformer,verdict",
    [
        (LOW, HIGH, "LSTM better"),
        (HIGH, LOW, "Transformer better"),
        (NEAR, NEAR2, "equivalent"),
        (AT_CHANCE, AT_CHANCE2, "neither learned"),
        (NOISY, NOISY2, "inconclusive"),
        (LOW[:2], HIGH[:2], "inconclusive"),
        ([0.02] * 3, [0.03] * 3, "inconclusive"),
    ],
)
def test_family_verdict_gives_each_outcome(lstm, transformer, verdict):
    got = tables.family_table(table(row("nn-lstm", lstm), row("transformer", transformer))).iloc[0]
    assert got["verdict"] == verdict, got["why"]
    assert got["verdict"] in verdicts.KINDS and got["why"]


def test_seeds_that_would_decide_match_cohens_table():
    """A constructed case with a known answer: standardised difference d = 1 (means 0 and 1, sd 1 each),
    two-sided alpha 0.05, power 0.8 needs 17 per group (Cohen 1988, Table 2.4.1); a stricter alpha (the
    first step of Holm over 4 tests) needs more, and more than the n already run."""
    margin = stats.Margin(0.1, log=False)  # the difference (1) is beyond it: a Welch test is planned
    assert stats.n_to_decide([-1, 0, 1], [0, 1, 2], margin) == 17
    assert stats.n_to_decide([-1, 0, 1], [0, 1, 2], margin, alpha=0.05 / 4) == 24
    assert stats.n_to_decide([0, 0, 0], [1, 1, 1], margin) is None  # no spread to plan with


def test_an_inconclusive_verdict_names_the_seeds_that_would_decide():
    got = tables.family_table(table(row("nn-lstm", NOISY), row("transformer", NOISY2))).iloc[0]
    assert got["n to decide"] >= 3 and f"{got['n to decide']} seeds a side would decide" in got["why"]
    small = tables.family_table(table(row("nn-lstm", LOW[:2]), row("transformer", HIGH[:2]))).iloc[0]
    assert "underpowered" in small["why"]


def test_equivalence_needs_the_margin_not_just_a_missing_difference():
    """The same two samples: equivalent within ±10%, not within a margin they cannot show."""
    got = tables.family_table(table(row("nn-lstm", NEAR), row("transformer", NEAR2))).iloc[0]
    assert got["verdict"] == "equivalent" and got["margin"] == "±10%"
    old = stats.MARGINS["mse"]
    stats.MARGINS["mse"] = stats.Margin(1.001, log=True)
    try:
        tight = tables.family_table(table(row("nn-lstm", NEAR), row("transformer", NEAR2))).iloc[0]
    finally:
        stats.MARGINS["mse"] = old
    assert tight["verdict"] == "inconclusive"


def _solved(model, steps, seeds=3):
    return row(model, [0.005] * (seeds - 1) + [0.006], successes=seeds, solve_steps=steps)


@pytest.mark.parametrize(
    "lstm_steps,transformer_steps,faster",
    [
        ([700, 750, 800], [250, 200, 300], "Transformer"),
        ([250, 200, 300], [700, 750, 800], "LSTM"),
        ([500, 510, 505], [505, 500, 507], "equivalent"),
        ([200, 800, 500], [300, 700, 400], "inconclusive"),
    ],
)
def test_both_solved_compares_the_steps_to_solve(lstm_steps, transformer_steps, faster):
    got = tables.family_table(
        table(_solved("nn-lstm", lstm_steps), _solved("transformer", transformer_steps))
    ).iloc[0]
    assert (got["verdict"], got["faster"], got["compared on"]) == ("both solved", faster, "steps to solve")


def test_runs_that_train_on_past_the_threshold_are_judged_on_the_metric():
    """A language model's threshold is its baseline: both pass it, and their final scores still differ."""
    lm = dict(metric="bpc", baseline=2.0, until_solved=False)
    got = tables.family_table(
        table(
            row("nn-lstm", [1.40, 1.41, 1.42], successes=3, solve_steps=[50, 50, 50], **lm),
            row("transformer", [1.60, 1.62, 1.61], successes=3, solve_steps=[50, 50, 50], **lm),
        )
    ).iloc[0]
    assert (got["verdict"], got["compared on"]) == ("LSTM better", "test metric")


def test_one_side_solved_is_judged_on_the_metric():
    got = tables.family_table(
        table(_solved("nn-lstm", [700, 750, 800]), row("transformer", HIGH, successes=0))
    ).iloc[0]
    assert (got["verdict"], got["compared on"]) == ("LSTM better", "test metric")


def test_a_forged_success_flag_changes_no_verdict():
    """Records whose `success` says true while their metric sits at the baseline: the table re-derives
    success from metric and threshold, and the report lists the disagreement."""

    def record(model, seed, mse, success):
        return {
            "experiment": "main",
            "role": "main",
            "kind": "train",
            "task": "adding",
            "config": "adding(seq_len=120)",
            "model": model,
            "model_family": FAMILY[model],
            "architecture": ARCH[model],
            "seed": seed,
            "status": "ok",
            "primary_metric": "mse",
            "higher_is_better": False,
            "test": {"mse": mse},
            "success": success,
            "success_threshold": 0.01,
            "baseline": {"mse": 1 / 6},
            "baseline_name": "b",
            "seq_len": 120,
            "task_family": "long-dependency",
            "recipe": {"lr": 1e-3, "steps": 10},
            "time_to_threshold_steps": None,
            "stop_reason": "budget",
            "steps_done": 10,
        }

    forged = pd.DataFrame(
        [record("nn-lstm", s, 1 / 6 + 0.001 * s, True) for s in range(3)]
        + [record("transformer", s, 1 / 6 - 0.001 * s, False) for s in range(3)]
    )
    t = tables.task_table(forged)
    assert t.set_index("model").loc["nn-lstm", "successes"] == 0
    assert claims.claim_long_memory(t)["verdict"] == "not supported"
    assert tables.family_table(t).iloc[0]["verdict"] == "neither learned"
    assert len(tables.flag_disagreements(forged)) == 3


def test_family_verdict_counts_twins_once_and_takes_each_familys_best():
    got = tables.family_table(
        table(
            row("lstm-fast", LOW),
            row("nn-lstm", [x * 1.01 for x in LOW]),
            row("transformer", HIGH),
            row("hf-gpt2", [x * 2 for x in HIGH]),
        )
    )
    assert (got["best LSTM"].iloc[0], got["best Transformer"].iloc[0]) == ("lstm-fast", "transformer")
    assert got["verdict"].iloc[0] == "LSTM better"


def test_how_sure_never_tests_a_model_against_its_twin():
    twin = [x * 1.001 for x in LOW]
    got = tables.winners(table(row("lstm-fast", LOW), row("nn-lstm", twin), row("transformer", HIGH)))
    assert got["best model"].iloc[0] == "lstm-fast" and got["runner-up"].iloc[0] == "transformer"
    assert got["how sure"].iloc[0].startswith("significant")


# ---- the claims ----------------------------------------------------------------------------------


def _long(model, successes, seeds=3, seq_len=120):
    return row(
        model,
        [0.9] * seeds,
        config=f"copy_memory(delay={seq_len - 20})",
        metric="accuracy",
        higher=True,
        baseline=0.125,
        seq_len=seq_len,
        successes=successes,
    )


@pytest.mark.parametrize(
    "rows,verdict",
    [
        ([_long("nn-lstm", 3)], "supported"),
        ([_long("nn-lstm", 1)], "not supported"),
        ([_long("nn-lstm", 3, seq_len=30)], "inconclusive"),  # not tested at T >= 100
        ([_long("nn-lstm", 2, seeds=2)], "inconclusive"),  # too few seeds
    ],
)
def test_long_memory_claim(rows, verdict):
    assert claims.claim_long_memory(table(*rows))["verdict"] == verdict


def _abl(model, values, baseline=1 / 6):
    return row(model, values, role="ablation", baseline=baseline)


@pytest.mark.parametrize(
    "rows,verdict",
    [
        (
            [_abl("lstm-peephole", LOW), _abl("lstm-cifg", [x * 1.02 for x in LOW]), _abl("lstm-nfg", HIGH)],
            "supported",
        ),
        (
            [_abl("lstm-peephole", HIGH), _abl("lstm-cifg", LOW)],
            "not supported",
        ),  # a variant is significantly better
        (
            [_abl("lstm-peephole", [0.5, 0.6, 0.55]), _abl("lstm-cifg", LOW)],
            "inconclusive",
        ),  # reference never learned
        ([_abl("lstm-peephole", LOW[:2]), _abl("lstm-cifg", HIGH[:2])], "inconclusive"),  # underpowered
    ],
)
def test_variant_claim(rows, verdict):
    assert claims.claim_variants(table(*rows))["verdict"] == verdict


def _sweep(model, lr, successes, seeds=3):
    return row(
        model,
        [0.01] * seeds,
        config=f"adding(seq_len=25, lr={lr:g})",
        sweep="adding(seq_len=25)",
        role="lr-sweep",
        lr=lr,
        successes=successes,
    )


def _lr(lstm_ok, transformer_ok, seeds=3):
    grid = [1e-4, 1e-3, 1e-2, 1e-1]
    rows = [_sweep("nn-lstm", lr, seeds if ok else 0, seeds) for lr, ok in zip(grid, lstm_ok)]
    rows += [_sweep("transformer", lr, seeds if ok else 0, seeds) for lr, ok in zip(grid, transformer_ok)]
    return table(*rows)


@pytest.mark.parametrize(
    "lstm_ok,transformer_ok,seeds,verdict",
    [
        ([1, 1, 1, 0], [0, 1, 0, 0], 3, "supported"),
        ([0, 1, 0, 0], [1, 1, 1, 0], 3, "not supported"),
        ([0, 1, 1, 0], [0, 1, 1, 0], 3, "inconclusive"),
        ([1, 1, 1, 0], [0, 1, 0, 0], 2, "inconclusive"),  # a majority of 2 seeds is not enough
    ],
)
def test_stability_claim(lstm_ok, transformer_ok, seeds, verdict):
    t = _lr(lstm_ok, transformer_ok, seeds)
    assert claims.claim_stability(t, tables.lr_windows(t))["verdict"] == verdict


def _compute(lstm_flops, transformer_flops):
    return table(
        row("nn-lstm", LOW, train_flops_per_token=lstm_flops),
        row("transformer", HIGH, train_flops_per_token=transformer_flops),
    )


@pytest.mark.parametrize(
    "lstm,transformer,verdict",
    [(1e5, 3e5, "supported"), (3e5, 1e5, "not supported"), (None, None, "inconclusive")],
)
def test_compute_claim(lstm, transformer, verdict):
    assert claims.claim_compute(_compute(lstm, transformer), None, None)["verdict"] == verdict


def test_compute_claim_is_inconclusive_when_measures_disagree():
    thr = pd.DataFrame(
        [
            {
                "config": "adding(seq_len=25)",
                "model": "nn-lstm",
                "train_tokens_per_s": 1e5,
                "timing_threads": 2,
            },
            {
                "config": "adding(seq_len=25)",
                "model": "transformer",
                "train_tokens_per_s": 2e5,
                "timing_threads": 2,
            },
        ]
    )
    assert claims.claim_compute(_compute(1e5, 3e5), thr, None)["verdict"] == "inconclusive"


def test_lr_windows_keep_configs_of_one_task_apart():
    """Two lengths of one task are two sweeps: one LSTM window each, not one merged window."""
    rows = []
    for T, ok in ((25, [1, 1, 1, 0]), (50, [0, 0, 1, 0])):
        for lr, good in zip([1e-4, 1e-3, 1e-2, 1e-1], ok):
            r = _sweep("nn-lstm", lr, 3 if good else 0)
            rows.append({**r, "config": f"adding(seq_len={T}, lr={lr:g})", "sweep": f"adding(seq_len={T})"})
    got = tables.lr_windows(table(*rows)).set_index("config")["window_decades"]
    assert got.to_dict() == {"adding(seq_len=25)": pytest.approx(2.0), "adding(seq_len=50)": 0.0}


def test_the_compute_claim_reads_each_experiment_of_a_config_apart():
    """The same config in two main experiments (say two budgets) is two pieces of evidence, not one."""
    t = table(
        row("nn-lstm", LOW, train_flops_per_token=1e5),
        row("transformer", HIGH, train_flops_per_token=3e5),
        {**row("nn-lstm", LOW, train_flops_per_token=1e5), "experiment": "main-long"},
        {**row("transformer", HIGH, train_flops_per_token=3e5), "experiment": "main-long"},
    )
    evidence = claims.claim_compute(t, None, None)["evidence"]
    assert sum("training FLOPs per token" in e for e in evidence) == 2


def test_variant_claim_is_inconclusive_with_the_seeds_that_would_decide():
    got = claims.claim_variants(
        table(_abl("lstm-peephole", [0.02, 0.03, 0.025]), _abl("lstm-cifg", [0.016, 0.03, 0.02]))
    )
    assert got["verdict"] == "inconclusive" and "seeds a side would decide" in got["why"], got["why"]


def test_every_verdict_kind_has_its_words_and_colour_on_the_page():
    """Verdicts travel as data (a kind and a reason); the page maps kinds to words and colours, so a
    kind without either would show up here, not as a silently mis-parsed sentence."""
    from suite.report import views

    assert set(views.CHIP) == set(verdicts.KINDS) == set(views.LEAD)
    assert {"REGRESSED", "improved", "no significant change", "not testable"} <= set(views.COMPARE)
