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
from suite.interfaces import Task, TaskSpec
from suite.jobs import Job
from suite.measure import throughput
from suite.measure.flops import count_flops
from suite.models import capabilities
from suite.models.sizing import build_model
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
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


_TASK_FACTS: dict[str, dict] = {}


def task_facts(job: Job, task: Task) -> dict:
    """A task's baseline and thresholds are functions of its name, parameters and seed: computed once
    per process (n-gram and least-squares baselines take a second; every model shares them)."""
    key = json.dumps([job.task, job.task_params, job.seed], sort_keys=True, default=str)
    if key not in _TASK_FACTS:
        _TASK_FACTS[key] = {"baseline": task.baseline(),
                            "thresholds": {split: task.threshold(split) for split in ("val", "test")}}
    return _TASK_FACTS[key]


def _build(job: Job, spec: TaskSpec, ctx: Context) -> tuple[torch.nn.Module, int]:
    return build_model(ctx.registry.model(job.model), spec, budget=job.param_budget, width=job.width,
                       layers=job.layers, options=job.model_options, seed=job.seed, device=ctx.device,
                       dtype=DTYPES[ctx.dtype])


def _prepare(model: torch.nn.Module) -> dict:
    """Build anything the model compiles before a clock starts; the job that paid says so."""
    seconds = capabilities.prepare(model)
    return {"compile_seconds": seconds, "compile_reused": None if seconds is None else seconds == 0.0}


def _model_facts(model: torch.nn.Module, width: int, spec: TaskSpec, ctx: Context) -> dict:
    return {**capabilities.parameter_split(model), "model_width": width, **count_flops(model, spec),
            "backend": capabilities.backend(model, ctx.device, DTYPES[ctx.dtype])}


def _task_fields(task: Task) -> dict:
    return {"seq_len": task.spec.seq_len, "task_family": task.family, "primary_metric": task.primary_metric,
            "higher_is_better": task.higher_is_better}


def run_train(job: Job, ctx: Context, progress=None) -> dict:
    from suite import harness

    task = ctx.registry.make_task(job.task, job.task_params, seed=job.seed)
    facts = task_facts(job, task)
    model, width = _build(job, task.spec, ctx)
    compiled = _prepare(model)
    result = harness.train(job.train_config, job.seed, task, model, ctx.device, DTYPES[ctx.dtype],
                           facts["thresholds"], progress)
    return {**result, **_task_fields(task), **_model_facts(model, width, task.spec, ctx), **compiled,
            "model_layers": job.layers or ctx.registry.model(job.model).default_layers, "task_info": task.describe(),
            "baseline": facts["baseline"], "baseline_name": task.baseline_name(),
            "success_threshold": facts["thresholds"]["test"], "val_threshold": facts["thresholds"]["val"]}


def run_throughput(job: Job, ctx: Context, progress=None) -> dict:
    from suite import harness

    dtype = DTYPES[ctx.dtype]
    task = ctx.registry.make_task(job.task, job.task_params, seed=0)
    model, width = _build(job, task.spec, ctx)
    compiled = _prepare(model)
    batch = harness.to_device(task.train_batch(job.train["batch_size"], torch.Generator().manual_seed(0)),
                              ctx.device, dtype)
    result = throughput.measure_model(model, batch, task.loss, ctx.device)
    return {**result, **_task_fields(task), **_model_facts(model, width, task.spec, ctx), **compiled,
            "batch_size": job.train["batch_size"]}


def _synthetic(job: Job, ctx: Context, seq_len: int):
    """A model for the synthetic token task of the measurement jobs. The budget is matched on the
    backbone, so every length of a sweep gets the same width and the same backbone."""
    spec = TaskSpec(seq_len=seq_len, **SCALING_SPEC)
    model, width = _build(job, spec, ctx)
    return model, spec, width, _prepare(model)


def run_scaling(job: Job, ctx: Context, progress=None) -> dict:
    T = job.extra["seq_len"]
    model, spec, width, compiled = _synthetic(job, ctx, T)
    result = throughput.length_scaling(model, spec, job.train["batch_size"], ctx.device, DTYPES[ctx.dtype])
    return {**result, **_model_facts(model, width, spec, ctx), **compiled, "seq_len": T,
            "batch_size": job.train["batch_size"]}


def run_latency(job: Job, ctx: Context, progress=None) -> dict:
    context = job.extra["context"]
    model, spec, width, compiled = _synthetic(job, ctx, context)
    if not capabilities.supports_step(model):
        return {"status": "skipped", "skip_reason": f"model {job.model} has no incremental decoding (step)",
                "context": context}
    result = throughput.step_latency(model, context, ctx.device, DTYPES[ctx.dtype])
    return {**result, **capabilities.parameter_split(model), "model_width": width, **compiled, "context": context,
            "backend": capabilities.backend(model, ctx.device, DTYPES[ctx.dtype])}


RUNNERS = {"train": run_train, "throughput": run_throughput, "scaling": run_scaling, "latency": run_latency}


def run_job(job: Job, ctx: Context, progress=None) -> dict:
    """Job -> record: the job's own fields (so a record names its job exactly), then what the runner
    measured. Never raises for a failure inside the job: that becomes status "failed"."""
    model_spec = ctx.registry.models.get(job.model)
    record = {"key": job.key, **asdict(job), "model_family": getattr(model_spec, "family", None),
              "implementation": getattr(model_spec, "implementation", None),
              "architecture": getattr(model_spec, "architecture", "") or job.model, "env": ctx.env, "started": _now()}
    t0 = time.perf_counter()
    try:
        result = RUNNERS[job.kind](job, ctx, progress)
        clash = set(result) & set(asdict(job))
        if clash:  # a record must name its job exactly: measurements never overwrite job settings
            raise RuntimeError(f"runner {job.kind!r} returned job fields {sorted(clash)}")
        record.update(result)
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
