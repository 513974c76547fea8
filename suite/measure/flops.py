"""FLOPs per token, counted by torch.utils.flop_counter.FlopCounterMode.

What is counted, the same rule for every model: matrix products (linear layers, GEMMs, batched
matmuls) and attention, 2 FLOPs per multiply-add; elementwise ops (gates, softmax, norms) are not.
Attention is counted dense: q·kᵀ and p·v over the full T×T score matrix (causal masking is *not*
discounted as half), which is what FlopCounterMode's own attention formulas do. PyTorch ships those
formulas for the CUDA SDPA kernels only; the CPU kernels get the same formulas registered here, so
attention is counted wherever SDPA runs. Kernels FlopCounterMode cannot see into (nn.LSTM's fused
RNN op, our C++ loop) are counted on a plain-ops twin with the same weights (flop_module()).

`flops_per_token` is one forward pass; `train_flops_per_token` is forward + backward: 3x the forward
for a matrix product (the backward's two products), 3.5x for attention, whose fused kernels' backward
recomputes q·kᵀ (sdpa_backward_flop_count: 5 products against the forward's 2). A model whose count
comes out zero or raises is recorded with the reason (`flops_error`), never as 0.
"""

from __future__ import annotations

import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from suite.interfaces import TaskSpec
from suite.models import capabilities

ATTENTION_RULE = "dense T×T attention (causal mask not discounted), GEMMs only, 2 FLOPs per MAC"
_aten = torch.ops.aten


def _register_cpu_attention() -> None:
    """Give FlopCounterMode the CPU flash-attention kernels (and the fused ones other backends use),
    with the formulas it already uses for the CUDA kernels."""
    pairs = (
        (
            "_scaled_dot_product_flash_attention_for_cpu",
            "_scaled_dot_product_flash_attention_for_cpu_backward",
        ),
        (
            "_scaled_dot_product_fused_attention_overrideable",
            "_scaled_dot_product_fused_attention_overrideable_backward",
        ),
    )
    for fwd_name, bwd_name in pairs:
        fwd, bwd = getattr(_aten, fwd_name, None), getattr(_aten, bwd_name, None)
        if fwd is None or fwd in flop_counter.flop_registry:
            continue

        @flop_counter.register_flop_formula(fwd)
        def _fwd(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
            return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

        if bwd is not None:

            @flop_counter.register_flop_formula(bwd)
            def _bwd(
                grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs
            ) -> int:
                return flop_counter.sdpa_backward_flop_count(
                    grad_out_shape, query_shape, key_shape, value_shape
                )


_register_cpu_attention()


def example_input(spec: TaskSpec, batch: int = 1, dtype=torch.float32, device="cpu") -> torch.Tensor:
    if spec.input_vocab:
        return torch.zeros(batch, spec.seq_len, dtype=torch.long, device=device)
    return torch.zeros(batch, spec.seq_len, spec.input_dim, dtype=dtype, device=device)


def _count(module: torch.nn.Module, x: torch.Tensor, backward: bool) -> int:
    with torch.set_grad_enabled(backward), FlopCounterMode(display=False) as counter:
        out = module(x)
        out = out[0] if isinstance(out, tuple) else out
        if backward:
            out.float().sum().backward()
    if backward:
        module.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def count_flops(model: torch.nn.Module, spec: TaskSpec) -> dict:
    """Forward and training (forward + backward) FLOPs per input position, or the reason there are none."""
    try:
        module = capabilities.flop_module(model)
        param = next(module.parameters())
        x = example_input(spec, 1, param.dtype, param.device)
        forward, train = _count(module, x, False), _count(module, x, True)
    except Exception as exc:  # a plugin model can fail in any way: record why, never a 0
        return {
            "flops_per_token": None,
            "train_flops_per_token": None,
            "flops_error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}",
        }
    if forward <= 0:
        return {
            "flops_per_token": None,
            "train_flops_per_token": None,
            "flops_error": "FlopCounterMode saw no matrix product (opaque kernel without a flop_module())",
        }
    return {
        "flops_per_token": forward / spec.seq_len,
        "train_flops_per_token": train / spec.seq_len,
        "flops_rule": ATTENTION_RULE,
    }


def recurrent_flops(
    gates: int,
    T: int,
    B: int,
    I: int,
    H: int,
    *,
    backward: bool = False,
    input_grad: bool = True,
    gate_recurrence: bool = False,
) -> int:
    """Matrix-product FLOPs of one recurrent layer over T steps, by count_flops' rule (2 per multiply-add,
    gates not counted): the analytic count the micro-benchmarks' roofline uses (tests check it against
    FlopCounterMode). gates: weight blocks of H rows (LSTM 4, NIG/NFG/NOG/CIFG 3, GRU 3); FGR adds
    (i, f, o)_{t-1} W_ggᵀ. The backward repeats every product twice (input side and weight side), less
    ∂L/∂x when the input needs no gradient, and less FGR's ∂L/∂(i, f, o)_{-1} (the first step's previous
    gates are constant zeros)."""
    forward = 2 * T * B * (gates * H * (I + H) + (9 * H * H if gate_recurrence else 0))
    if not backward:
        return forward
    no_input_grad = 0 if input_grad else 2 * T * B * gates * H * I
    return 3 * forward - no_input_grad - (18 * B * H * H if gate_recurrence else 0)
