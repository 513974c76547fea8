"""The optional capabilities of a built model, declared once (`ModelCapabilities`; for a backbone wrapped in
`SequenceModel`, `BackboneCapabilities`) and looked up here, each with its default, so that every job kind
treats a bare plugin module (a plain nn.Module mapping inputs to outputs) and a built-in alike.

The Protocols are the documentation: a plugin implements any of their members, with these signatures,
and leaves out the rest. tests/test_model_contract.py runs a plugin model written to them through every
job kind, and checks that the code here and in SequenceModel looks up no name they do not declare.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import torch
import torch.nn as nn


class ModelCapabilities(Protocol):
    """What the suite uses of a built model (ModelSpec.build's result) when the model has it."""

    supports_step: bool
    """True (an attribute or a property) when step() can decode; without it latency jobs are skipped,
    recorded with the reason."""

    def backend(self, device: torch.device, dtype: torch.dtype) -> str:
        """The kernel that really runs on `device` at `dtype` (e.g. "cudnn", "onednn (mkldnn)"); every
        record carries it. Default: "<device>: ATen ops (the model names no backend)"."""
        ...

    def prepare(self) -> float | None:
        """Build or compile whatever the model needs before any clock starts; any submodule may have it.
        Returns the seconds this call spent (0.0 when it was already built in this process), or None when
        nothing compiles. Records: compile_seconds, compile_reused. Default: nothing to build."""
        ...

    def flop_module(self) -> nn.Module:
        """A module with the same function that torch.utils.flop_counter can see into, for a model whose
        kernels are opaque to it (a fused or compiled op). Default: the model itself."""
        ...

    def init_state(self, batch_size: int) -> Any:
        """The decoding state before the first position (used when supports_step is true)."""
        ...

    def step(self, x_t: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """One position: x_t is (B,) tokens or (B, input_dim) features -> (the output at that position,
        the new state). Used when supports_step is true: latency jobs time it."""
        ...

    def lookup_parameters(self) -> Iterable[nn.Parameter]:
        """Parameters that are table lookups sized by the task, not the architecture (input embedding or
        feature projection, position tables, output head); any submodule may declare them, and an
        nn.Embedding always counts. The size budget is matched on the rest (the backbone)."""
        ...

    positions: str
    """An attribute of any submodule: its position scheme ("learned", "sinusoidal", "rope", "alibi",
    "none"); recorded per job (`positions`). Default: none recorded (a recurrent model needs none)."""


class BackboneCapabilities(Protocol):
    """What SequenceModel (suite/models/sequence_model.py) uses of its backbone, a module mapping
    (B, T, width) -> ((B, T, width), anything) when the backbone has it; SequenceModel then offers the
    matching ModelCapabilities of the whole model."""

    causal: bool
    """False for a backbone whose position t sees later positions: no step() then. Default: True."""

    def backend(self, device: torch.device, dtype: torch.dtype) -> str:
        """As ModelCapabilities.backend. Default: ATen ops on the device."""
        ...

    def flop_twin(self) -> nn.Module:
        """A plain-ops backbone with the same weights, which SequenceModel.flop_module() wraps."""
        ...

    def init_step_state(self, batch_size: int, like: torch.Tensor) -> Any:
        """The decoding state before the first position, on `like`'s device and dtype."""
        ...

    def step(self, h_t: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """One position: (B, width) -> ((B, width), new state). SequenceModel supports_step with it."""
        ...


# ---- the lookups, each with its default ------------------------------------------------------------


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
    return (
        bool(getattr(model, "supports_step", False))
        and callable(getattr(model, "step", None))
        and callable(getattr(model, "init_state", None))
    )


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
