"""Fair sizing, and the one function that builds a model for any job.

The size budget is matched on the *backbone*: the part of the model that does the sequence work
(recurrent cells, attention and MLP blocks). Lookups are counted and recorded apart, not charged
to the budget: the input embedding or feature projection, learned position tables and the output
head (see capabilities.parameter_split). Their size follows the task's vocabulary and the sequence
length, not the architecture; charging them would shrink a Transformer as T grows (its position
table) while an LSTM stays the same. Each model's width is the one whose backbone is closest to the
budget (the Long Range Arena rule, within 10%); a length sweep therefore keeps every backbone fixed.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from suite.errors import ConfigError
from suite.interfaces import ModelSpec, TaskSpec
from suite.models.capabilities import parameter_split

MAX_WIDTH = 4096
DEFAULT_WIDTH = 64  # when a job names neither a budget nor a width


def build(model: ModelSpec, spec: TaskSpec, width: int, layers: int | None, options: dict) -> torch.nn.Module:
    try:
        return model.build(spec, width, layers or model.default_layers, **options)
    except TypeError as exc:
        raise ConfigError(f"model {model.name!r}: bad options {sorted(options)} ({exc})") from None


def probe_build(model: ModelSpec, spec: TaskSpec, layers: int | None, options: dict) -> None:
    """Build the model for the task on the meta device (shapes only): its refusals (ConfigError) surface
    before a run starts instead of in a job."""
    with torch.device("meta"):
        build(model, spec, model.width_step * 8, layers, options)


@lru_cache(maxsize=512)
def _backbone_count(model: ModelSpec, spec: TaskSpec, width: int, layers: int | None, options: tuple) -> int:
    with torch.device("meta"):  # shapes only: no memory, no init cost
        return parameter_split(build(model, spec, width, layers, dict(options)))["backbone_params"]


def width_for_budget(
    model: ModelSpec, spec: TaskSpec, budget: int, layers: int | None = None, options: dict | None = None
) -> int:
    """The width (a multiple of model.width_step) whose backbone parameter count is closest to budget."""
    opts = tuple(sorted((options or {}).items()))
    step = model.width_step
    lo, hi = 1, MAX_WIDTH // step  # widths = k * step

    def count(k: int) -> int:
        return _backbone_count(model, spec, k * step, layers, opts)

    while lo < hi:  # smallest k with count >= budget (count grows with width)
        mid = (lo + hi) // 2
        if count(mid) >= budget:
            hi = mid
        else:
            lo = mid + 1
    candidates = [k for k in (lo - 1, lo) if k >= 1]
    return min(candidates, key=lambda k: abs(count(k) - budget)) * step


def build_model(
    model: ModelSpec,
    spec: TaskSpec,
    *,
    budget: int = 0,
    width: int | None = None,
    layers: int | None = None,
    options: dict | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.nn.Module, int]:
    """The model every job kind runs: a fixed width, or the width matching `budget` on the backbone;
    initialised from `seed` (the same seed gives the same initial weights), on device and dtype."""
    options = options or {}
    if not width:
        width = width_for_budget(model, spec, budget, layers, options) if budget else DEFAULT_WIDTH
    torch.manual_seed(seed)
    return build(model, spec, width, layers, options).to(device=device, dtype=dtype), width
