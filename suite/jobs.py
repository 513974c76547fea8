"""Jobs as data: a profile expands into a flat list of Job records, each fully describing one
unit of work (train a model on a task with a seed, or take one measurement). An executor runs
them; the key of a job is the hash of everything that defines it, so a finished job is never
run twice and a changed config is a new job."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property

from suite.errors import ConfigError

JOB_KINDS = ("train", "throughput", "scaling", "latency")
# What a kind of job needs from its machine. A job whose result *is* a time runs alone on its node
# (nothing else of the run beside it); one whose result is a score runs beside others, each on its own
# share of the cores. A training job with a wall-clock budget is a time too (see Job.runs_alone).
RESULT_IS_A_TIME = {"train": False, "throughput": True, "scaling": True, "latency": True}
# What an experiment is for; the report and the claims read this, never the experiment's name.
ROLES = {
    "main": "the comparison of models at equal size and budget (family verdicts, compute claim)",
    "ablation": "LSTM variants against the reference LSTM (Greff et al.'s claim)",
    "lr-sweep": "a learning-rate grid per model, for the stability claim (no tuning: the LR is the axis)",
    "equal-time": "the comparison at equal wall-clock seconds instead of equal steps",
    "length-generalization": "trained on short sequences, tested on longer ones (Delétang et al.'s "
    "protocol): the length-generalization claim",
}


@dataclass(frozen=True)
class Recipe:
    """The one training recipe shared by every model (a profile's `train` settings; Job.recipe): AdamW,
    linear warm-up then cosine decay, gradient-norm clipping, evaluation every `eval_every` steps,
    best-validation checkpoint."""

    steps: int = 200
    seconds: float | None = None  # wall-clock budget; when set, `steps` is only a cap
    batch_size: int = 32
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup: int = 20
    weight_decay: float = 0.0
    clip: float = 1.0
    eval_every: int = 50
    eval_batch_size: int = 256
    divergence_factor: float = 20.0  # loss above this multiple of its initial value = diverged
    spike_factor: float = 3.0  # a step loss above this multiple of its running median = a spike
    # Early stopping (suite.harness.Stopper); `steps` (or `seconds`) stays the cap. Off by default.
    until_solved: bool = False  # stop at the first evaluation whose validation metric reaches the threshold
    patience: int = 0  # stop after this many evaluations without improvement (a plateau); 0 = never
    min_improvement: float = 0.01  # an evaluation improves when it beats the best by this fraction of it
    step_mode: str = "eager"  # eager | compiled: how the step runs (suite/training_step.py)

    @classmethod
    def from_dict(cls, values: dict) -> Recipe:
        names = {f.name for f in fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ConfigError(f"unknown training setting(s) {sorted(unknown)}; known: {sorted(names)}")
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"training setting {name} must be a positive integer, got {value!r}")
        for name in ("lr", "clip", "divergence_factor", "spike_factor"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"training setting {name} must be a positive number, got {value!r}")
        if self.step_mode not in ("eager", "compiled"):
            raise ConfigError(f"training setting step_mode must be eager or compiled, got {self.step_mode!r}")
        if self.seconds is not None and (not isinstance(self.seconds, (int, float)) or self.seconds <= 0):
            raise ConfigError(f"training setting seconds must be a positive number, got {self.seconds!r}")
        if not isinstance(self.until_solved, bool):
            raise ConfigError(
                f"training setting until_solved must be true or false, got {self.until_solved!r}"
            )
        if not isinstance(self.patience, int) or isinstance(self.patience, bool) or self.patience < 0:
            raise ConfigError(f"training setting patience must be an integer >= 0, got {self.patience!r}")
        if not isinstance(self.min_improvement, (int, float)) or not 0 <= self.min_improvement < 1:
            raise ConfigError(
                f"training setting min_improvement must be a fraction in [0, 1), got {self.min_improvement!r}"
            )
        if not self.warmup >= 0 or not 0 <= self.min_lr_ratio <= 1 or self.weight_decay < 0:
            raise ConfigError(
                "training settings warmup >= 0, 0 <= min_lr_ratio <= 1 and weight_decay >= 0 are required"
            )

    @property
    def budget(self) -> str:
        cap = f"{self.seconds:g}s wall-clock" if self.seconds else f"{self.steps} steps"
        rules = (["until solved"] if self.until_solved else []) + (
            [f"plateau after {self.patience} evaluations"] if self.patience else []
        )
        return f"{cap} ({', '.join(rules)})" if rules else cap


@dataclass(frozen=True, kw_only=True)  # keywords only: a swapped argument would silently change the key
class Job:
    kind: str
    experiment: str
    task: str
    model: str
    seed: int
    task_params: dict = field(default_factory=dict)
    model_options: dict = field(default_factory=dict)
    param_budget: int = 0
    layers: int | None = None
    recipe: dict = field(default_factory=dict)  # the profile's `train` settings: Recipe.from_dict reads them
    width: int | None = None  # a fixed width instead of matching param_budget
    extra: dict = field(default_factory=dict)  # kind-specific settings (e.g. seq_len of a scaling point)
    role: str = "main"  # one of ROLES (measurement jobs: their kind)

    @cached_property  # a job is never changed after it is made (dataclasses.replace makes a new one)
    def key(self) -> str:
        values = asdict(self)
        values["train"] = values.pop("recipe")  # its name when keys were first made: old results still resume
        blob = json.dumps(values, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    @property
    def runs_alone(self) -> bool:
        """The executors read this, never the kind: see RESULT_IS_A_TIME."""
        return RESULT_IS_A_TIME[self.kind] or self.recipe.get("seconds") is not None

    def label(self) -> str:
        params = ",".join(f"{k}={v}" for k, v in sorted(self.task_params.items()))
        extra = ",".join(f"{k}={v}" for k, v in sorted(self.extra.items()))
        where = f"{self.task}({params})" if params else self.task
        return f"{self.kind}:{where} {self.model} seed={self.seed}" + (f" [{extra}]" if extra else "")


def sweep(values: dict) -> list[dict]:
    """{a: [1, 2], b: 3} -> [{a: 1, b: 3}, {a: 2, b: 3}]; lists are sweep axes."""
    keys = sorted(values)
    axes = [v if isinstance(v, list) else [v] for v in (values[k] for k in keys)]
    return [dict(zip(keys, combo)) for combo in itertools.product(*axes)]
