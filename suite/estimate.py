"""How long a run will take, before it starts (`python -m suite run ... --dry-run`).

Costs are measured on this machine, at the thread count each job would run with:
  * from earlier records of this commit on this host (the results directory and its siblings): a
    training job's seconds per step (train_seconds / steps_done) and its overhead per evaluation (the
    rest of its wall time, set-up included, over its evaluations), and, for a recipe that stops early
    (until_solved, patience), the median share of its step cap at which such runs stopped; a
    measurement job's wall time;
  * else from a short calibration: the task and model built, a few timed optimizer steps (the batch
    included), one evaluation; a measurement job runs once at its two smallest points per model and
    larger points are extrapolated linearly (an upper bound: a timer's minimum run time does not grow).
A job that may stop early and has no such record is costed at its cap: an upper bound.
The schedule is simulated by the executors' own driver loop and placement policy (suite/executor.py,
suite/placement.py) with a simulated clock: alone jobs one at a time, tuned groups' seeds once their
points are in. Jobs running side by side are costed as if each had its cores to itself.
"""

from __future__ import annotations

import heapq
import json
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from suite import harness
from suite.environment import DTYPES, environment, local_cores
from suite.errors import SuiteError
from suite.executor import RunContext, build_job_model, execute, prepare_model, run_job, task_facts
from suite.jobs import Job, Recipe
from suite.models.kernel_plan import measuring_seconds
from suite.placement import Node, Placement
from suite.profiles import Plan
from suite.store import ResultsStore
from suite.training_step import TrainStep

CALIBRATION_STEPS = 6


# ---- what a job costs -----------------------------------------------------------------------------------


def _stops_early(cfg: Recipe) -> bool:
    return cfg.until_solved or cfg.patience > 0


def _signature(job: Job) -> str:
    """Everything a job's cost per step depends on (not its seed, learning rate or step count)."""
    sizes = {k: job.recipe.get(k) for k in ("batch_size", "eval_batch_size", "step_mode")}
    fields = (
        job.kind,
        job.task,
        job.task_params,
        job.model,
        job.model_options,
        job.param_budget,
        job.width,
        job.layers,
        sizes,
        job.extra if job.kind != "train" else None,
    )
    return json.dumps(fields, sort_keys=True, default=str)


@dataclass
class TrainCost:
    step: float  # seconds per optimizer step, the batch included
    per_eval: float  # seconds per evaluation (from records: the set-up spread over them)
    setup: float = 0.0  # task and model built (calibration)
    stop_share: float | None = None  # runs that may stop early: median steps_done / cap of earlier ones

    def seconds(self, job: Job) -> float:
        cfg = Recipe.from_dict(job.recipe)
        steps = cfg.steps if cfg.seconds is None else min(cfg.steps, int(cfg.seconds / max(self.step, 1e-9)))
        if _stops_early(cfg) and self.stop_share is not None:
            steps = max(1, math.ceil(steps * self.stop_share))
        evals = math.ceil(steps / cfg.eval_every) + 1  # the last one and the test split
        busy = cfg.seconds if cfg.seconds is not None else steps * self.step  # a time budget: steps only
        return self.setup + busy + evals * self.per_eval


class Costs:
    """Seconds per job at one thread count: earlier records first, then a calibration."""

    def __init__(self, run: RunContext, records: list[dict], threads: int):
        self.run, self.threads = run, threads
        self.train_costs: dict[str, TrainCost] = {}
        self.measured: dict[str, float] = {}  # signature -> wall seconds
        self.origin: dict[str, str] = {}  # signature -> "records" | "calibration" | "extrapolated"
        self.calibration_seconds = 0.0
        self._learn(records)

    def _learn(self, records: list[dict]) -> None:
        host, commit = self.run.env.get("host"), self.run.env.get("commit")
        # records of other code are no hint (a faster kernel halves a job): only this commit's count
        other_code = lambda env: bool(commit and env.get("commit") and env["commit"] != commit)
        steps: dict[str, list] = {}
        walls: dict[str, list] = {}
        shares: dict[str, list] = {}
        for r in records:
            env = r.get("env") or {}
            if (
                r.get("status") != "ok"
                or env.get("host") != host
                or env.get("threads") != self.threads
                or env.get("dtype") != self.run.dtype
                or env.get("device") != self.run.device.type
                or other_code(env)
            ):
                continue
            try:
                job = Job(**{k: r[k] for k in Job.__dataclass_fields__})
            except (KeyError, TypeError):
                continue
            sig = _signature(job)
            wall = (r.get("wall_seconds") or 0.0) - (r.get("compile_seconds") or 0.0)
            if job.kind == "train" and r.get("steps_done"):
                evals = len(r.get("curve") or []) + 1
                steps.setdefault(sig, []).append(
                    (r["train_seconds"] / r["steps_done"], max(0.0, wall - r["train_seconds"]) / evals)
                )
                cfg = Recipe.from_dict(job.recipe)
                if _stops_early(cfg) and cfg.seconds is None:
                    shares.setdefault(sig, []).append(min(1.0, r["steps_done"] / cfg.steps))
            elif job.kind != "train":
                walls.setdefault(sig, []).append(wall)
        for sig, pairs in steps.items():
            self.train_costs[sig] = TrainCost(
                statistics.median(p[0] for p in pairs),
                statistics.median(p[1] for p in pairs),
                stop_share=statistics.median(shares[sig]) if sig in shares else None,
            )
        self.measured.update({sig: statistics.median(w) for sig, w in walls.items()})
        self.learned = set(self.train_costs) | set(self.measured)

    @property
    def sources(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for origin in self.origin.values():
            counts[origin] = counts.get(origin, 0) + 1
        return counts

    def seconds(self, job: Job, plan_jobs: list[Job]) -> float:
        sig = _signature(job)
        if sig in self.learned:
            self.origin[sig] = "records"
        if job.kind == "train":
            if sig not in self.train_costs:
                self.train_costs[sig], self.origin[sig] = self._calibrate_train(job), "calibration"
            return self.train_costs[sig].seconds(job)
        if sig not in self.measured:
            self.measured[sig] = self._extrapolate(job, plan_jobs)
            self.origin.setdefault(sig, "calibration")
        return self.measured[sig]

    def _calibrate_train(self, job: Job) -> TrainCost:
        self._say(job)
        start = time.perf_counter()
        torch.set_num_threads(self.threads)
        run, dtype = self.run, DTYPES[self.run.dtype]
        task = run.registry.make_task(job.task, job.task_params, seed=job.seed)
        task_facts(job, task)  # a baseline is paid once per task config and process: not a per-job cost
        t0 = time.perf_counter()
        model, _ = build_job_model(job, task.spec, run)
        setup = time.perf_counter() - t0
        prepare_model(model)  # a compile is paid once per machine (cached on disk)
        cfg = Recipe.from_dict(job.recipe)
        step = TrainStep(model, task.loss, cfg)  # the step harness.fit trains with, in the job's step mode
        gen = torch.Generator().manual_seed(0)
        times = []
        model.train()
        first = harness.to_device(task.train_batch(cfg.batch_size, gen), run.device, dtype)
        step.warm_up(first)  # a compiled step compiles once per process and shapes: not a per-step cost
        for _ in range(CALIBRATION_STEPS + 1):  # the first is warm-up
            t0 = time.perf_counter()
            batch = harness.to_device(task.train_batch(cfg.batch_size, gen), run.device, dtype)
            drawn = time.perf_counter() - t0
            times.append(drawn + _steady(lambda b=batch: step(b, cfg.lr)))
        model.eval()
        predict = harness.predictor(model, run.device, dtype)
        per_eval = _steady(lambda: task.evaluate(predict, "val", cfg.eval_batch_size, run.device))
        self.calibration_seconds += time.perf_counter() - start
        return TrainCost(statistics.median(times[1:]), per_eval, setup)

    def _say(self, job: Job) -> None:
        print(f"  calibrating at {self.threads} thread(s): {job.label()}", file=sys.stderr, flush=True)

    def _extrapolate(self, job: Job, plan_jobs: list[Job]) -> float:
        """A measurement job: run its two smallest points (per kind and model), fit a line in the point."""
        if job.kind == "throughput":
            return self._run(job)
        axis = next(iter(job.extra))
        same = sorted(
            {
                j.extra[axis]
                for j in plan_jobs
                if j.kind == job.kind
                and j.model == job.model
                and _signature(replace(j, extra={})) == _signature(replace(job, extra={}))
            }
        )
        points = same[:2]
        costs = [self._run(replace(job, extra={axis: p})) for p in points]
        if len(points) < 2:
            return costs[0]
        slope = max(0.0, (costs[1] - costs[0]) / (points[1] - points[0]))
        if job.extra[axis] not in points:
            self.origin[_signature(job)] = "extrapolated"
        return costs[0] + slope * (job.extra[axis] - points[0])

    def _run(self, job: Job) -> float:
        sig = _signature(job)
        if sig not in self.measured:
            self._say(job)
            torch.set_num_threads(self.threads)
            planning = measuring_seconds()  # subtracted, not timed again as _steady does: that is a whole job
            record = run_job(job, self.run)
            planning = measuring_seconds() - planning
            self.origin[sig] = "calibration"
            self.calibration_seconds += record["wall_seconds"]
            self.measured[sig] = record["wall_seconds"] - (record.get("compile_seconds") or 0.0) - planning
        return self.measured[sig]


def _steady(call) -> float:
    """Seconds of one call; a call that measured a kernel plan (suite/models/kernel_plan.py) is timed again.
    A layer shape is measured once per machine, so a cold plan cache is no cost of the jobs being estimated
    (a task of random lengths met a new shape at nearly every calibration step: 48x the steady step), and
    the call right after a measurement also finds cold caches (2-4x a steady call at 20k parameters)."""
    for _ in range(2):
        planned, t0 = measuring_seconds(), time.perf_counter()
        call()
        seconds = time.perf_counter() - t0
        if measuring_seconds() == planned:
            break
    return seconds


# ---- the schedule, simulated --------------------------------------------------------------------------


class _Memory:
    """A results store in memory: what is already finished, plus the simulation's records."""

    def __init__(self, records: list[dict]):
        self._records = list(records)

    def records(self) -> list[dict]:
        return self._records

    def append(self, record: dict) -> None:
        self._records.append(record)


class SimulatedPool:
    """The driver loop's pool with a simulated clock: a job finishes `cost(job)` seconds after it starts."""

    def __init__(self, placement: Placement, cost):
        self.placement, self.cost = placement, cost
        self.clock = 0.0
        self.heap: list[tuple[float, int, Job]] = []
        self.started: list[Job] = []

    def running(self) -> list[Job]:
        return self.placement.running()

    def take(self, queue: list[Job]) -> None:
        for job, _ in self.placement.take(queue):
            self.started.append(job)
            heapq.heappush(self.heap, (self.clock + self.cost(job), len(self.started), job))

    def wait(self) -> list[tuple[Job, dict]]:
        self.clock, _, job = heapq.heappop(self.heap)
        self.placement.finish(job)
        # a stand-in result: every tuning point scores the same, so the smallest learning rate is chosen
        return [
            (job, {"key": job.key, **asdict(job), "status": "ok", "best_val": 0.0, "higher_is_better": False})
        ]


def simulate(
    plan: Plan,
    records: list[dict],
    cost,
    nodes: int,
    cpus: int,
    threads: int,
    workers: int,
    retry_failed: bool,
) -> SimulatedPool:
    placement = Placement([Node(str(i), "", cpus) for i in range(nodes)], threads, workers)
    pool = SimulatedPool(placement, cost)
    execute(plan.first_phase(), _Memory(records), pool, plan.follow_ups, retry_failed, show_progress=False)
    return pool


def _only(plan: Plan, experiment: str) -> Plan:
    return Plan(
        [j for j in plan.jobs if j.experiment == experiment],
        [g for g in plan.tuned if g.template.experiment == experiment],
    )


def _records_near(out: Path) -> list[dict]:
    """Earlier records on this machine: the results directory and its siblings."""
    dirs = {out} | ({p for p in out.parent.iterdir() if p.is_dir()} if out.parent.is_dir() else set())
    return [r for d in sorted(dirs) for r in _records_or_none(d)]


def _records_or_none(path: Path) -> list[dict]:
    """A sibling written by a newer lstm-bench is no hint about costs here (`out` itself is read again,
    and stops the dry run, in dry_run)."""
    try:
        return ResultsStore(path).records()
    except SuiteError:
        return []


def _fmt(seconds: float) -> str:
    seconds = round(seconds)
    h, m, s = seconds // 3600, seconds % 3600 // 60, seconds % 60
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def dry_run(
    plan: Plan,
    out: Path,
    registry,
    device,
    dtype: str,
    *,
    workers: int | None,
    threads: int | None,
    retry_failed: bool,
) -> int:
    cores = local_cores()
    n = workers if workers and workers > 1 else cores
    default_threads = torch.get_num_threads()
    modes = {1: threads or default_threads, n: threads or max(1, cores // n)}
    done_records = ResultsStore(out).records()
    near = _records_near(out)
    print(
        f"dry run: estimating from per-step costs on this machine ({cores} cores); a calibration runs for "
        "configurations without earlier records...",
        file=sys.stderr,
    )
    costs = {}
    for t in sorted(set(modes.values())):
        run = RunContext(registry, device, dtype, environment(device, dtype) | {"threads": t})
        costs[t] = Costs(run, near, t)
    all_jobs = plan.first_phase() + [j for g in plan.tuned for j in g.jobs(g.grid[0])]

    def cost_at(t):  # a job that runs alone runs at the run's own thread count, as with one worker
        return lambda job: costs[modes[1] if job.runs_alone else t].seconds(job, all_jobs)

    runs = {
        w: simulate(plan, done_records, cost_at(t), 1, cores, t if w > 1 else cores, w, retry_failed)
        for w, t in modes.items()
    }
    torch.set_num_threads(default_threads)
    serial = runs[1]
    done = {r["key"]: r for r in done_records if r.get("status") != "failed" or not retry_failed}
    listed = _listing(plan, done)
    print(
        f"state  {'1 worker':>9s}  {f'{n} workers' if n > 1 else '':>9s}  job (its own time at each "
        "mode's thread count)"
    )
    for job, state in listed:
        each = [_fmt(cost_at(t)(job)) if state == "new" else "" for t in (modes[1], modes[n])][: 1 + (n > 1)]
        print(f"{state:5s}  " + "  ".join(f"{x:>9s}" for x in each) + f"  {job.experiment}: {job.label()}")
    experiments = list(dict.fromkeys(j.experiment for j in all_jobs))
    head = [f"1 worker ({modes[1]} thr)"] + ([f"{n} workers ({modes[n]} thr)"] if n > 1 else [])
    print(
        f"\n{'experiment':16s} {'jobs':>6s} {'new':>6s} {'done':>6s}  " + "  ".join(f"{h:>20s}" for h in head)
    )
    for exp in experiments + ["total"]:
        sub = plan if exp == "total" else _only(plan, exp)
        mine = [(j, s) for j, s in listed if exp == "total" or j.experiment == exp]
        new = sum(s == "new" for _, s in mine)
        times = [
            runs[w].clock
            if exp == "total"
            else simulate(
                sub, done_records, cost_at(t), 1, cores, t if w > 1 else cores, w, retry_failed
            ).clock
            for w, t in modes.items()
        ]
        print(
            f"{exp:16s} {len(mine):6d} {new:6d} {len(mine) - new:6d}  "
            + "  ".join(f"{_fmt(x):>20s}" for x in times)
        )
    cal = sum(c.calibration_seconds for c in costs.values())
    for t, c in costs.items():
        print(f"costs at {t} thread(s), configurations by source: {c.sources}")
    print(
        f"{_fmt(cal)} spent calibrating. Jobs side by side are costed as if each had its cores to itself; "
        f"Ray's start-up is not included. Nothing written; {len(serial.started)} jobs would run -> {out}"
    )
    return 0


def _listing(plan: Plan, done: dict[str, dict]) -> list[tuple[Job, str]]:
    """Every job the command would run, 'new' or 'done'. A tuned group's seeds are at the learning rate
    its tuning chose when its points are in, else at a stand-in (the cost does not depend on it)."""
    out: list[tuple[Job, str]] = []
    chosen = plan.follow_ups(done)
    later = [
        job
        for group in plan.tuned
        for job in group.jobs(group.grid[0])
        if not all(j.key in done for j in group.tuning_jobs())
    ]
    for job in dict((j.key, j) for j in plan.first_phase() + chosen + later).values():
        out.append((job, "done" if job.key in done else "new"))
    return out
