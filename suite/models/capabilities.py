"""The optional methods of a built model, looked up in one place, each with its default, so that
every job kind treats a bare plugin module (a plain nn.Module mapping inputs to outputs) alike.

    backend(device, dtype) -> str       the kernel that really runs (default: "ATen ops")
    prepare() -> float | None           build/compile before any clock starts (any submodule may have it);
                                        returns the seconds that call spent, 0.0 when already built here
    flop_module() -> nn.Module          a twin FlopCounterMode can see into (default: the model itself)
    supports_step, init_state, step     incremental decoding (default: not supported)
    lookup_parameters() -> parameters   table lookups: embeddings, position tables, the output head
                                        (any submodule may declare them; nn.Embedding always counts)
    positions: str                      attribute of any submodule: its position scheme ("learned",
                                        "sinusoidal", "rope", "alibi", "none"); recorded per job
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn


def backend(model: nn.Module, device: torch.device, dtype: torch.dtype) -> str:
    fn = getattr(model, "backend", None)
    return fn(device, dtype) if callable(fn) else f"{device.type}: ATen ops (the model names no backend)"


def prepare(model: nn.Module) -> float | None:
    """Run every submodule's prepare() hook; None when nothing in the model compiles anything."""
    hooks: list[Any] = [getattr(m, "prepare", None) for m in model.modules()]
    spent = [hook() for hook in hooks if callable(hook)]
    spent = [s for s in spent if s is not None]
    return sum(spent) if spent else None


def positions(model: nn.Module) -> str | None:
    """The position scheme a submodule declares (attention models), None when none does (RNNs)."""
    found = {getattr(m, "positions", None) for m in model.modules()} - {None}
    return ", ".join(sorted(str(p) for p in found)) if found else None


def flop_module(model: nn.Module) -> nn.Module:
    fn = getattr(model, "flop_module", None)
    return fn() if callable(fn) else model


def supports_step(model: nn.Module) -> bool:
    return bool(getattr(model, "supports_step", False)) and callable(getattr(model, "step", None))


def parameter_split(model: nn.Module) -> dict[str, int]:
    """Trainable parameters: all of them, the lookup part (embeddings, position tables, head) and the
    backbone (the rest: the part that does the sequence work, which the size budget is matched on)."""
    lookup: dict[int, nn.Parameter] = {}
    for module in model.modules():
        declared = getattr(module, "lookup_parameters", None)
        params = list(declared()) if callable(declared) else []
        if isinstance(module, nn.Embedding):
            params += list(module.parameters())
        lookup.update((id(p), p) for p in params if p is not None and p.requires_grad)
    total = {id(p): p for p in model.parameters() if p.requires_grad}
    n_total = sum(p.numel() for p in total.values())
    n_lookup = sum(p.numel() for i, p in lookup.items() if i in total)
    return {"params": n_total, "backbone_params": n_total - n_lookup, "lookup_params": n_lookup}
