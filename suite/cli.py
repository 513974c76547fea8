"""Command line: python -m suite {list,describe,run,report,compare} (also installed as `lstm-bench`).

Every user error ends as one line on stderr, exit status 2, and nothing written to the store."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from suite.errors import SuiteError, one_line

if TYPE_CHECKING:  # imported where used: report and compare never import torch or Ray
    from suite.ray_executor import RayPool

EPILOG = "Profiles live in suite/profiles/*.toml; copy one and pass its path to --profile."


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m suite",
        description="lstm-bench: LSTMs and their variants against small Transformers.",
        epilog=EPILOG,
    )
    p.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="FILE_OR_MODULE",
        help="load tasks/models from a .py file or module (repeatable; also $LSTM_BENCH_PLUGINS)",
    )
    sub = p.add_subparsers(dest="command", required=True)

    ls = sub.add_parser("list", help="list registered tasks, models or profiles")
    ls.add_argument("what", choices=["tasks", "models", "profiles"])
    ls.add_argument(
        "--params", action="store_true", help="with tasks: every parameter, its default and meaning"
    )

    desc = sub.add_parser("describe", help="a task's parameters (default, meaning), metric and baseline")
    desc.add_argument("task")

    run = sub.add_parser(
        "run", help="run a profile's jobs (skips jobs already in the results directory)", epilog=EPILOG
    )
    run.add_argument(
        "--profile", default="smoke", help="profile name or path of a .toml file (default: smoke)"
    )
    run.add_argument("--task", action="append", help="only these tasks (repeatable or comma-separated)")
    run.add_argument("--model", action="append", help="only these models (repeatable or comma-separated)")
    run.add_argument("--experiment", action="append", help="only these experiments of the profile")
    run.add_argument("--seeds", help="number of seeds (3) or a list (0,1,2); default: the profile's")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    run.add_argument("--dtype", default="float32", help="float32, float64 or bfloat16 (default: float32)")
    run.add_argument(
        "--tf32",
        action="store_true",
        help="let float32 matrix products use TF32 on CUDA, for every model alike (cuBLAS, cuDNN, "
        "lstm-triton); default off: full float32 everywhere (recorded in every record's env)",
    )
    run.add_argument(
        "--keep-denormals",
        action="store_true",
        help="keep IEEE denormal floats (slow on x86 at high learning rates); default: flushed to zero on "
        "every compute thread, for every model alike (recorded in every record's env)",
    )
    run.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads per job (default: torch's choice; with --workers N, cores // N; "
        "on a cluster, 1)",
    )
    run.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="jobs at once on this machine, on a local Ray instance started for the run; at most "
        "the machine's cores (more is an error). 1 (the default) runs in this process",
    )
    run.add_argument(
        "--ray-address",
        metavar="HOST:PORT|auto",
        help="run the jobs on an existing Ray cluster (`ray start --head`); --workers then caps "
        "the jobs at once (default: every node's cores)",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="list the jobs (new and already finished) and estimate their time for 1 and N workers; "
        "runs a short calibration, writes nothing",
    )
    run.add_argument("--out", help="results directory (default: results/<profile>)")
    run.add_argument("--retry-failed", action="store_true", help="run again the jobs recorded as failed")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")

    rep = sub.add_parser("report", help="write the HTML report of a results directory")
    rep.add_argument("results_dir")
    rep.add_argument("--out", help="report directory (default: reports/<results dir name>)")

    cmp_ = sub.add_parser("compare", help="per (task, model) change between two results directories")
    cmp_.add_argument("a")
    cmp_.add_argument("b")
    cmp_.add_argument("--out", help="also write an HTML page here")
    cmp_.add_argument(
        "--fail-on-regression",
        action="store_true",
        help="exit 1 when a primary metric got significantly worse from A to B (Welch, Holm)",
    )
    return p


def cmd_list(args, registry) -> int:
    from suite.profiles import available_profiles, load_profile

    if args.what == "tasks":
        for name, cls in sorted(registry.tasks.items()):
            print(f"{name:20s} {cls.family:18s} {cls.description}")
            if args.params:
                print("\n".join(_parameter_lines(cls)))
    elif args.what == "models":
        for name, spec in sorted(registry.models.items()):
            print(f"{name:18s} {spec.family:15s} {spec.description}")
    else:
        for name in available_profiles():
            print(f"{name:10s} {load_profile(name).description}")
    return 0


def cmd_describe(args, registry) -> int:
    cls = registry.task(args.task)
    better = "higher" if cls.higher_is_better else "lower"
    print(f"{cls.name}: {cls.description}")
    print(
        f"family {cls.family}; metric {cls.primary_metric} ({better} is better); "
        f"from {registry.sources['task:' + cls.name]}"
    )
    print("parameters (a profile's [[experiment.task]] params = { name = value }; a list there is a sweep):")
    print("\n".join(_parameter_lines(cls)))
    return 0


def _parameter_lines(cls) -> list[str]:
    """One line per parameter of a task: name, default (TOML spelling), meaning (the task's param_help)."""
    import json

    def shown(p):
        if p.required:
            return "(required)"
        return "(unset)" if p.default is None else json.dumps(p.default)

    return [
        f"    {p.name:14s} {shown(p):16s} {p.help or '(no description: add it to the task param_help)'}"
        for p in cls.parameters()
    ]


def cmd_run(args, registry) -> int:
    import torch

    from suite.environment import environment, resolve_device, set_tf32
    from suite.executor import InProcessPool, RunContext, execute
    from suite.models.float_env import set_flush_denormals
    from suite.profiles import check_device, check_dtype, expand, load_profile
    from suite.store import ResultsStore

    # everything is validated, and Ray started, before the results directory is touched
    cluster_cuda = args.ray_address and args.device == "cuda"  # the GPUs may be on the cluster's nodes only
    device = torch.device("cuda") if cluster_cuda else resolve_device(check_device(args.device))
    dtype = check_dtype(args.dtype)
    set_tf32(args.tf32)  # before anything runs: one setting for every model of the run
    workers = _check_workers(args)
    if args.threads is not None:
        if args.threads < 1:
            raise SuiteError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    set_flush_denormals(not args.keep_denormals)  # after the thread count: the pool's threads are set too
    profile = load_profile(args.profile)
    plan = expand(
        profile, registry, seeds=args.seeds, tasks=args.task, models=args.model, experiments=args.experiment
    )
    shapes = _probe_tasks(plan.first_phase() + [g.template for g in plan.tuned], registry)

    out = Path(args.out or Path("results") / profile.name)
    if out.exists() and not out.is_dir():
        raise SuiteError(
            f"--out {out} is a file, not a directory; pass a directory for the results (e.g. results/mine)"
        )
    ResultsStore(out).records()  # from a newer lstm-bench: one line, before anything starts or is written
    if args.dry_run:
        from suite.estimate import dry_run

        return dry_run(
            plan,
            out,
            registry,
            device,
            dtype,
            workers=workers,
            threads=args.threads,
            retry_failed=args.retry_failed,
        )
    env = environment(device, dtype)
    run = RunContext(registry, device, dtype, env)
    if workers == 1 and not args.ray_address:
        pool: InProcessPool | RayPool = InProcessPool(run)
        how = f"{_n(env['threads'], 'thread')}, in this process"
    else:
        from suite.ray_executor import ray_pool

        every_shape = plan.first_phase() + [g.template for g in plan.tuned]
        pool = ray_pool(
            run,
            every_shape,
            address=args.ray_address,
            workers=workers,
            threads=args.threads,
            plugins=args.plugin,
        )
        p = pool.placement
        where = f"Ray cluster {args.ray_address}, {len(p.nodes)} nodes" if args.ray_address else "local Ray"
        how = f"{_n(p.slots, 'worker')} x {_n(p.threads, 'thread')} ({where}; timing jobs run alone)"
    # once the run is sure to start (a refusal above must not wait on a build, nor leave one half-done),
    # for the models of the jobs that will run (a resumed run with nothing left builds nothing)
    builds: list = []

    def start_builds(queue: list) -> None:
        if device.type == "cpu" and not args.ray_address:
            models = {job.model for job in queue}
            builds.extend(_start_builds([shape for shape in shapes if shape[0].name in models]))

    try:
        store = ResultsStore(out)
        store.open_for_append()
        total = len(plan.jobs) + sum(len(g.grid) + len(g.seeds) - 1 for g in plan.tuned)
        store.write_run_info(
            {
                "profile": profile.name,
                "profile_path": str(profile.path),
                "profile_data": profile.data,
                "command": sys.argv,
                "env": env,
                "jobs": total,
                "executor": how,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "plugins": args.plugin
                + [p for p in os.environ.get("LSTM_BENCH_PLUGINS", "").split(os.pathsep) if p],
            }
        )
        grow = sum(2 * g.extend for g in plan.tuned)
        print(
            f"profile {profile.name}: {total} jobs ({len(plan.tuned)} tuned groups"
            + (f", whose grids may grow by up to {grow} points in all" if grow else "")
            + f") on {env['device']} "
            f"({env['device_name']}), {dtype}, {how} -> {out}",
            file=sys.stderr,
        )
        start = time.perf_counter()
        # tuning points and fixed jobs first; each tuned group's seeds as soon as its own points are in
        counts = execute(
            plan.first_phase(),
            store,
            pool,
            plan.follow_ups,
            args.retry_failed,
            not args.no_progress,
            starting=start_builds,
        )
    finally:
        pool.close()
        for thread in builds:  # never leave a build half-done (its lock file would stall the next run)
            thread.join()
    print(
        f"done in {time.perf_counter() - start:.1f}s: {counts['ok']} ok, {counts['diverged']} diverged, "
        f"{counts['failed']} failed, {counts['skipped']} already finished (skipped)",
        file=sys.stderr,
    )
    print(out)
    return 1 if counts["failed"] else 0


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _check_workers(args) -> int | None:
    """--workers: at least 1; on this machine at most its cores (an error, not a clamp: a worker count the
    machine cannot hold would make every job's time a lie). None = the default (1, or a whole cluster)."""
    if args.workers is None:
        return None if args.ray_address else 1
    if args.workers < 1:
        raise SuiteError(f"--workers must be >= 1, got {args.workers}")
    if not args.ray_address:
        from suite.environment import local_cores

        if args.workers > local_cores():
            raise SuiteError(
                f"--workers {args.workers} is more than the {local_cores()} cores of this "
                f"machine; use --workers {local_cores()} or fewer (or --ray-address for a cluster)"
            )
    return args.workers


def _start_builds(shapes: list[tuple]) -> list:
    """Build what the run's models compile (the C++ loops) in this process, one thread per model, while
    Ray starts and the first jobs queue: a job that needs a build waits on its lock instead of building
    it alone on a core while the other waits behind a timing job. A model that fails here fails in its
    job, recorded (the job builds again). Each model is constructed on the meta device (thread-local) and
    given empty CPU storage: its initialisation then draws nothing from torch's global generator, which a
    job seeds and draws its initial weights from on the main thread meanwhile (constructed on the CPU the
    two interleaved, and a resumed run could start with other weights than the uninterrupted one)."""
    import contextlib
    import threading

    import torch

    from suite.models.capabilities import prepare
    from suite.models.sizing import build

    def one(model, spec, layers, options) -> None:
        with contextlib.suppress(Exception):
            with torch.device("meta"):
                built = build(model, spec, model.width_step * 8, layers, options)
            prepare(built.to_empty(device="cpu"))  # uninitialised: it only triggers the builds

    first = {shape[0].name: shape for shape in shapes}  # one build per model
    threads = [threading.Thread(target=one, args=shape, daemon=True) for shape in first.values()]
    for thread in threads:
        thread.start()
    return threads


def _probe_tasks(jobs, registry) -> list[tuple]:
    """Every task config is built and probed once before the results directory is touched, and every
    model of it built on the meta device (no memory): a model that cannot run the task (e.g. a learned
    position table shorter than the test sequences) stops the run here, in one line. Returns what was
    built: (model spec, task spec, layers, options)."""
    from suite.interfaces import Task
    from suite.models.sizing import probe_build
    from suite.registry import check_task_instance

    probed: dict[tuple, Task] = {}
    built: set[tuple] = set()
    shapes: list[tuple] = []
    for job in jobs:
        if job.kind not in ("train", "throughput"):
            continue
        where = (job.task, str(job.task_params))
        if where not in probed:
            try:
                probed[where] = task = registry.make_task(job.task, job.task_params, seed=0)
                check_task_instance(task)
            except (ValueError, TypeError) as exc:
                raise SuiteError(f"task {job.task!r} with {job.task_params}: {one_line(exc)}") from None
        shape = (*where, job.model, str(job.model_options), job.layers)
        if shape not in built:
            built.add(shape)
            model, spec = registry.model(job.model), probed[where].spec
            try:
                probe_build(model, spec, job.layers, job.model_options)
            except SuiteError:
                raise  # a refusal (e.g. a position table too short for the task): bad input, exit 2
            except Exception:
                continue
            shapes.append((model, spec, job.layers, job.model_options))
    return shapes


def cmd_report(args, registry) -> int:
    from suite.report.build import write_report
    from suite.store import open_existing

    store = open_existing(args.results_dir)
    out = Path(args.out) if args.out else Path("reports") / Path(args.results_dir).resolve().name
    path = write_report(store, out)
    print(path)
    return 0


def cmd_compare(args, registry) -> int:
    from suite.report.compare import (
        compare,
        format_text,
        protocol_differences,
        regressions,
        write_compare_html,
    )
    from suite.store import open_existing

    a, b = open_existing(args.a), open_existing(args.b)
    table, warnings = compare(a, b), protocol_differences(a, b)
    print(format_text(table, args.a, args.b, warnings))
    if args.out:
        print(write_compare_html(table, args.a, args.b, Path(args.out), warnings))
    worse = regressions(table)
    if args.fail_on_regression and not worse.empty:
        print(f"regression: {len(worse)} primary metric(s) significantly worse in B", file=sys.stderr)
        return 1
    return 0


COMMANDS = {
    "list": cmd_list,
    "describe": cmd_describe,
    "run": cmd_run,
    "report": cmd_report,
    "compare": cmd_compare,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        registry = None  # report and compare read records only: no torch, no plugins to import
        if args.command not in ("report", "compare"):
            from suite.registry import load_registry

            registry = load_registry(args.plugin)
        return COMMANDS[args.command](args, registry)
    except SuiteError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished jobs are saved; run the same command again to resume", file=sys.stderr)
        return 130
