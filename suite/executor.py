"""Runs jobs in this process, one after another, and appends one record per finished job.

Resume: a job whose key is already in the store is skipped, so re-running the same command
recomputes nothing, and a run killed at any moment loses at most the job in flight. A job that
raises is recorded as status "failed" with its error, and the next job runs. The seam for another
executor (e.g. a cluster) is `run_job(job, context) -> record`: pure in its inputs.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
import traceback
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

from suite.environment import DTYPES
from suite.errors import one_line
from suite.interfaces import TaskSpec, parameter_count
from suite.jobs import Job
from suite.measure import throughput
from suite.measure.flops import flops_per_token
from suite.models.sizing import build, width_for_budget
from suite.registry import Registry
from suite.store import ResultsStore

SCALING_SPEC = dict(input_vocab=64, output_dim=64)  # the synthetic token task of measurement jobs


@dataclass
class Context:
    registry: Registry
    device: torch.device
    dtype: str
    env: dict


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _compile_seconds(model_name: str) -> float | None:
    if model_name != "lstm-fast":
        return None
    from suite.models import lstm_fast

    return lstm_fast.build_seconds()


_BASELINES: dict[str, dict] = {}


def baseline_of(job: Job, task) -> dict:
    """A task's baseline is a function of its name, parameters and seed: computed once per process
    (n-gram and least-squares baselines take a second; every seed and model shares them)."""
    key = json.dumps([job.task, job.task_params, job.seed], sort_keys=True, default=str)
    if key not in _BASELINES:
        _BASELINES[key] = task.baseline()
    return _BASELINES[key]


def run_train(job: Job, ctx: Context, progress=None) -> dict:
    from suite import harness

    task = ctx.registry.make_task(job.task, job.task_params, seed=job.seed)
    model_spec = ctx.registry.model(job.model)
    result = harness.train(job, task, model_spec, ctx.device, DTYPES[ctx.dtype], progress)
    return {**result, "seq_len": task.spec.seq_len, "task_info": task.describe(), "baseline": baseline_of(job, task),
            "baseline_name": task.baseline_name(), "primary_metric": task.primary_metric,
            "higher_is_better": task.higher_is_better, "success_threshold": task.success_threshold,
            "task_family": task.family, "compile_seconds": _compile_seconds(job.model)}


def run_throughput(job: Job, ctx: Context, progress=None) -> dict:
    from suite import harness

    dtype = DTYPES[ctx.dtype]
    task = ctx.registry.make_task(job.task, job.task_params, seed=0)
    model_spec = ctx.registry.model(job.model)
    model, width = harness.build_model(job, model_spec, task, ctx.device, dtype)
    batch = harness.to_device(task.train_batch(job.train["batch_size"], torch.Generator().manual_seed(0)), ctx.device, dtype)
    result = throughput.measure_model(model, batch, task.loss, ctx.device)
    return {**result, "seq_len": task.spec.seq_len, "batch_size": job.train["batch_size"], "params": parameter_count(model),
            "width": width, "flops_per_token": flops_per_token(model, task.spec),
            "backend": model.backend(ctx.device, dtype), "task_family": task.family,
            "compile_seconds": _compile_seconds(job.model)}


def _measure_model(job: Job, ctx: Context, seq_len: int):
    """A model for the synthetic token task, with its width fixed at the budget for length 64 so
    that only the length changes along a sweep."""
    model_spec = ctx.registry.model(job.model)
    width = width_for_budget(model_spec, TaskSpec(seq_len=64, **SCALING_SPEC), job.param_budget)
    spec = TaskSpec(seq_len=seq_len, **SCALING_SPEC)
    torch.manual_seed(0)
    model = build(model_spec, spec, width, None, {}).to(ctx.device, DTYPES[ctx.dtype])
    return model, spec, width


def run_scaling(job: Job, ctx: Context, progress=None) -> dict:
    T = job.extra["seq_len"]
    model, spec, width = _measure_model(job, ctx, T)
    result = throughput.length_scaling(model, spec, job.train["batch_size"], ctx.device, DTYPES[ctx.dtype])
    return {**result, "seq_len": T, "batch_size": job.train["batch_size"], "params": parameter_count(model), "width": width,
            "backend": model.backend(ctx.device, DTYPES[ctx.dtype])}


def run_latency(job: Job, ctx: Context, progress=None) -> dict:
    context = job.extra["context"]
    model, spec, width = _measure_model(job, ctx, context)
    if not model.supports_step:
        raise ValueError(f"model {job.model} has no incremental decoding (step)")
    result = throughput.step_latency(model, context, ctx.device, DTYPES[ctx.dtype])
    return {**result, "context": context, "params": parameter_count(model), "width": width,
            "backend": model.backend(ctx.device, DTYPES[ctx.dtype])}


RUNNERS = {"train": run_train, "throughput": run_throughput, "scaling": run_scaling, "latency": run_latency}


def run_job(job: Job, ctx: Context, progress=None) -> dict:
    """Job -> record. Never raises for a failure inside the job: that becomes status "failed"."""
    model_spec = ctx.registry.models.get(job.model)
    record = {"key": job.key, **asdict(job), "model_family": getattr(model_spec, "family", None),
              "implementation": getattr(model_spec, "implementation", None), "env": ctx.env, "started": _now()}
    t0 = time.perf_counter()
    try:
        record.update(RUNNERS[job.kind](job, ctx, progress))
        record.setdefault("status", "ok")
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        record.update(status="failed", error=f"{type(exc).__name__}: {one_line(exc)}",
                      traceback=traceback.format_exc(limit=6))
    record.update(finished=_now(), wall_seconds=time.perf_counter() - t0)
    return record


def _step_progress(bar, label: str):
    """Progress inside a long job: step and loss on the bar, at most twice a second."""
    last = [0.0]

    def update(step: int, total: int, loss: float) -> None:
        now = time.perf_counter()
        if now - last[0] > 0.5:
            last[0] = now
            bar.set_postfix_str(f"{label} step {step}/{total} loss {loss:.3g}")
    return update


def execute(jobs: list[Job], store: ResultsStore, ctx: Context, retry_failed: bool = False, show_progress: bool = True) -> dict:
    """Run every job not already in the store. Returns counts."""
    done_status = {r["key"]: r.get("status") for r in store.records()}
    todo = [j for j in jobs if j.key not in done_status or (retry_failed and done_status[j.key] == "failed")]
    counts = {"total": len(jobs), "skipped": len(jobs) - len(todo), "ok": 0, "diverged": 0, "failed": 0}
    bar = tqdm(todo, desc="jobs", unit="job", disable=not show_progress, file=sys.stderr, dynamic_ncols=True)
    for job in bar:
        label = job.label()[:60]
        bar.set_postfix_str(label)
        record = run_job(job, ctx, _step_progress(bar, label) if show_progress else None)
        store.append(record)
        counts[record["status"]] = counts.get(record["status"], 0) + 1
        if record["status"] == "failed":
            tqdm.write(f"failed: {job.label()}: {record['error']}", file=sys.stderr)
    bar.close()
    return counts
