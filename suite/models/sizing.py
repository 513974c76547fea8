"""Fair sizing: pick each model's width so that its parameter count matches a budget
(the Long Range Arena rule: within 10%), so LSTMs and Transformers are compared at equal size."""

from __future__ import annotations

from functools import lru_cache

import torch

from suite.errors import ConfigError
from suite.interfaces import ModelSpec, TaskSpec, parameter_count

MAX_WIDTH = 4096


def build(model: ModelSpec, spec: TaskSpec, width: int, layers: int | None, options: dict) -> torch.nn.Module:
    try:
        return model.build(spec, width, layers or model.default_layers, **options)
    except TypeError as exc:
        raise ConfigError(f"model {model.name!r}: bad options {sorted(options)} ({exc})") from None


@lru_cache(maxsize=512)
def _count(model: ModelSpec, spec: TaskSpec, width: int, layers: int | None, options: tuple) -> int:
    with torch.device("meta"):  # shapes only: no memory, no init cost
        return parameter_count(build(model, spec, width, layers, dict(options)))


def width_for_budget(model: ModelSpec, spec: TaskSpec, budget: int, layers: int | None = None, options: dict | None = None) -> int:
    """The width (a multiple of model.width_step) whose parameter count is closest to budget."""
    opts = tuple(sorted((options or {}).items()))
    step = model.width_step
    lo, hi = 1, MAX_WIDTH // step  # widths = k * step
    while lo < hi:  # smallest k with count >= budget (count grows with width)
        mid = (lo + hi) // 2
        if _count(model, spec, mid * step, layers, opts) >= budget:
            hi = mid
        else:
            lo = mid + 1
    candidates = [k for k in (lo - 1, lo) if k >= 1]
    best = min(candidates, key=lambda k: abs(_count(model, spec, k * step, layers, opts) - budget))
    return best * step


def build_for_budget(model: ModelSpec, spec: TaskSpec, budget: int, layers: int | None = None,
                     options: dict | None = None, default_width: int = 64) -> tuple[torch.nn.Module, int]:
    width = width_for_budget(model, spec, budget, layers, options) if budget else default_width
    return build(model, spec, width, layers, options or {}), width
