"""The small Transformer's CPU kernels (csrc/transformer.cpp), each with a hand-derived backward, built at
first use and cached like the LSTMs' fast path (suite/models/lstm_fast.py's build helper):

    attention(q, k, v, causal=True, slopes=None)     q (B, T, heads, d_head), k and v (B, S, heads, d_head)
                                                     -> (B, T, heads, d_head)
    LayerNorm(d), layer_norm(x, w, b)                nn.LayerNorm's parameters and function
    ln_attention_residual(x, attn, causal)           x + Attention(LayerNorm(x)), a block's first half (the
                                                     Transformer's Attention: fused QKV projection, output
                                                     projection, its LayerNorm), as one op
    ln_mlp_residual(x, mlp)                          x + W_2 GELU(W_1 LayerNorm(x) + b_1) + b_2 (GELU exact),
                                                     a block's second half, as one op
    backbone(h, blocks, ln_f, causal)                every block's two halves, then the final LayerNorm, as
                                                     one op (what the Transformer's forward calls)

attention is F.scaled_dot_product_attention's function (scale 1/√d_head, queries the last T of S positions
when causal, ALiBi's −m_h·|i − j| when slopes are given) in the (B, T, heads, d_head) layout of the fused
QKV projection, so q, k and v are views and the output needs no transpose. Each runs where it is faster
than the library's ops: measured against SDPA in one pytest-benchmark run (benchmarks/test_bench_attention.py)
and over the whole step (../shared/tools/step_time.py). That is float32 or float64 on the CPU, and for
attention d_head ≤ MAX_HEAD_DIM and no dropout. Elsewhere, or with `fast` False (the FLOP counter's twin), or
with LSTM_BENCH_TRANSFORMER_KERNELS=off, the library ops run; kernel_name() says which attention a call
gets, and the model's backend() names both. LayerNorm, the two halves and the backbone are autograd nodes
written in C++ (the extension's layer_norm, ln_mlp, ln_attention, backbone): a Python autograd.Function
cost about 30 µs an op and a step in the interpreter.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F

from suite.models import lstm_fast

# Beyond this the flash kernel's blocking over d_head pays and ours does not.
MAX_HEAD_DIM = 16
_SOURCES = (Path(__file__).parent / "csrc" / "transformer.cpp",)
_lock = threading.Lock()
_state: dict = {"module": None, "error": None, "seconds": None}
_DTYPES = (torch.float32, torch.float64)


def extension():
    """The compiled module, or None if it cannot be built here (the error is kept, and logged once)."""
    return lstm_fast.load_once(
        _state,
        _lock,
        lambda: lstm_fast._load(_SOURCES, "lstm_bench_transformer"),
        "the Transformer's C++ kernels",
        "attention, LayerNorm and the MLP run the library's ops instead",
    )


def prepare() -> float:
    """Build (or load the cached build of) the kernel before any clock starts; the seconds it took."""
    return lstm_fast.prepare_once(_state, extension)


# "off": the library's ops everywhere (an A/B switch; the records' backend says which ran)
SWITCH = "LSTM_BENCH_TRANSFORMER_KERNELS"


def _on_cpu(x: torch.Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype in _DTYPES
        and _state["error"] is None
        and os.environ.get(SWITCH, "on") != "off"
    )


def compiled_applies(q: torch.Tensor, dropout: float = 0.0) -> bool:
    """Whether attention on q runs the compiled kernel (no build is started by asking)."""
    return _on_cpu(q) and q.shape[-1] <= MAX_HEAD_DIM and dropout == 0.0


def kernel_name(q: torch.Tensor, dropout: float = 0.0) -> str:
    return "small-head C++ kernel" if compiled_applies(q, dropout) and extension() else "SDPA"


class SmallHeadAttention(torch.autograd.Function):
    """q, k, v (B, T or S, heads, d_head) -> out (B, T, heads, d_head)."""

    @staticmethod
    def forward(ctx, q, k, v, slopes, causal: bool):
        out, lse = extension().attention_forward(q, k, v, slopes, causal)
        ctx.save_for_backward(q, k, v, out, lse, slopes)
        ctx.causal = causal
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse, slopes = ctx.saved_tensors
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        extension().attention_backward(dout, q, k, v, out, lse, slopes, ctx.causal, dq, dk, dv)
        return dq, dk, dv, None, None


def attention(q, k, v, causal: bool = True, slopes: torch.Tensor | None = None, dropout: float = 0.0):
    """softmax(q kᵀ / √d_head + bias + causal mask) v over (B, T, heads, d_head) tensors."""
    if compiled_applies(q, dropout) and extension() is not None:
        return SmallHeadAttention.apply(q, k, v, slopes, causal)
    return sdpa(q, k, v, causal, slopes, dropout)


def sdpa(q, k, v, causal: bool = True, slopes: torch.Tensor | None = None, dropout: float = 0.0):
    """The same function through F.scaled_dot_product_attention (the oracle, and the path elsewhere)."""
    T, S = q.shape[1], k.shape[1]
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, heads, T, d_head)
    bias = None
    # ALiBi: the causal mask goes into the bias (SDPA takes no is_causal beside a mask)
    if slopes is not None:
        bias, causal = alibi_bias(slopes, S - T, T, S, causal, q.dtype), False
    elif causal and T != S:  # queries are the last T positions: is_causal would align them with the first
        bias, causal = causal_bias(S - T, T, S, q.device, q.dtype), False
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=causal, dropout_p=dropout)
    return y.transpose(1, 2)


def causal_bias(q_start: int, T: int, S: int, device, dtype) -> torch.Tensor:
    i = torch.arange(q_start, q_start + T, device=device)[:, None]
    j = torch.arange(S, device=device)[None, :]
    return torch.zeros(T, S, device=device, dtype=dtype).masked_fill(j > i, float("-inf"))


def alibi_bias(slopes: torch.Tensor, q_start: int, T: int, S: int, causal: bool, dtype) -> torch.Tensor:
    """(heads, T, S) additive scores −m_h·|i − j| for queries at q_start.. and keys at 0..S−1; −inf above
    the diagonal when causal."""
    i = torch.arange(q_start, q_start + T, device=slopes.device)[:, None]
    j = torch.arange(S, device=slopes.device)[None, :]
    bias = -slopes.to(dtype)[:, None, None] * (i - j).abs()
    if causal:
        bias = bias.masked_fill(j > i, float("-inf"))
    return bias


def alibi_slopes(heads: int) -> torch.Tensor:
    """Press et al. (2022): a geometric sequence 2^(−8/heads), 2^(−16/heads), ... one per head."""
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / heads) for h in range(heads)])


EPS = 1e-5  # every LayerNorm's (nn.LayerNorm's default)


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, fast: bool = True) -> torch.Tensor:
    """F.layer_norm over the last dimension, through the compiled kernel on the CPU."""
    if fast and _on_cpu(x) and x.is_contiguous() and extension() is not None:
        return extension().layer_norm(x, weight, bias, EPS)  # an autograd node of C++ (csrc/transformer.cpp)
    return F.layer_norm(x, weight.shape, weight, bias, EPS)


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm (over the last dimension, with weight and bias) through the compiled kernel on the CPU."""

    fast = True

    def kernel_form(self) -> bool:
        """Affine with a bias and the default ε: the function the compiled kernels compute."""
        return self.weight is not None and self.bias is not None and self.eps == EPS

    def forward(self, x):
        if not self.kernel_form():
            return super().forward(x)
        return layer_norm(x, self.weight, self.bias, self.fast)


# ---- a block's two halves, each one op -------------------------------------------------------------------
# Each half holds its weights in two tensors (transformer.py's Attention and MLP), so that the optimizer's
# and the clipping's per-tensor loops see 4 tensors a block instead of 12: one of matrices (decayed), one of
# vectors (not). attention_parts / mlp_parts cut them into the named views below; the kernels' backward
# writes each half's gradient straight into tensors of those two shapes.


def attention_parts(matrices: torch.Tensor, vectors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """matrices (4d, d): W_qkv (3d rows: q, k, v), W_o; vectors (6d): γ, β, b_qkv (3d), b_o.
    -> γ, β, W_qkv, b_qkv, W_o, b_o (views)."""
    d = matrices.shape[1]
    w_qkv, w_o = matrices.split((3 * d, d))
    ln_w, ln_b, b_qkv, b_o = vectors.split((d, d, 3 * d, d))
    return ln_w, ln_b, w_qkv, b_qkv, w_o, b_o


def mlp_parts(matrices: torch.Tensor, vectors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """matrices (2·hidden, d): W_1 (hidden, d) in the first hidden rows, W_2 (d, hidden) row-major in the
    rest; vectors (3d + hidden): γ, β, b_1 (hidden), b_2. -> γ, β, W_1, b_1, W_2, b_2 (views)."""
    hidden, d = matrices.shape[0] // 2, matrices.shape[1]
    w1, w2 = matrices.split((hidden, hidden))
    ln_w, ln_b, b1, b2 = vectors.split((d, d, hidden, d))
    return ln_w, ln_b, w1, b1, w2.view(d, hidden), b2


class HalfBlock(Protocol):
    """What the block ops read of suite.models.transformer's Attention and MLP."""

    matrices: nn.Parameter
    vectors: nn.Parameter
    fast: bool
    training: bool
    dropout: float  # on the branch's output (and, in attention, on its weights)


def _applies(x: torch.Tensor, half: HalfBlock, dropout: float) -> bool:
    return half.fast and _on_cpu(x) and not (half.training and dropout > 0) and extension() is not None


def ln_mlp_residual(x: torch.Tensor, mlp: HalfBlock, dropout: float = 0.0) -> torch.Tensor | None:
    """x + MLP(LayerNorm(x)) as one compiled op, or None where it does not apply: dropout while training,
    not the CPU."""
    if not _applies(x, mlp, dropout):
        return None
    y = extension().ln_mlp(x.reshape(-1, x.shape[-1]).contiguous(), mlp.matrices, mlp.vectors, EPS)
    return y.view(x.shape)


def rope_angles(T: int, d_head: int, start: int, device) -> torch.Tensor:
    """RoPE's angles θ_ti = t / 10000^(2i / d_head) for positions start .. start + T, (T, d_head / 2), in
    float32 (the rotation's one definition: transformer.rope and the block op's table)."""
    inv = 1.0 / (10000 ** (torch.arange(0, d_head, 2, device=device, dtype=torch.float32) / d_head))
    return torch.arange(start, start + T, device=device, dtype=torch.float32)[:, None] * inv


_rotations: dict[tuple, torch.Tensor] = {}


def rope_rotation(T: int, d_head: int, dtype: torch.dtype) -> torch.Tensor:
    """(2, T, d_head / 2): the cosines, then the sines, of positions 0 .. T (the block op's table; kept)."""
    key = (T, d_head, dtype)
    if key not in _rotations:
        angles = rope_angles(T, d_head, 0, "cpu")
        _rotations[key] = torch.stack((angles.cos(), angles.sin())).to(dtype).contiguous()
    return _rotations[key]


class AttentionHalf(HalfBlock, Protocol):
    heads: int
    slopes: torch.Tensor | None
    use_rope: bool


def ln_attention_residual(x: torch.Tensor, attn: AttentionHalf, causal: bool) -> torch.Tensor | None:
    """x + Attention(LayerNorm(x)) as one compiled op (LayerNorm, the fused QKV projection, RoPE's rotation of
    q and k, attention, the output projection, the residual), or None where it does not apply: dropout while
    training, wide heads, not the CPU. (A decoding cache: the caller's module path.)"""
    d_head = attn.matrices.shape[1] // attn.heads
    if d_head > MAX_HEAD_DIM or not _applies(x, attn, attn.dropout):
        return None
    rotation = rope_rotation(x.shape[1], d_head, x.dtype) if attn.use_rope else None
    op = extension().ln_attention  # the kernel cuts the views of attention_parts itself
    return op(x.contiguous(), attn.matrices, attn.vectors, attn.heads, attn.slopes, causal, EPS, rotation)


def backbone(
    h: torch.Tensor, blocks: Sequence[tuple[AttentionHalf, HalfBlock]], ln_f: nn.Module, causal: bool
) -> torch.Tensor | None:
    """Every block (its attention and MLP halves), then the final LayerNorm, as one compiled op (one autograd
    node for the lot), or None where any part of it would not run its own op (dropout while training, wide
    heads, a library-op twin, not the CPU): then the caller runs the blocks one by one."""
    if not (isinstance(ln_f, LayerNorm) and ln_f.fast and ln_f.kernel_form()):
        return None
    first = blocks[0][0]
    d_head = first.matrices.shape[1] // first.heads
    halves: list[HalfBlock] = [half for block in blocks for half in block]
    if d_head > MAX_HEAD_DIM or not all(_applies(h, half, half.dropout) for half in halves):
        return None
    weights = [t for half in halves for t in (half.matrices, half.vectors)] + [ln_f.weight, ln_f.bias]
    rotation = rope_rotation(h.shape[1], d_head, h.dtype) if first.use_rope else None
    return extension().backbone(h, weights, first.heads, first.slopes, causal, EPS, rotation)
