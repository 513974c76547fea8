"""Which job runs where, and when: the scheduling policy shared by every executor (in-process, Ray on
one machine, Ray on a cluster) and by the dry run's time estimate.

A node is one machine. A job that `runs_alone` (its result is a time) takes a whole node: it starts only
on a node where nothing of the run is running, and nothing starts beside it. While one waits, a node is
set aside for it (drained: no new job starts there), so it is never starved. Every other job takes
`threads` cores of a node (and one GPU when the run's device is CUDA); a node holds as many of those at
once as its cores allow, and the run at most `workers` in all. Alone jobs go first: at the start every
node is idle, so they cost no drain.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from suite.errors import SuiteError
from suite.jobs import Job


@dataclass
class Node:
    id: str
    host: str
    cpus: int
    gpus: int = 0
    running: dict[str, Job] = field(default_factory=dict)  # key -> job

    @property
    def idle(self) -> bool:
        return not self.running

    @property
    def busy_alone(self) -> bool:
        return any(job.runs_alone for job in self.running.values())


@dataclass(frozen=True)
class Demand:
    """What one job asks of its node (the Ray resources it is submitted with)."""

    cpus: int
    gpus: int
    threads: int  # torch threads inside the job


class Placement:
    def __init__(
        self,
        nodes: list[Node],
        threads: int,
        workers: int,
        gpu: bool = False,
        alone_threads: int | None = None,
    ):
        """threads: torch threads (= cores) of a job that shares its node; alone_threads: of one that
        runs alone (default: the node's cores); workers: most jobs at once in the whole run."""
        self.nodes, self.threads, self.workers, self.gpu = nodes, threads, workers, gpu
        self.alone_threads = alone_threads
        self.draining: list[str] = []  # node ids set aside for waiting alone jobs, in order
        self.peak: dict[str, int] = {}  # job key -> most jobs running on its node while it ran

    # ---- what a job needs ---------------------------------------------------------------------------
    def demand(self, job: Job, node: Node) -> Demand:
        gpus = (node.gpus if job.runs_alone else 1) if self.gpu else 0
        if job.runs_alone:
            return Demand(node.cpus, gpus, self.alone_threads or node.cpus)
        return Demand(self.threads, gpus, self.threads)

    def fits(self, job: Job, node: Node) -> bool:
        """Whether the node could ever hold the job (not whether it is free now)."""
        if self.gpu and node.gpus < 1:
            return False
        return job.runs_alone or self.threads <= node.cpus

    def check(self, jobs: list[Job]) -> None:
        """Every job fits some node, or the run stops now (Ray would wait forever for the resources)."""
        if self.gpu and not any(node.gpus for node in self.nodes):
            raise SuiteError(
                "the run's device is cuda but no node of the Ray cluster has a GPU; "
                "use --device cpu, or add a GPU node (ray start --num-gpus N)"
            )
        if any(not job.runs_alone for job in jobs) and not any(self.threads <= n.cpus for n in self.nodes):
            biggest = max(n.cpus for n in self.nodes)
            raise SuiteError(
                f"a job asks for {self.threads} cores (--threads) but the largest node has "
                f"{biggest}; use --threads {biggest} or fewer"
            )

    @property
    def slots(self) -> int:
        """Jobs that can run at once (sharing jobs, the whole run)."""
        per_node = sum(self._node_slots(n) for n in self.nodes)
        return max(1, min(self.workers, per_node))

    def _node_slots(self, node: Node) -> int:
        slots = node.cpus // self.threads
        return min(slots, node.gpus) if self.gpu else slots

    def running(self) -> list[Job]:
        return [job for node in self.nodes for job in node.running.values()]

    # ---- choosing ---------------------------------------------------------------------------------------
    def take(self, queue: list[Job]) -> list[tuple[Job, Node]]:
        """Remove from `queue` the jobs that start now, each with its node (alone jobs first)."""
        started: list[tuple[Job, Node]] = []
        waiting_alone = [job for job in queue if job.runs_alone]
        for job in waiting_alone:
            node = self._idle_node(job)
            if node is None:
                break
            started.append((job, self._start(job, node)))
        waiting = sum(1 for job in queue if job.runs_alone) - sum(1 for job, _ in started if job.runs_alone)
        self._set_aside(waiting)
        for job in [j for j in queue if not j.runs_alone]:
            if len(self.running()) >= self.slots:
                break
            node = self._free_node(job)
            if node is None:
                break
            started.append((job, self._start(job, node)))
        taken = {job.key for job, _ in started}
        queue[:] = [job for job in queue if job.key not in taken]
        return started

    def finish(self, job: Job) -> int:
        """The job is done; returns the most jobs that ran on its node while it ran (1 = alone)."""
        for node in self.nodes:
            if node.running.pop(job.key, None) is not None:
                break
        return self.peak.pop(job.key, 1)

    def _idle_node(self, job: Job) -> Node | None:
        # a node set aside for alone jobs first, then any idle one
        ordered = [n for i in self.draining for n in self.nodes if n.id == i] + self.nodes
        return next((n for n in ordered if n.idle and self.fits(job, n)), None)

    def _set_aside(self, waiting: int) -> None:
        """Keep one drained node per alone job still waiting: the ones with the fewest jobs running."""
        free = {n.id for n in self.nodes if not n.busy_alone}
        self.draining = [i for i in self.draining if i in free][:waiting]
        candidates = sorted(
            (n for n in self.nodes if n.id not in self.draining and not n.busy_alone),
            key=lambda n: len(n.running),
        )
        self.draining += [n.id for n in candidates[: waiting - len(self.draining)]]

    def _free_node(self, job: Job) -> Node | None:
        for node in self.nodes:
            if node.id in self.draining or node.busy_alone or not self.fits(job, node):
                continue
            if len(node.running) < self._node_slots(node):
                return node
        return None

    def _start(self, job: Job, node: Node) -> Node:
        if node.id in self.draining and job.runs_alone:
            self.draining.remove(node.id)
        node.running[job.key] = job
        count = len(node.running)
        for key in node.running:
            self.peak[key] = max(self.peak.get(key, 1), count)
        return node
