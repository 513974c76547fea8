"""Throughput and cost, measured apart from training so that no evaluation or logging is mixed in.

  train tokens/s     one training step (suite.training_step: forward, backward, clipping, AdamW) on a
                     task batch: the step harness.fit trains with
  inference tokens/s one forward pass under no_grad
  per-token latency  one step of incremental decoding with a context of c positions
                     (LSTM: carried state; Transformer: KV cache)
  length scaling     forward and forward+backward time and peak memory against sequence length

Timed with torch.utils.benchmark.Timer.blocked_autorange after warm-up (it synchronises CUDA), at
the thread count the run was given: Timer defaults to ONE thread, so it is always told
torch.get_num_threads(), and the count seen inside the timed call is recorded (`timing_threads`).
Each figure carries its median and interquartile range, and is measured twice (repeat_*) so the
report can show how well it repeats. Build/compile time happens before any clock (see executor).
"""

from __future__ import annotations

import statistics
import time

import torch
from torch.utils.benchmark import Timer

from suite.interfaces import Batch, TaskSpec
from suite.jobs import Recipe
from suite.measure.flops import example_input
from suite.measure.memory import peak_memory
from suite.records import Latency, Scaling, Throughput
from suite.training_step import TrainStep

MIN_RUN_TIME = 0.3


def timed(stmt_fn, min_run_time: float = MIN_RUN_TIME, warmup: int = 2) -> dict:
    """Median and IQR seconds of stmt_fn at the current thread count, and the thread counts that
    the timed calls themselves saw (`threads`: a sorted list, one value when all is well)."""
    seen: set[int] = set()

    def observed():
        seen.add(torch.get_num_threads())
        stmt_fn()

    for _ in range(warmup):
        stmt_fn()
    timer = Timer("fn()", globals={"fn": observed}, num_threads=torch.get_num_threads())
    m = timer.blocked_autorange(min_run_time=min_run_time)
    return {"median": m.median, "iqr": m.iqr, "runs": len(m.times), "threads": sorted(seen)}


def _threads(*measurements: dict) -> int | list[int]:
    seen = sorted({t for m in measurements for t in m["threads"]})
    return seen[0] if len(seen) == 1 else seen


TIMING_LR = 1e-6  # an update costs the same at any rate; a small one keeps hundreds of timed steps finite


def batch_throughput(
    model, batch: Batch, loss_fn, device, cfg: Recipe | None = None, min_run_time: float = MIN_RUN_TIME
) -> Throughput:
    """Train-step and inference throughput of `model` on `batch`, twice each, plus peak memory. The train
    step is the recipe's (cfg; default Recipe()): the one harness.fit runs."""
    step = TrainStep(model, loss_fn, cfg or Recipe())
    compile_seconds = step.warm_up(batch)

    def train_step():
        step(batch, TIMING_LR)

    def infer():
        with torch.no_grad():
            model(batch.x)

    model.train()
    tokens = batch.tokens
    train1, train2 = timed(train_step, min_run_time), timed(train_step, min_run_time, warmup=0)
    infer1, infer2 = timed(infer, min_run_time), timed(infer, min_run_time, warmup=0)
    train_mem, infer_mem = peak_memory(train_step, device), peak_memory(infer, device)
    return Throughput(
        train_tokens_per_s=tokens / train1["median"],
        train_step_seconds=train1["median"],
        train_iqr_seconds=train1["iqr"],
        train_repeat_step_seconds=train2["median"],
        train_repeat_iqr_seconds=train2["iqr"],
        train_spread_tokens_per_s=_spread(tokens, train1),
        inference_tokens_per_s=tokens / infer1["median"],
        inference_step_seconds=infer1["median"],
        inference_iqr_seconds=infer1["iqr"],
        inference_repeat_step_seconds=infer2["median"],
        inference_repeat_iqr_seconds=infer2["iqr"],
        inference_spread_tokens_per_s=_spread(tokens, infer1),
        timing_threads=_threads(train1, train2, infer1, infer2),
        train_peak_bytes=train_mem["peak_bytes"],
        train_memory_method=train_mem["memory_method"],
        inference_peak_bytes=infer_mem["peak_bytes"],
        inference_memory_method=infer_mem["memory_method"],
        step_mode=step.label,
        step_compile_seconds=compile_seconds,
    )


def _spread(tokens: int, timing: dict) -> float:
    """The tokens/s interquartile range from the seconds' (delta method)."""
    return tokens * timing["iqr"] / timing["median"] ** 2


def token_batch(spec: TaskSpec, batch_size: int, device, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    if spec.input_vocab:
        x = torch.randint(0, spec.input_vocab, (batch_size, spec.seq_len), generator=g)
    else:
        x = torch.randn(batch_size, spec.seq_len, spec.input_dim, generator=g)
    y = torch.randint(0, spec.output_dim, (batch_size, spec.seq_len), generator=g)
    return Batch(x.to(device), y.to(device))


def step_latency(
    model, spec: TaskSpec, context: int, device, dtype, batch_size: int = 1, steps: int = 16
) -> Latency:
    """Prefill `context - steps` positions one at a time, then time `steps` single-token steps of a model
    built for `spec` (ModelCapabilities.init_state and step). perf_counter per step (not Timer): a
    decoding step changes the state it is timed on."""
    model.eval()
    x = example_input(
        TaskSpec(
            seq_len=context,
            input_vocab=spec.input_vocab,
            input_dim=spec.input_dim,
            output_dim=spec.output_dim,
        ),
        batch_size,
        dtype,
        device,
    )
    times, threads = [], set()
    with torch.no_grad():
        state = model.init_state(batch_size)
        for t in range(context):
            if t >= context - steps:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                threads.add(torch.get_num_threads())
                start = time.perf_counter()
            _, state = model.step(x[:, t], state)
            if t >= context - steps:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
    q = statistics.quantiles(times, n=4)
    return Latency(
        latency_seconds=statistics.median(times),
        latency_iqr_seconds=q[2] - q[0],
        latency_steps=len(times),
        timing_threads=_threads({"threads": threads}),
    )


def length_scaling(model, spec: TaskSpec, batch_size: int, device) -> Scaling:
    batch = token_batch(spec, batch_size, device)

    def fwd():
        with torch.no_grad():
            model(batch.x)

    def fwd_bwd():
        out = model(batch.x)
        out.float().pow(2).mean().backward()

    model.train()
    f, fb = timed(fwd, 0.2, warmup=1), timed(fwd_bwd, 0.2, warmup=1)
    mem = peak_memory(fwd_bwd, device)
    return Scaling(
        forward_seconds=f["median"],
        forward_iqr_seconds=f["iqr"],
        train_step_seconds=fb["median"],
        train_iqr_seconds=fb["iqr"],
        peak_bytes=mem["peak_bytes"],
        memory_method=mem["memory_method"],
        timing_threads=_threads(f, fb),
    )
