"""Runs jobs and appends one record per finished job: the driver loop every executor shares.

`run_job(job, run) -> record` is pure in its inputs; it runs in this process (`InProcessPool`, one
job at a time: tests and debugging use it) or in a Ray worker (suite/ray_executor.py: many at once, on
this machine or a cluster). Either way only this loop writes the store, as records arrive.

Resume: a job whose key is already in the store is skipped, so re-running the same command recomputes
nothing, and a run killed at any moment loses at most the jobs in flight. A job that raises, or whose
worker dies, is recorded as status "failed" with its error, and the next job runs.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

import torch
from tqdm import tqdm

from suite import harness
from suite.environment import DTYPES
from suite.errors import SuiteError, one_line
from suite.interfaces import Task, TaskSpec
from suite.jobs import Job, Recipe
from suite.measure import roofline, throughput
from suite.measure.flops import count_flops
from suite.models import capabilities
from suite.models.sizing import build_model
from suite.placement import Node, Placement
from suite.records import (
    RESULTS,
    Header,
    LatencyResult,
    LatencySkipped,
    Outcome,
    Placed,
    ScalingResult,
    TaskFacts,
    ThroughputResult,
    TrainResult,
    flat,
    now,
)
from suite.registry import Registry

SCALING_SPEC: dict[str, Any] = dict(
    input_vocab=64, output_dim=64
)  # the synthetic token task of measurement jobs


@dataclass
class RunContext:
    """What every job of one run shares: the registry, where and at what precision it runs, the
    environment its records carry, and (in this process) a callback(step, total, loss) for the job."""

    registry: Registry
    device: torch.device
    dtype: str
    env: dict
    progress: Callable[[int, int, float], None] | None = None


_TASK_FACTS: dict[str, dict] = {}


def task_facts(job: Job, task: Task) -> dict:
    """A task's baseline and thresholds are functions of its name, parameters and seed: computed once
    per process (n-gram and least-squares baselines take a second; every model shares them)."""
    key = json.dumps([job.task, job.task_params, job.seed], sort_keys=True, default=str)
    if key not in _TASK_FACTS:
        _TASK_FACTS[key] = {
            "baseline": task.baseline(),
            "thresholds": {split: task.threshold(split) for split in ("val", "test")},
        }
    return _TASK_FACTS[key]


def build_job_model(job: Job, spec: TaskSpec, run: RunContext) -> tuple[torch.nn.Module, int]:
    return build_model(
        run.registry.model(job.model),
        spec,
        budget=job.param_budget,
        width=job.width,
        layers=job.layers,
        options=job.model_options,
        seed=job.seed,
        device=run.device,
        dtype=DTYPES[run.dtype],
    )


def prepare_model(model: torch.nn.Module) -> dict:
    """Build anything the model compiles before a clock starts; the job that paid says so."""
    seconds = capabilities.prepare(model)
    return {"compile_seconds": seconds, "compile_reused": None if seconds is None else seconds == 0.0}


def _model_facts(model: torch.nn.Module, width: int, run: RunContext) -> dict:
    """records.ModelFacts but the compile fields (from prepare_model, before any clock)."""
    return {
        **capabilities.parameter_split(model),
        "model_width": width,
        "backend": capabilities.backend(model, run.device, DTYPES[run.dtype]),
        "positions": capabilities.positions(model),
    }


def _task_facts(task: Task) -> dict:
    return flat(
        TaskFacts(
            seq_len=task.spec.seq_len,
            task_family=task.family,
            primary_metric=task.primary_metric,
            higher_is_better=task.higher_is_better,
        )
    )


def run_train(job: Job, run: RunContext) -> TrainResult:
    task = run.registry.make_task(job.task, job.task_params, seed=job.seed)
    facts = task_facts(job, task)
    model, width = build_job_model(job, task.spec, run)
    compiled = prepare_model(model)
    fit = harness.fit(
        Recipe.from_dict(job.recipe),
        job.seed,
        task,
        model,
        run.device,
        DTYPES[run.dtype],
        {**facts["thresholds"], "floor": facts["baseline"].get(task.primary_metric)},
        run.progress,
    )
    flops = count_flops(model, task.spec)
    rate = roofline.step_rate(
        flops.get("train_flops_per_token"), fit.train_tokens_per_s_in_loop, run.device, DTYPES[run.dtype]
    )
    return TrainResult(
        **flat(fit),
        **_task_facts(task),
        **_model_facts(model, width, run),
        **compiled,
        **flops,
        **flat(rate),
        model_layers=job.layers or run.registry.model(job.model).default_layers,
        task_info=task.describe(),
        baseline=facts["baseline"],
        baseline_name=task.baseline_name(),
        success_threshold=facts["thresholds"]["test"],
        val_threshold=facts["thresholds"]["val"],
    )


def run_throughput(job: Job, run: RunContext) -> ThroughputResult:
    task = run.registry.make_task(job.task, job.task_params, seed=0)
    model, width = build_job_model(job, task.spec, run)
    compiled = prepare_model(model)
    batch_size = job.recipe["batch_size"]
    batch = task.train_batch(batch_size, torch.Generator().manual_seed(0))
    batch = harness.to_device(batch, run.device, DTYPES[run.dtype])
    cfg = Recipe.from_dict(job.recipe)
    measured = throughput.batch_throughput(model, batch, task.loss, run.device, cfg)
    flops = count_flops(model, task.spec)
    rate = roofline.step_rate(
        flops.get("train_flops_per_token"), measured.train_tokens_per_s, run.device, DTYPES[run.dtype]
    )
    return ThroughputResult(
        **flat(measured),
        **_task_facts(task),
        **_model_facts(model, width, run),
        **compiled,
        **flops,
        **flat(rate),
        batch_size=batch_size,
    )


def _synthetic(job: Job, run: RunContext, seq_len: int):
    """A model for the synthetic token task of the measurement jobs. The budget is matched on the
    backbone, so every length of a sweep gets the same width and the same backbone."""
    spec = TaskSpec(seq_len=seq_len, **SCALING_SPEC)
    model, width = build_job_model(job, spec, run)
    return model, spec, width, prepare_model(model)


def run_scaling(job: Job, run: RunContext) -> ScalingResult:
    T, batch_size = job.extra["seq_len"], job.recipe["batch_size"]
    model, spec, width, compiled = _synthetic(job, run, T)
    measured = throughput.length_scaling(model, spec, batch_size, run.device)
    return ScalingResult(
        **flat(measured),
        **_model_facts(model, width, run),
        **compiled,
        **count_flops(model, spec),
        seq_len=T,
        batch_size=batch_size,
    )


def run_latency(job: Job, run: RunContext) -> LatencyResult | LatencySkipped:
    context = job.extra["context"]
    model, spec, width, compiled = _synthetic(job, run, context)
    if not capabilities.supports_step(model):
        return LatencySkipped(
            skip_reason=f"model {job.model} has no incremental decoding (step)", context=context
        )
    measured = throughput.step_latency(model, spec, context, run.device, DTYPES[run.dtype])
    return LatencyResult(**flat(measured), **_model_facts(model, width, run), **compiled, context=context)


RUNNERS = {"train": run_train, "throughput": run_throughput, "scaling": run_scaling, "latency": run_latency}


def _header(job: Job, run: RunContext) -> dict:
    """The job's own fields (so a record names its job exactly) and where it ran."""
    model_spec = run.registry.models.get(job.model)
    header = Header(
        key=job.key,
        model_family=getattr(model_spec, "family", None),
        implementation=getattr(model_spec, "implementation", None),
        architecture=getattr(model_spec, "architecture", "") or job.model,
        env=run.env,
    )
    return {**asdict(job), **flat(header)}


def _result_fields(job: Job, result) -> dict:
    """A runner's declared result -> its record fields; it must be one its kind declares, and it never
    overwrites a job field (a record must name its job exactly)."""
    if not isinstance(result, RESULTS[job.kind]):
        raise RuntimeError(
            f"runner {job.kind!r} returned a {type(result).__name__}, not one of "
            f"{[cls.__name__ for cls in RESULTS[job.kind]]}"
        )
    fields = flat(result)
    clash = set(fields) & set(asdict(job))
    if clash:
        raise RuntimeError(f"runner {job.kind!r} returned job fields {sorted(clash)}")
    return fields


def run_job(job: Job, run: RunContext) -> dict:
    """Job -> record: the job's own fields, then what the runner measured. Never raises for a failure
    inside the job: that becomes status "failed"."""
    record, started, t0 = _header(job, run), now(), time.perf_counter()
    try:
        record.update(_result_fields(job, RUNNERS[job.kind](job, run)))
        error = trace = None
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        record["status"], error = "failed", f"{type(exc).__name__}: {one_line(exc)}"
        trace = traceback.format_exc(limit=6)
    outcome = Outcome(
        started=started,
        finished=now(),
        wall_seconds=time.perf_counter() - t0,
        status=record["status"],
        error=error,
        traceback=trace,
    )
    return {**record, **flat(outcome)}


def failed_record(job: Job, run: RunContext, error: str, started: str, seconds: float) -> dict:
    """The record of a job whose worker never returned one (killed, out of memory, node lost)."""
    outcome = Outcome(started=started, finished=now(), wall_seconds=seconds, status="failed", error=error)
    return {**_header(job, run), **flat(outcome)}


def placement_facts(record: dict, placement: Placement, peak: int, executor: str) -> dict:
    """What ran beside the job: `concurrency` is the most jobs of this run on its node while it ran,
    so `ran_alone` is a fact measured by the driver, not the job's declaration (`runs_alone`)."""
    return {
        **record,
        **flat(Placed(executor=executor, workers=placement.slots, concurrency=peak, ran_alone=peak == 1)),
    }


class InProcessPool:
    """One job at a time, in this process, with step-by-step progress."""

    name = "in-process"

    def __init__(self, run: RunContext):
        self.run = run
        threads = run.env.get("threads", 1)
        self.placement = Placement([Node("local", run.env.get("host", ""), threads)], threads, workers=1)
        self.progress: Callable[[Job], Callable] | None = None  # set by execute(): a per-job callback

    def take(self, queue: list[Job]) -> None:
        self.placement.take(queue)

    def running(self) -> list[Job]:
        return self.placement.running()

    def wait(self) -> list[tuple[Job, dict]]:
        job = self.running()[0]
        record = run_job(job, replace(self.run, progress=self.progress(job)) if self.progress else self.run)
        return [(job, placement_facts(record, self.placement, self.placement.finish(job), self.name))]

    def close(self) -> None:
        pass


class Progress:
    """Jobs done / running / queued and the running jobs' names; inside a job run in this process,
    its step and loss (at most twice a second)."""

    def __init__(self, enabled: bool):
        self.bar = tqdm(
            total=0, desc="jobs", unit="job", disable=not enabled, file=sys.stderr, dynamic_ncols=True
        )
        self.status = ""

    def update(self, total: int, done: int, running: list[Job], queued: int) -> None:
        self.bar.total = total
        self.bar.n = done
        names = "; ".join(job.label()[:60] for job in running)
        self.status = f"{len(running)} running, {queued} queued: {names}"
        self.bar.set_postfix_str(self.status)

    def steps(self, job: Job):
        last = [0.0]

        def update(step: int, total: int, loss: float) -> None:
            now = time.perf_counter()
            if now - last[0] > 0.5:
                last[0] = now
                self.bar.set_postfix_str(f"{self.status} step {step}/{total} loss {loss:.3g}")

        return update

    def note(self, line: str) -> None:
        tqdm.write(line, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


class Pool(Protocol):
    """What the driver loop needs of a pool: InProcessPool here, RayPool (suite/ray_executor.py), and the
    estimator's simulated one (suite/estimate.py)."""

    placement: Placement

    def take(self, queue: list[Job]) -> None: ...
    def running(self) -> list[Job]: ...
    def wait(self) -> list[tuple[Job, dict]]: ...


class RecordSink(Protocol):
    """What the driver loop needs of a store: the records so far, and where new ones go."""

    def records(self) -> list[dict]: ...
    def append(self, record: dict) -> None: ...


def execute(
    jobs: list[Job],
    store: RecordSink,
    pool: Pool,
    follow_ups=None,
    retry_failed: bool = False,
    show_progress: bool = True,
    starting=None,
) -> dict:
    """Run every job not already in the store on `pool`; `follow_ups(settled records by key)` may add
    jobs as results arrive (the seeds of a tuned group once its tuning points are in); `starting(queue)`
    hears which jobs will run, once, before the first starts. Returns counts."""
    latest = {r["key"]: r for r in store.records()}
    rerun = {key for key, r in latest.items() if retry_failed and r.get("status") == "failed"}
    settled = {key: r for key, r in latest.items() if key not in rerun}
    counts = {"total": 0, "skipped": 0, "ok": 0, "diverged": 0, "failed": 0}
    queue: list[Job] = []
    seen: set[str] = set()

    def add(new: list[Job]) -> None:
        for job in new:
            if job.key in seen:
                continue  # e.g. the tuning seed's run at the chosen learning rate: already a tuning point
            seen.add(job.key)
            counts["total"] += 1
            if job.key in latest and job.key not in rerun:
                counts["skipped"] += 1
            else:
                queue.append(job)

    add(jobs)
    if follow_ups:
        add(follow_ups(settled))
    if starting is not None:
        starting(list(queue))
    progress = Progress(show_progress)
    if isinstance(pool, InProcessPool) and show_progress:
        pool.progress = progress.steps
    done = 0
    try:
        while queue or pool.running():
            pool.take(queue)
            if not pool.running():  # placement checks every job up front: this is a lost node
                raise SuiteError(
                    f"no worker left that can run {queue[0].label()}; finished jobs are saved, "
                    "run the same command again to resume"
                )
            progress.update(done + len(pool.running()) + len(queue), done, pool.running(), len(queue))
            for job, record in pool.wait():
                store.append(record)  # the one writer: as each result arrives
                settled[job.key] = record
                done += 1
                counts[record["status"]] = counts.get(record["status"], 0) + 1
                if record["status"] == "failed":
                    progress.note(f"failed: {job.label()}: {record['error']}")
            if follow_ups:
                add(follow_ups(settled))
        progress.update(done, done, [], 0)
    finally:
        progress.close()
    return counts
