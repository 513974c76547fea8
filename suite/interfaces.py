"""The two interfaces of the suite: Task and Model.

A *task* says what goes in and what comes out (a TaskSpec), hands out batches, and scores
predictions. A *model* is a recipe (ModelSpec) that builds an nn.Module for any TaskSpec.
Built-in tasks and models implement exactly these interfaces and are loaded the same way
as third-party plugins (see suite/registry.py).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F

from suite.errors import ConfigError

FAMILIES = ("long-dependency", "length-generalization", "language-modeling", "forecasting", "other")


@dataclass(frozen=True)
class TaskSpec:
    """Shapes of a task, which is all a model needs to know to be built for it.

    Inputs are either tokens, x: (B, T) int64 in [0, input_vocab), or features, x: (B, T, input_dim).
    Outputs are logits over output_dim classes or output_dim regression values,
    at every position (readout="all": (B, T, output_dim)) or once from the final position
    (readout="last": (B, output_dim)).

    seq_len is the longest *training* sequence (a task may vary T from batch to batch up to it):
    parameter sizing, FLOP counting and a learned position table use it. eval_seq_len, when set, is
    the longest sequence of an evaluation split, longer than any seen in training (length
    generalization): a model must run at it, and one that cannot (a learned position table of seq_len
    rows) refuses the task when it is built, in one line, before the run starts.
    """

    seq_len: int
    output_dim: int
    output: Literal["classes", "regression"] = "classes"
    readout: Literal["all", "last"] = "all"
    input_vocab: int | None = None
    input_dim: int = 1
    causal: bool = True  # False: the model may look at the whole input (e.g. a forecasting lookback)
    eval_seq_len: int | None = None  # None: evaluation sequences are no longer than seq_len

    def __post_init__(self):
        if self.seq_len < 1 or self.output_dim < 1 or self.input_dim < 1:
            raise ConfigError(f"TaskSpec sizes must be positive, got {self}")
        if self.eval_seq_len is not None and self.eval_seq_len < self.seq_len:
            raise ConfigError(f"TaskSpec eval_seq_len must be >= seq_len (or None), got {self}")
        if self.output not in ("classes", "regression") or self.readout not in ("all", "last"):
            raise ConfigError(f"TaskSpec output/readout invalid: {self}")

    @property
    def longest(self) -> int:
        """The longest sequence a model built for this spec must run at (any split)."""
        return max(self.seq_len, self.eval_seq_len or 0)


@dataclass
class Batch:
    """x: inputs; y: targets (class ids (B,T)/(B,) or values (B,T,D)/(B,D));
    mask: (B, T) bool, the positions that count (None: all of them);
    group: a label of the whole batch (e.g. its sequence length). When an evaluation split's batches
    carry one, Task.evaluate_by_group scores each group apart and the split's score is the unweighted
    mean over its groups (each test length counts once, as in the length-generalization protocol).
    Training batches may carry one too; the harness ignores it."""

    x: torch.Tensor
    y: torch.Tensor
    mask: torch.Tensor | None = None
    group: int | str | None = None

    def to(self, device) -> Batch:
        mask = None if self.mask is None else self.mask.to(device)
        return Batch(self.x.to(device), self.y.to(device), mask, self.group)

    @property
    def tokens(self) -> int:
        return int(self.x.shape[0] * self.x.shape[1])


class Task:
    """Base class of every task. A generated task implements `sample` and `baseline`;
    a data-backed task overrides `train_batch` and `eval_batches` instead of `sample`.

    Class attributes a task sets: name, description, family, primary_metric, higher_is_better,
    success_threshold (value of primary_metric that counts as "solved"; see threshold()).
    Constructor parameters (e.g. seq_len, delay) are keyword arguments with defaults; the
    constructor sets self.spec. `seed` fixes the data (the evaluation sets in particular).
    `param_help` gives each constructor parameter a one-line meaning (merged along the class
    hierarchy, so a shared base documents shared parameters once); `parameters()` reads it with
    the defaults, which is what `python -m suite describe TASK` prints.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    family: ClassVar[str] = "other"
    primary_metric: ClassVar[str] = "loss"
    higher_is_better: ClassVar[bool] = False
    success_threshold: ClassVar[float | None] = None
    eval_size: ClassVar[int] = 512  # samples per evaluation split for generated tasks
    param_help: ClassVar[dict[str, str]] = {
        "seed": "set by the run's seeds, not in params: fixes the generated data and evaluation sets"
    }

    spec: TaskSpec

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    # ---- data -------------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator) -> Batch:
        raise NotImplementedError(f"task {self.name!r} implements neither sample() nor train_batch()")

    def train_batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        return self.sample(batch_size, generator)

    def eval_batches(self, split: str, batch_size: int) -> Iterable[Batch]:
        """Fixed evaluation data for split in {"val", "test"}: the same for every model."""
        g = torch.Generator().manual_seed(split_seed(self.seed, split))
        left = self.eval_size
        while left > 0:
            n = min(batch_size, left)
            yield self.sample(n, g)
            left -= n

    # ---- scoring ----------------------------------------------------------------------
    def loss(self, out: torch.Tensor, batch: Batch) -> torch.Tensor:
        if self.spec.output == "classes":
            logits, target = _masked(out, batch.y, batch.mask)
            return F.cross_entropy(logits.float(), target)
        pred, target = _masked(out, batch.y, batch.mask)
        return F.mse_loss(pred.float(), target.float())

    def batch_metrics(self, out: torch.Tensor, batch: Batch) -> dict[str, float]:
        """Metrics of one batch (means over its counted positions)."""
        if self.spec.output == "classes":
            logits, target = _masked(out, batch.y, batch.mask)
            loss = F.cross_entropy(logits.float(), target).item()
            acc = (logits.argmax(-1) == target).float().mean().item()
            return {"loss": loss, "accuracy": acc}
        pred, target = _masked(out, batch.y, batch.mask)
        err = pred.float() - target.float()
        return {
            "loss": err.pow(2).mean().item(),
            "mse": err.pow(2).mean().item(),
            "mae": err.abs().mean().item(),
        }

    def evaluate(
        self,
        predict: Callable[[torch.Tensor], torch.Tensor],
        split: str,
        batch_size: int = 256,
        device: str | torch.device = "cpu",
    ) -> dict[str, float]:
        """The split's metrics: evaluate_by_group without the breakdown."""
        return self.evaluate_by_group(predict, split, batch_size, device)[0]

    @torch.no_grad()
    def evaluate_by_group(
        self,
        predict: Callable[[torch.Tensor], torch.Tensor],
        split: str,
        batch_size: int = 256,
        device: str | torch.device = "cpu",
    ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        """(the split's metrics, the metrics of each Batch.group keyed by str(group)).

        Within a group (or the whole split when no batch carries a group): the mean of batch_metrics
        over every batch (none is dropped), each weighted by the positions it counts (its rows, or
        its mask's positions: a partly masked last window of a token stream then weighs what it
        scores). When the batches carry groups, the split's metrics are the unweighted mean over the
        groups, and the breakdown is returned beside them ({} when there are no groups)."""
        totals: dict[str, dict[str, float]] = {}
        weights: dict[str, int] = {}
        grouped: set[bool] = set()
        for batch in self.eval_batches(split, batch_size):
            batch = batch.to(device)
            grouped.add(batch.group is not None)
            key = str(batch.group)
            n = int(batch.x.shape[0]) if batch.mask is None else int(batch.mask.sum())
            sums = totals.setdefault(key, {})
            for k, v in self.batch_metrics(predict(batch.x), batch).items():
                sums[k] = sums.get(k, 0.0) + v * n
            weights[key] = weights.get(key, 0) + n
        if not weights or sum(weights.values()) == 0:
            raise ConfigError(f"task {self.name!r} produced no {split} data")
        if len(grouped) > 1:
            raise ConfigError(f"task {self.name!r}: some {split} batches carry a group and some do not")
        groups = {key: {k: v / weights[key] for k, v in sums.items()} for key, sums in totals.items()}
        groups = {key: m for key, m in groups.items() if weights[key] > 0}
        if grouped != {True}:
            return groups["None"], {}
        names = next(iter(groups.values())).keys()
        return {k: sum(m[k] for m in groups.values()) / len(groups) for k in names}, groups

    def baseline(self) -> dict[str, float]:
        """Test-split score of the strongest cheap baseline ("what you get for free"), same keys as
        evaluate(); weaker baselines may ride beside it under other keys."""
        raise NotImplementedError

    def baseline_name(self) -> str:
        return "trivial baseline"

    def threshold(self, split: str) -> float | None:
        """The value of primary_metric that counts as solved on `split` ("val" for time-to-threshold,
        "test" for success). Data-backed tasks return their strongest baseline's score on that split."""
        return self.success_threshold

    def describe(self) -> dict[str, Any]:
        """Facts about the data that ran (e.g. which corpus), stored in every record."""
        return {}

    @classmethod
    def parameters(cls) -> list[Param]:
        """Every constructor parameter with its default and one-line meaning, read from the task."""
        help_text: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            help_text.update(vars(klass).get("param_help", {}))
        return [
            Param(p.name, p.default, help_text.get(p.name, ""))
            for p in inspect.signature(cls.__init__).parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]


@dataclass(frozen=True)
class Param:
    """One task parameter: default is inspect.Parameter.empty when the parameter is required."""

    name: str
    default: Any
    help: str

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty


def _masked(out: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None):
    if mask is not None:
        return out[mask], y[mask]
    if out.dim() > y.dim():  # class logits: flatten positions
        return out.reshape(-1, out.shape[-1]), y.reshape(-1)
    return out, y


def split_seed(seed: int, split: str) -> int:
    """Distinct, stable seeds per split, far from the training stream's seed."""
    return 1_000_003 * (seed + 1) + {"train": 0, "val": 17, "test": 31}.get(split, 97)


def check_positive(name: str, value, minimum: float = 1) -> None:
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < minimum
    ):
        raise ConfigError(f"{name} must be a number >= {minimum}, got {value!r}")


# ---- models ------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)  # hashed by identity: build functions do not compare
class ModelSpec:
    """A model recipe. `build(spec, width, layers, **options)` returns an nn.Module whose
    forward(x) maps a task's inputs to its outputs (see TaskSpec). `width` is the model's
    main size knob (hidden size or d_model); the harness picks it to match a parameter budget.

    What else the suite uses of the built module when it has it (its kernel's name, a build step,
    a FLOP-countable twin, incremental decoding, which parameters are lookups) is declared once, in
    suite.models.capabilities.ModelCapabilities (and BackboneCapabilities for a backbone wrapped in
    suite.models.sequence_model.SequenceModel).
    """

    name: str
    family: str  # "lstm", "lstm-variant", "gru", "minlstm", "transformer", ... (groups in reports)
    build: Callable[..., torch.nn.Module]
    description: str = ""
    implementation: str = ""  # "reference", "manual-bptt", "fast", "library", ...
    default_layers: int = 1
    width_step: int = 1  # widths are multiples of this (e.g. 8 so that heads divide d_model)
    # Models of one architecture (our fast LSTM and nn.LSTM: one function, one initialisation; our
    # Transformer and HF GPT-2) are twins: family statistics count them once and never test one
    # against its twin. "" = the model's own name.
    architecture: str = ""


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
