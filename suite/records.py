"""The record: one flat JSON object per finished job in records.jsonl, declared here once.

A record is the job's own fields (suite.jobs.Job), a `Header` (its key, the model's family, where it
ran), what the job kind's runner measured (`TrainResult`, `ThroughputResult`, `ScalingResult`,
`LatencyResult`, or `Skipped`), how it ended (`Outcome`) and what ran beside it (`Placed`). Runners
build their result as one of these dataclasses and the executor flattens it with `flat()`, so a key
that is not declared here fails when the record is made, never silently in the report.

Versions: records carry `record_version`; `upgrade` reads every older one in today's shape (keeping the
version it was written with). Version 1 (no such field) named the training recipe `train` (now
`recipe`). Version 2 named a scaling point's median training step `train_seconds`, the name of a
training run's total loop time (now `train_step_seconds`, as in a throughput record), and reported
wikitext2's bits per *word* as `bpc` (now `bpw`). A record written by a newer version stops the reader
with one line saying which version it needs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, fields

from suite.errors import SuiteError
from suite.jobs import Job

RECORD_VERSION = 3


# ---- the common part: every record has it -------------------------------------------------------


@dataclass(kw_only=True)
class Header:
    """Names the job exactly (besides the job's own fields) and where it ran."""

    record_version: int = RECORD_VERSION
    key: str  # Job.key: the hash of the job's fields
    model_family: str | None
    implementation: str | None
    architecture: str  # twins (one function, several implementations) share it
    env: dict  # suite.environment.environment(): versions, device, threads, commit, host


@dataclass(kw_only=True)
class Outcome:
    """How the job ended, written by the executor around the runner's result."""

    started: str
    finished: str
    wall_seconds: float
    status: str  # the runner's "ok" / "diverged" / "skipped", or "failed" (raised, or its worker died)
    error: str | None = None
    traceback: str | None = None


def now() -> str:
    """The time as Outcome.started and Outcome.finished hold it: UTC, ISO 8601, microseconds."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


@dataclass(kw_only=True)
class Placed:
    """What ran beside the job, measured by the driver (see executor.placement_facts)."""

    executor: str
    workers: int
    concurrency: int  # the most jobs of this run on its node while it ran
    ran_alone: bool


# ---- parts of a runner's result -----------------------------------------------------------------


@dataclass(kw_only=True)
class Result:
    status: str = "ok"


@dataclass(kw_only=True)
class Skipped(Result):
    """A job the model cannot do (e.g. latency without incremental decoding): recorded with why."""

    status: str = "skipped"
    skip_reason: str


@dataclass(kw_only=True)
class ModelFacts:
    params: int
    backbone_params: int  # what the size budget is matched on
    lookup_params: int  # embeddings, position tables, output head
    model_width: int
    backend: str  # the kernel that really ran
    compile_seconds: float | None  # build time paid by this job (None: nothing compiles)
    compile_reused: bool | None
    positions: str | None = None  # how an attention model knows positions (capabilities.positions)


@dataclass(kw_only=True)
class FlopCount:
    """suite.measure.flops.count_flops: per input position, or why there is no count."""

    flops_per_token: float | None
    train_flops_per_token: float | None
    flops_rule: str | None = None
    flops_error: str | None = None


@dataclass(kw_only=True)
class StepRate:
    """suite.measure.roofline.step_rate: the whole training step (forward, backward, clipping, AdamW)
    against this machine's GEMM rate at the same thread count, measured in the same process."""

    step_flops_per_s: float | None  # train_flops_per_token x tokens per second of the whole step
    gemm_flops_per_s: float | None  # a 2048² torch.mm (the run's dtype, device, threads), this process
    gemm_threads: int | None
    step_share_of_gemm: float | None  # step_flops_per_s / gemm_flops_per_s


@dataclass(kw_only=True)
class TaskFacts:
    seq_len: int
    task_family: str
    primary_metric: str
    higher_is_better: bool


# ---- what each job kind measured ----------------------------------------------------------------


@dataclass(kw_only=True)
class FitResult(Result):
    """suite.harness.fit: one training run (status "ok" or "diverged")."""

    forecast_example: dict | None  # forecasting: the first test window, for the report's plot
    divergence_reason: str | None
    diverged_step: int | None
    test: dict | None  # metrics on the test split at the best-validation checkpoint
    test_by_group: dict | None = None  # the same per Batch.group of the test split (e.g. per length)
    best_val: float | None
    success: bool
    curve: list  # evaluations: step, seconds, train_loss, val_*
    loss_curve: list
    grad_norm: dict  # suite.measure.stability.GradientStats.summary()
    loss_spikes: int
    time_to_threshold_steps: int | None
    time_to_threshold_seconds: float | None
    time_to_threshold_tokens: int | None
    steps_done: int  # the step training stopped at
    stop_reason: str  # "budget" (the step or seconds cap), "solved", "plateau" (harness.Stopper), "diverged"
    train_seconds: float
    train_tokens_per_s_in_loop: float | None
    step_mode: str | None = None  # how the step ran: "eager" or "compiled", and the AdamW kernel (fused, ...)
    step_compile_seconds: float | None = None  # a compiled step's compile, paid before the clock


@dataclass(kw_only=True)
class TrainResult(FitResult, TaskFacts, ModelFacts, FlopCount, StepRate):
    model_layers: int | None
    task_info: dict
    baseline: dict
    baseline_name: str
    success_threshold: float | None
    val_threshold: float | None


@dataclass(kw_only=True)
class Throughput:
    """suite.measure.throughput.batch_throughput: a training step and a forward pass, each timed twice."""

    train_tokens_per_s: float
    train_step_seconds: float
    train_iqr_seconds: float
    train_repeat_step_seconds: float
    train_repeat_iqr_seconds: float
    train_spread_tokens_per_s: float
    inference_tokens_per_s: float
    inference_step_seconds: float
    inference_iqr_seconds: float
    inference_repeat_step_seconds: float
    inference_repeat_iqr_seconds: float
    inference_spread_tokens_per_s: float
    timing_threads: int | list[int]
    train_peak_bytes: int
    train_memory_method: str
    inference_peak_bytes: int
    inference_memory_method: str
    step_mode: str | None = None  # the timed train step's mode and AdamW kernel (suite/training_step.py)
    step_compile_seconds: float | None = None


@dataclass(kw_only=True)
class ThroughputResult(Result, Throughput, TaskFacts, ModelFacts, FlopCount, StepRate):
    batch_size: int


@dataclass(kw_only=True)
class Scaling:
    """suite.measure.throughput.length_scaling at one sequence length."""

    forward_seconds: float
    forward_iqr_seconds: float
    train_step_seconds: float  # one forward+backward step's median (Throughput's name for the same)
    train_iqr_seconds: float
    peak_bytes: int
    memory_method: str
    timing_threads: int | list[int]


@dataclass(kw_only=True)
class ScalingResult(Result, Scaling, ModelFacts, FlopCount):
    seq_len: int
    batch_size: int


@dataclass(kw_only=True)
class Latency:
    """suite.measure.throughput.step_latency: one step of incremental decoding."""

    latency_seconds: float
    latency_iqr_seconds: float
    latency_steps: int
    timing_threads: int | list[int]


@dataclass(kw_only=True)
class LatencyResult(Result, Latency, ModelFacts):
    context: int


@dataclass(kw_only=True)
class LatencySkipped(Skipped):
    context: int


RESULTS: dict[str, tuple[type, ...]] = {  # job kind -> the results its runner may return
    "train": (TrainResult,),
    "throughput": (ThroughputResult,),
    "scaling": (ScalingResult,),
    "latency": (LatencyResult, LatencySkipped),
}


def names(*classes: type) -> frozenset[str]:
    return frozenset(f.name for cls in classes for f in fields(cls))


JOB_FIELDS = names(Job)
COMMON = JOB_FIELDS | names(Header, Outcome, Placed)
COLUMNS = {kind: COMMON | names(*results) for kind, results in RESULTS.items()}  # a kind's record's keys
ALL_COLUMNS = frozenset().union(*COLUMNS.values())


def flat(result) -> dict:
    """A declared result -> the flat dict a record holds (its nested values are plain dicts/lists)."""
    return asdict(result)


# ---- reading ------------------------------------------------------------------------------------


def upgrade(record: dict, where: str) -> dict:
    """A record as read from disk -> today's shape. Version 1 (no `record_version`) named the recipe
    `train`. A newer version than this code knows is one line that says what to do."""
    version = record.get("record_version", 1)
    if not isinstance(version, int) or version > RECORD_VERSION:
        raise SuiteError(
            f"{where} was written by record version {version}; this lstm-bench reads up to "
            f"{RECORD_VERSION}: upgrade lstm-bench"
        )
    if version == 1:
        record = {("recipe" if k == "train" else k): v for k, v in record.items()}
        record["record_version"] = 1
    if version < 3:
        record = _upgrade_from_2(record)
    return record


def _upgrade_from_2(record: dict) -> dict:
    if record.get("kind") == "scaling" and "train_seconds" in record:
        record = {("train_step_seconds" if k == "train_seconds" else k): v for k, v in record.items()}
    if record.get("task") == "wikitext2":  # its bits per word, once under the name of bits per char
        record = _renamed_metric(record, "bpc", "bpw")
    return record


def _renamed_metric(record: dict, old: str, new: str) -> dict:
    """A metric's name wherever a record holds it: the primary metric, the test split's and the
    baseline's scores (n-gram orders as `<order>_<metric>`) and the curve's validation entries."""

    def name(key: str) -> str:
        return key[: -len(old)] + new if key == old or key.endswith("_" + old) else key

    def rename(scores):
        return {name(k): v for k, v in scores.items()} if isinstance(scores, dict) else scores

    out = {k: rename(v) if k in ("test", "baseline") else v for k, v in record.items()}
    if out.get("primary_metric") == old:
        out["primary_metric"] = new
    if isinstance(out.get("curve"), list):
        out["curve"] = [rename(point) for point in out["curve"]]
    return out
