"""FLOPs per token, counted by torch.utils.flop_counter.FlopCounterMode on one forward pass.

FlopCounterMode counts matrix products and attention (the dominant cost) and not elementwise
ops. Kernels it cannot see into (nn.LSTM's fused RNN op, our C++ loop) are counted on a
plain-ops twin with the same weights (SequenceModel.flop_module)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from suite.interfaces import TaskSpec


def example_input(spec: TaskSpec, batch: int = 1, dtype=torch.float32, device="cpu") -> torch.Tensor:
    if spec.input_vocab:
        return torch.zeros(batch, spec.seq_len, dtype=torch.long, device=device)
    return torch.zeros(batch, spec.seq_len, spec.input_dim, dtype=dtype, device=device)


def flops_per_token(model: torch.nn.Module, spec: TaskSpec) -> float:
    """Forward FLOPs per input position (a training step costs about 3x this)."""
    module = model.flop_module() if hasattr(model, "flop_module") else model
    param = next(module.parameters())
    x = example_input(spec, 1, param.dtype, param.device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(x)
    return counter.get_total_flops() / spec.seq_len
