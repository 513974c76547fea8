"""The shared shell around every backbone: embed the task's inputs, run the backbone, map to the
task's outputs. Backbones only ever see (B, T, width) -> (B, T, width), so any backbone works on
any task (tokens or features in; classes or values out; every position or the last one)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from suite.interfaces import TaskSpec


class SequenceModel(nn.Module):
    backbone: Any  # an nn.Module; its optional members: suite.models.capabilities.BackboneCapabilities

    def __init__(
        self,
        spec: TaskSpec,
        backbone: nn.Module,
        width: int,
        tie_weights: bool = False,
        embed_std: float | None = None,
    ):
        """embed_std: N(0, std) init of the token embedding and the head (GPT-2 uses 0.02, so that
        learned positions of the same scale are not drowned); None keeps PyTorch's defaults."""
        super().__init__()
        self.spec, self.backbone, self.width = spec, backbone, width
        self.embed = (
            nn.Embedding(spec.input_vocab, width) if spec.input_vocab else nn.Linear(spec.input_dim, width)
        )
        self.head = nn.Linear(width, spec.output_dim)
        if embed_std is not None:  # token tables and the head; a feature projection keeps nn.Linear's init
            for layer in (self.embed, self.head) if spec.input_vocab else (self.head,):
                nn.init.normal_(layer.weight, 0.0, embed_std)
                bias = getattr(layer, "bias", None)
                if isinstance(bias, torch.Tensor):
                    nn.init.zeros_(bias)
        if tie_weights and spec.input_vocab == spec.output_dim and spec.output == "classes":
            self.head.weight = self.embed.weight  # LM weight tying (Press & Wolf 2017)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.backbone(self.embed(x))
        if self.spec.readout == "last":
            h = h[:, -1]
        return self.head(h)

    # ---- incremental decoding: one position at a time, state carried by the backbone ----
    @property
    def supports_step(self) -> bool:
        return hasattr(self.backbone, "step") and getattr(self.backbone, "causal", True)

    def init_state(self, batch_size: int, like: torch.Tensor | None = None):
        like = like if like is not None else self.head.weight
        return self.backbone.init_step_state(batch_size, like)

    def step(self, x_t: torch.Tensor, state):
        """x_t: (B,) tokens or (B, input_dim) features -> (output at this position, new state)."""
        h, state = self.backbone.step(self.embed(x_t), state)
        return self.head(h), state

    def lookup_parameters(self):
        """The input embedding (or feature projection) and the head: sized by the task, not the budget."""
        return [*self.embed.parameters(), *self.head.parameters()]

    def backend(self, device: torch.device, dtype: torch.dtype) -> str:
        if hasattr(self.backbone, "backend"):
            return self.backbone.backend(device, dtype)
        if device.type == "cuda":
            return "cuda: ATen ops (cuBLAS GEMM, SDPA where attention)"
        return f"{device.type}: ATen ops (GEMM + elementwise)"

    def flop_module(self) -> nn.Module:
        """A module FlopCounterMode can see into (our LSTMs' twins for opaque kernels)."""
        if hasattr(self.backbone, "flop_twin"):
            twin = SequenceModel(self.spec, self.backbone.flop_twin(), self.width)
            twin.embed, twin.head = self.embed, self.head
            return twin
        return self
