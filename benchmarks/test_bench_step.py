"""pytest-benchmark: one whole training step (suite.training_step.TrainStep: forward, loss, backward,
clipping, AdamW) of each main model at the quick profile's sizes, in the same run as the GEMM rate
(test_bench_lstm.py::test_gemm_rate[square]), so conftest.py gives each its GFLOP/s and share of it.

The step is the one harness.fit trains with, on a batch of the task, at the quick profile's batch size
and parameter budget; FLOPs are the suite's own count (suite.measure.flops, training = forward + backward).
Rows compare with lstm-fast at the same task size (the ratio is time per step; the models' FLOPs differ,
so compare GFLOP/s and % of GEMM for the arithmetic rate)."""

import pytest
import torch

from suite.jobs import Recipe
from suite.measure.flops import count_flops
from suite.models.sizing import build_model
from suite.registry import load_registry
from suite.training_step import TrainStep

MODELS = ("lstm-fast", "nn-lstm", "transformer", "hf-gpt2")  # the quick profile's main comparison
BUDGET, BATCH = 20000, 32
TASKS = {  # quick's main task configs of three kinds: features -> last, tokens -> every position
    "adding-T50": ("adding", {"seq_len": 50}),
    "copy_memory-delay10": ("copy_memory", {"delay": 10}),
    "char_lm-T64": ("char_lm", {"seq_len": 64, "eval_windows": 128}),
}


@pytest.fixture(scope="module")
def registry():
    return load_registry()


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("task_id", list(TASKS))
def test_train_step(benchmark, registry, task_id, model_name):
    name, params = TASKS[task_id]
    task = registry.make_task(name, params, seed=0)
    model, width = build_model(registry.model(model_name), task.spec, budget=BUDGET)
    step = TrainStep(model, task.loss, Recipe(batch_size=BATCH))
    batch = task.train_batch(BATCH, torch.Generator().manual_seed(0))
    tokens = batch.x.shape[0] * task.spec.seq_len
    flops = count_flops(model, task.spec).get("train_flops_per_token")
    benchmark.extra_info.update(
        impl=model_name,
        mode="train step",
        task=task_id,
        B=BATCH,
        T=task.spec.seq_len,
        I=task.spec.input_vocab or task.spec.input_dim,
        H=width,
        threads=torch.get_num_threads(),
        baseline="lstm-fast",
        flops=flops * tokens if flops else None,
        flops_source="suite.measure.flops (FlopCounterMode)",
        step_mode=step.label,
        ran_alone=True,
        concurrency=1,
    )
    model.train()
    step.warm_up(batch)
    for _ in range(3):  # warm-up: allocator, the fast path's build, the optimizer's state
        step(batch, 1e-6)
    benchmark.pedantic(lambda: step(batch, 1e-6), rounds=20, iterations=1, warmup_rounds=1)
