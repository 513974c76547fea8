"""The shared loop: divergence, determinism, statistics in the records, timing repeatability."""

import torch

from suite.environment import environment
from suite.executor import RunContext, run_job
from suite.jobs import Job


def _run_context(registry):
    dev = torch.device("cpu")
    return RunContext(registry, dev, "float32", environment(dev, "float32"))


def _job(model="nn-lstm", lr=3e-3, seed=0, steps=20):
    return Job(
        kind="train",
        experiment="t",
        task="adding",
        model=model,
        seed=seed,
        task_params={"seq_len": 12},
        model_options={},
        param_budget=3000,
        layers=None,
        recipe={"steps": steps, "batch_size": 8, "eval_every": 10, "lr": lr, "warmup": 0},
    )


def test_absurd_learning_rate_diverges_and_the_next_job_still_runs(registry):
    run = _run_context(registry)
    bad = run_job(_job("transformer", lr=1e6, steps=60), run)
    assert bad["status"] == "diverged", bad.get("error")
    assert isinstance(bad["diverged_step"], int) and bad["divergence_reason"]
    good = run_job(_job(), run)
    assert good["status"] == "ok" and good["test"]["mse"] is not None


def test_same_seed_gives_bitwise_identical_metrics(registry):
    run = _run_context(registry)
    a, b = run_job(_job(seed=3), run), run_job(_job(seed=3), run)
    untimed = lambda curve: [{k: v for k, v in point.items() if k != "seconds"} for point in curve]
    assert (
        a["test"] == b["test"]
        and untimed(a["curve"]) == untimed(b["curve"])
        and a["loss_curve"] == b["loss_curve"]
    )
    assert a["grad_norm"] == b["grad_norm"]
    c = run_job(_job(seed=4), run)
    assert c["test"] != a["test"]


def test_records_carry_stability_and_cost_fields(registry):
    rec = run_job(_job(), _run_context(registry))
    for key in (
        "grad_norm",
        "loss_spikes",
        "params",
        "flops_per_token",
        "baseline",
        "backend",
        "env",
        "curve",
        "time_to_threshold_steps",
        "success",
        "train_seconds",
    ):
        assert key in rec, key
    assert rec["grad_norm"]["median"] > 0 and rec["grad_norm"]["p99"] >= rec["grad_norm"]["median"]
    from suite.models.lstm_library import detect_backend

    assert rec["backend"] == detect_backend("cpu", torch.float32) and rec["env"]["device"] == "cpu"
    assert rec["params"] == rec["backbone_params"] + rec["lookup_params"] and rec["train_flops_per_token"] > 0
    assert rec["baseline"]["mse"] == 1 / 6


def test_throughput_record_holds_both_measurements_and_their_labels(registry):
    """How well the two measurements agree is a benchmark's business (benchmarks/), not a test's."""
    job = Job(
        kind="throughput",
        experiment="t",
        task="adding",
        model="nn-lstm",
        seed=0,
        task_params={"seq_len": 32},
        model_options={},
        param_budget=5000,
        layers=None,
        recipe={"batch_size": 16},
    )
    rec = run_job(job, _run_context(registry))
    assert rec["status"] == "ok", rec.get("error")
    for kind in ("train", "inference"):
        assert rec[f"{kind}_step_seconds"] > 0 and rec[f"{kind}_repeat_step_seconds"] > 0
        assert rec[f"{kind}_iqr_seconds"] >= 0 and rec[f"{kind}_tokens_per_s"] > 0
    assert rec["train_peak_bytes"] > 0 and rec["flops_per_token"] > 0
    assert (
        rec["timing_threads"] == rec["env"]["threads"] and "allocator timeline" in rec["train_memory_method"]
    )


def test_wall_clock_budget(registry):
    job = Job(
        kind="train",
        experiment="t",
        task="adding",
        model="nn-lstm",
        seed=0,
        task_params={"seq_len": 12},
        model_options={},
        param_budget=3000,
        layers=None,
        recipe={"steps": 10**6, "seconds": 0.5, "batch_size": 8, "eval_every": 1000},
    )
    rec = run_job(job, _run_context(registry))
    assert rec["status"] == "ok" and 0 < rec["steps_done"] < 10**6
    assert rec["train_seconds"] >= 0.5 and rec["recipe"]["seconds"] == 0.5  # stops once the budget is spent
