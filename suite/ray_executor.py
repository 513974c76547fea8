"""Jobs on Ray: many at once on this machine (`--workers N`: a local Ray instance started for the run and
shut down after it) or on a cluster (`--ray-address HOST:PORT|auto`: the nodes of `ray start`).

The driver decides where each job runs (suite/placement.py: alone jobs take a whole node) and pins it
there with a node-affinity strategy and the resources it needs, so Ray never queues a job behind
another of the run. Each worker sets its torch threads, rebuilds the run's context (registry with the
same plugins, device, dtype) and calls the same `run_job` the in-process executor calls. Records come
back to the driver, the one writer of the store. A worker that dies (killed, out of memory, node lost)
is a `failed` record with the reason: tasks are never retried behind the driver's back.

Ray is imported here only, and only when parallelism is asked for.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, replace

import torch

from suite.environment import environment, git_commit, local_cores, set_tf32
from suite.errors import SuiteError, one_line
from suite.executor import RunContext, failed_record, placement_facts, run_job
from suite.jobs import Job
from suite.models.float_env import set_flush_denormals
from suite.placement import Node, Placement
from suite.records import now

# Workers of a local instance inherit the driver's environment; a cluster's get these from the driver.
FORWARDED_ENV = ("LSTM_BENCH_", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
OBJECT_STORE_BYTES = 128 * 2**20  # records are small; Ray's default takes 30% of the memory


def import_ray():
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # no usage reporting, before Ray reads it
    try:
        import ray
    except Exception as exc:  # not installed, or broken: only parallel runs need it
        raise SuiteError(
            f"--workers > 1 and --ray-address need Ray, which failed to import ({type(exc).__name__}: "
            f"{one_line(exc)}); pip install 'ray>=2.30', or run with --workers 1"
        ) from exc
    return ray


def _reachable(address: str) -> str:
    """HOST:PORT of the cluster, checked in seconds (ray.init retries an unreachable one for minutes)."""
    try:
        from ray._private.services import canonicalize_bootstrap_address

        resolved = canonicalize_bootstrap_address(address) or address
    except ConnectionError:
        raise SuiteError(
            f"--ray-address {address}: no running Ray cluster found; start one with "
            "`ray start --head`, or pass HOST:PORT of its head"
        ) from None
    except Exception:  # private API moved: check the address as given
        resolved = address
    host, _, port = resolved.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
            return resolved
    except (OSError, ValueError) as exc:
        raise SuiteError(
            f"--ray-address {address}: cannot reach a Ray head at {resolved} ({one_line(exc)}); check "
            "the address `ray start --head` printed, and that this machine can reach it"
        ) from None


def start_ray(address: str | None, cores: int):
    """A local instance with `cores` CPUs (address None), or a connection to a cluster. Errors: one line."""
    ray = import_ray()
    quiet = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    try:
        if address is None:
            ray.init(address="local", num_cpus=cores, object_store_memory=OBJECT_STORE_BYTES, **quiet)
        else:
            env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
            ray.init(address=_reachable(address), runtime_env={"env_vars": env}, **quiet)
    except SuiteError:
        raise
    except Exception as exc:
        ray.shutdown()
        where = f"connect to the Ray cluster at {address}" if address else "start a local Ray instance"
        raise SuiteError(f"failed to {where}: {type(exc).__name__}: {one_line(exc)}") from None
    return ray


def cluster_nodes(ray) -> list[Node]:
    nodes = [
        Node(
            n["NodeID"],
            n.get("NodeManagerHostname", n.get("NodeManagerAddress", "")),
            int(n["Resources"].get("CPU", 0)),
            int(n["Resources"].get("GPU", 0)),
        )
        for n in ray.nodes()
        if n.get("Alive")
    ]
    return [n for n in nodes if n.cpus > 0]


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker needs to rebuild the run's context: plain data (plugin classes do not pickle)."""

    plugins: tuple[str, ...]
    device: str
    dtype: str
    commit: str  # the driver's: a node on other code fails its jobs rather than mixing results
    tf32: bool = False  # the driver's set_tf32: every model of the run alike
    flush_denormals: bool = True  # the driver's set_flush_denormals, likewise


_CONTEXTS: dict[WorkerSetup, RunContext] = {}


def run_in_worker(job: Job, setup: WorkerSetup, threads: int) -> dict:
    """The Ray task: set the job's thread count, then the same run_job as in-process."""
    torch.set_num_threads(threads)
    set_tf32(setup.tf32)
    set_flush_denormals(setup.flush_denormals)  # after the thread count: the pool's threads are set too
    if setup not in _CONTEXTS:  # a worker process is reused for many jobs: load plugins once
        from suite.registry import load_registry

        registry = load_registry(list(setup.plugins))
        _CONTEXTS[setup] = RunContext(registry, torch.device(setup.device), setup.dtype, {})
    run = _CONTEXTS[setup]
    run = replace(run, env=environment(run.device, setup.dtype))  # this node, these threads
    if run.env["commit"].split("+")[0] != setup.commit.split("+")[0]:  # uncommitted edits: not comparable
        raise RuntimeError(
            f"node {run.env['host']} runs lstm-bench commit {run.env['commit']}, the driver "
            f"{setup.commit}: install the same checkout on every node"
        )
    return run_job(job, run)


class RayPool:
    name = "ray"

    def __init__(self, ray, run: RunContext, setup: WorkerSetup, placement: Placement):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.ray, self.run, self.setup, self.placement = ray, run, setup, placement
        self.affinity = NodeAffinitySchedulingStrategy
        self.task = ray.remote(max_retries=0)(run_in_worker)  # a dead worker is a failed record, not a retry
        self.refs: dict = {}  # ObjectRef -> (job, started timestamp, perf_counter)

    def take(self, queue: list[Job]) -> None:
        for job, node in self.placement.take(queue):
            need = self.placement.demand(job, node)
            ref = self.task.options(
                num_cpus=need.cpus, num_gpus=need.gpus, scheduling_strategy=self.affinity(node.id, soft=False)
            ).remote(job, self.setup, need.threads)
            self.refs[ref] = (job, now(), time.perf_counter())

    def running(self) -> list[Job]:
        return self.placement.running()

    def wait(self) -> list[tuple[Job, dict]]:
        ready: list = []
        while not ready:  # short waits keep Ctrl-C responsive
            ready, _ = self.ray.wait(list(self.refs), num_returns=1, timeout=1.0)
        ready, _ = self.ray.wait(list(self.refs), num_returns=len(self.refs), timeout=0)
        out = []
        for ref in ready:
            job, started, t0 = self.refs.pop(ref)
            try:
                record = self.ray.get(ref)
            except self.ray.exceptions.RayError as exc:
                record = failed_record(job, self.run, _death(exc), started, time.perf_counter() - t0)
                self._forget_dead_nodes()
            out.append((job, placement_facts(record, self.placement, self.placement.finish(job), self.name)))
        return out

    def _forget_dead_nodes(self) -> None:
        alive = {n.id for n in cluster_nodes(self.ray)}
        self.placement.nodes = [n for n in self.placement.nodes if n.id in alive or n.running]

    def close(self) -> None:
        self.ray.shutdown()


def _death(exc: Exception) -> str:
    """One line on why a worker returned no record."""
    cause = getattr(exc, "cause", None)
    if cause is not None:  # an exception raised in the task outside run_job (e.g. plugins failed to load)
        return f"{type(cause).__name__}: {one_line(cause)}"
    return f"worker died ({type(exc).__name__}): {one_line(exc)}"[:500]


def ray_pool(
    run: RunContext,
    jobs: list[Job],
    *,
    address: str | None,
    workers: int | None,
    threads: int | None,
    plugins: list[str],
) -> RayPool:
    """Start (or connect to) Ray and place the run on its nodes. Local: `workers` jobs at once, each on
    cores // workers threads unless --threads says; alone jobs at the run's own thread count, as with
    --workers 1. Cluster: every node's cores in shares of --threads (default 1), alone jobs on all of
    a node's cores; --workers caps the jobs at once. Anything that cannot run stops here, in one line."""
    cores = local_cores()
    if address is None:
        workers = workers or 1
        threads = threads or max(1, cores // workers)
        if threads * workers > cores:
            raise SuiteError(
                f"--workers {workers} x --threads {threads} needs {threads * workers} cores, this "
                f"machine has {cores}; lower one of them"
            )
    ray = start_ray(address, cores)
    try:
        placement = Placement(
            cluster_nodes(ray),
            threads or 1,
            workers or 10**9,
            gpu=run.device.type == "cuda",
            alone_threads=run.env["threads"] if address is None else threads,
        )
        placement.check(jobs)
    except BaseException:
        ray.shutdown()
        raise
    setup = WorkerSetup(
        tuple(str(os.path.abspath(p)) if os.path.exists(p) else p for p in plugins),
        run.device.type,
        run.dtype,
        git_commit(),
        bool(run.env.get("tf32", False)),
        run.env.get("flush_denormals") is not False,
    )
    return RayPool(ray, run, setup, placement)
