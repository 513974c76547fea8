"""Our own small Transformer: pre-LayerNorm blocks, multi-head attention, GELU MLP, positions learned /
sinusoidal / rotary (RoPE) / ALiBi / none. On the CPU, attention (for heads up to 16 wide), LayerNorm and
the MLP run compiled kernels with the library ops' functions (suite/models/transformer_fast.py), every block
and the final LayerNorm as one op where none of them has dropout to apply; elsewhere
F.scaled_dot_product_attention, F.layer_norm, F.linear and F.gelu. Each half of a block holds its weights in
two tensors, its matrices and its vectors (Attention, MLP), which the optimizer and the clipping see as two.

    x = x + pos                                  (learned or sinusoidal; RoPE rotates q, k instead;
                                                  ALiBi adds −m_h·|i − j| to the scores; "none" adds nothing)
    for each block:
        x = x + W_o · Attention(LN(x))           Attention = softmax(q kᵀ / √d_head + bias + causal mask) v
        x = x + W_2 · GELU(W_1 · LN(x))
    return LN_f(x)

Causal for sequence-to-sequence tasks and language modelling; a full (non-causal) encoder when the
task allows it (TaskSpec.causal False, e.g. a forecasting lookback). Initialisation as GPT-2:
N(0, 0.02), residual projections scaled by 1/√(2·layers). step() decodes one token at a time
with a key/value cache.

Length generalization: only a learned table stops at max_len. Rotary, ALiBi and "none" (NoPE: a
causal model still sees order through its mask; a non-causal one sees a bag of tokens) run at any
length; the sinusoidal table is computed for max_len, which callers set to the longest sequence.
"""

from __future__ import annotations

import copy
import math
from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from suite.models import transformer_fast
from suite.models.transformer_fast import LayerNorm

POSITIONS = ("learned", "sinusoidal", "rope", "alibi", "none")


def sinusoidal_table(length: int, dim: int) -> torch.Tensor:
    pos = torch.arange(length, dtype=torch.float64)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table.float()


def rope(x: torch.Tensor, start: int) -> torch.Tensor:
    """Rotate pairs of channels of q or k (B, T, heads, d_head) by position-dependent angles."""
    angles = transformer_fast.rope_angles(x.shape[1], x.shape[-1], start, x.device)[:, None, :]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


def linear_default_init(*layers: tuple[torch.Tensor, torch.Tensor]) -> None:
    """nn.Linear's own initialisation of each (weight, bias), in order. Transformer._init overwrites it with
    GPT-2's; it is drawn so that a seed gives the weights it gave when the halves were nn.Linear modules
    (whose constructors drew it)."""
    with torch.no_grad():
        for weight, bias in layers:
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
            bound = 1 / math.sqrt(weight.shape[1])
            nn.init.uniform_(bias, -bound, bound)


def gpt2_init(weight, residual, vectors, ln_weight, layers: int) -> None:
    """GPT-2's initialisation of one half of a block: its input projection N(0, 0.02), its residual
    projection (W_o, W_2) N(0, 0.02 / √(2·layers)); LayerNorm γ 1, β and the biases 0."""
    with torch.no_grad():
        nn.init.normal_(weight, 0.0, 0.02)
        nn.init.normal_(residual, 0.0, 0.02 / math.sqrt(2 * layers))
        vectors.zero_()
        ln_weight.fill_(1.0)


class Attention(nn.Module):
    """A block's first half, x + W_o · Attention(LN(x)), LayerNorm included. Its weights are two tensors
    (transformer_fast.attention_parts names the views): matrices (4d, d) = W_qkv (q, k, v rows), W_o; vectors
    (6d) = LayerNorm γ, β, b_qkv, b_o. Two tensors instead of six: the optimizer and the gradient clipping
    loop over tensors, and at d_model 28 each tensor costs them more than its arithmetic."""

    slopes: torch.Tensor | None  # ALiBi's per-head slopes (a buffer), None without ALiBi
    fast = True  # False: the library's ops (flop_twin() counts FLOPs on them; the kernels are opaque to it)

    def __init__(self, d_model, heads, dropout, positions: str = "learned"):
        super().__init__()
        assert d_model % heads == 0, "d_model must be divisible by heads"
        self.heads, self.dropout = heads, dropout
        self.use_rope = positions == "rope"
        self.matrices = nn.Parameter(torch.empty(4 * d_model, d_model))
        self.vectors = nn.Parameter(torch.empty(6 * d_model))
        slopes = transformer_fast.alibi_slopes(heads) if positions == "alibi" else None
        self.register_buffer("slopes", slopes, persistent=False)
        _, _, w_qkv, b_qkv, w_o, b_o = transformer_fast.attention_parts(self.matrices, self.vectors)
        linear_default_init((w_qkv, b_qkv), (w_o, b_o))

    def forward(self, x, causal: bool, cache=None, start: int = 0):
        if cache is None:  # on the CPU, usually the whole half as one op
            fused = transformer_fast.ln_attention_residual(x, self, causal)
            if fused is not None:
                return fused
        B, T, D = x.shape
        dropout = self.dropout if self.training else 0.0
        ln_w, ln_b, w_qkv, b_qkv, w_o, b_o = transformer_fast.attention_parts(self.matrices, self.vectors)
        z = transformer_fast.layer_norm(x, ln_w, ln_b, self.fast)
        # (B, T, heads, d_head) each, views of the fused projection
        q, k, v = F.linear(z, w_qkv, b_qkv).view(B, T, 3, self.heads, D // self.heads).unbind(2)
        if self.use_rope:
            q, k = rope(q, start), rope(k, start)
        if cache is not None:  # incremental decoding: attend to every cached position
            if cache[0] is not None:
                k, v = torch.cat([cache[0], k], 1), torch.cat([cache[1], v], 1)
            cache[0], cache[1] = k, v
        attend = transformer_fast.attention if self.fast else transformer_fast.sdpa
        y = attend(q, k, v, causal, self.slopes, dropout)
        return x + F.dropout(F.linear(y.reshape(B, T, D), w_o, b_o), dropout, self.training)

    def init_weights(self, layers: int) -> None:
        ln_w, _, w_qkv, _, w_o, _ = transformer_fast.attention_parts(self.matrices, self.vectors)
        gpt2_init(w_qkv, w_o, self.vectors, ln_w, layers)


class MLP(nn.Module):
    """A block's second half, x + W_2 · GELU(W_1 · LN(x) + b_1) + b_2 (GELU exact), LayerNorm included, its
    weights as two tensors (transformer_fast.mlp_parts): matrices (2·hidden, d) = W_1, then W_2 (d, hidden)
    row-major; vectors (3d + hidden) = LayerNorm γ, β, b_1, b_2."""

    fast = True

    def __init__(self, d_model: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = dropout
        self.matrices = nn.Parameter(torch.empty(2 * hidden, d_model))
        self.vectors = nn.Parameter(torch.empty(3 * d_model + hidden))
        _, _, w1, b1, w2, b2 = transformer_fast.mlp_parts(self.matrices, self.vectors)
        linear_default_init((w1, b1), (w2, b2))

    def forward(self, x):
        fused = transformer_fast.ln_mlp_residual(x, self, self.dropout)
        if fused is not None:
            return fused
        ln_w, ln_b, w1, b1, w2, b2 = transformer_fast.mlp_parts(self.matrices, self.vectors)
        h = F.gelu(F.linear(transformer_fast.layer_norm(x, ln_w, ln_b, self.fast), w1, b1))
        return x + F.dropout(F.linear(h, w2, b2), self.dropout, self.training)

    def init_weights(self, layers: int) -> None:
        ln_w, _, w1, _, w2, _ = transformer_fast.mlp_parts(self.matrices, self.vectors)
        gpt2_init(w1, w2, self.vectors, ln_w, layers)


class Block(nn.Module):
    def __init__(self, d_model, heads, dropout, positions: str = "learned"):
        super().__init__()
        self.attn = Attention(d_model, heads, dropout, positions)
        self.mlp = MLP(d_model, 4 * d_model, dropout)

    def forward(self, x, causal, cache=None, start=0):
        return self.mlp(self.attn(x, causal, cache, start))


class Transformer(nn.Module):
    """forward(h: (B, T, d_model)) -> (B, T, d_model). Inputs are already embedded."""

    def __init__(
        self,
        d_model: int,
        layers: int = 2,
        heads: int = 4,
        max_len: int = 1024,
        positions: str = "learned",
        dropout: float = 0.0,
        causal: bool = True,
    ):
        super().__init__()
        if positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}")
        self.causal, self.positions, self.max_len = causal, positions, max_len
        self.pos = nn.Parameter(torch.zeros(max_len, d_model)) if positions == "learned" else None
        if positions == "sinusoidal":
            self.register_buffer("table", sinusoidal_table(max_len, d_model), persistent=False)
        self.blocks = nn.ModuleList(Block(d_model, heads, dropout, positions) for _ in range(layers))
        self.ln_f = LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)
        self._init(layers)

    def _init(self, layers):
        # in this order: a seed gives the weights it gave before the halves held them
        for block in self.blocks:
            block.attn.init_weights(layers)
            block.mlp.init_weights(layers)
        if self.pos is not None:
            nn.init.normal_(self.pos, 0.0, 0.02)

    def _blocks(self) -> list[Block]:
        return cast(list[Block], list(self.blocks))

    def _attention(self) -> Attention:
        return self._blocks()[0].attn

    def _d_head(self) -> int:
        attn = self._attention()
        return attn.matrices.shape[1] // attn.heads

    def prepare(self) -> float | None:
        """Build the C++ kernels (transformer_fast) before any clock starts."""
        return transformer_fast.prepare()

    def backend(self, device: torch.device, dtype: torch.dtype) -> str:
        probe = torch.empty(0, 0, 0, self._d_head(), device=device, dtype=dtype)
        attention = transformer_fast.kernel_name(probe, self._attention().dropout if self.training else 0.0)
        kernels = "C++ LayerNorm and MLP" if transformer_fast.compiled_applies(probe[..., :1]) else "ATen"
        return f"{device.type}: ATen GEMM, {kernels}, attention: {attention}"

    def flop_twin(self) -> nn.Module:
        """The same weights on the library's ops (attention through SDPA, which the FLOP counter sees)."""
        twin = copy.deepcopy(self)
        for module in twin.modules():
            if isinstance(module, (Attention, LayerNorm, MLP)):
                module.fast = False
        return twin

    def lookup_parameters(self):
        """The learned position table: its size follows max_len, so it is kept out of the size budget."""
        return [self.pos] if self.pos is not None else []

    def _add_positions(self, h, start):
        T = h.shape[1]
        if start + T > self.max_len and self.positions in ("learned", "sinusoidal"):
            raise ValueError(f"sequence of {start + T} positions is longer than max_len={self.max_len}")
        if self.positions == "learned":
            return h + self.pos[start : start + T]
        if self.positions == "sinusoidal":
            return h + self.table[start : start + T].to(h.dtype)
        return h

    def forward(self, h, state=None):
        h = self.drop(self._add_positions(h, 0))
        halves = [(block.attn, block.mlp) for block in self._blocks()]
        fused = transformer_fast.backbone(h, halves, self.ln_f, self.causal)  # on the CPU, usually one op
        if fused is not None:
            return fused, None
        for block in self.blocks:
            h = block(h, self.causal)
        return self.ln_f(h), None

    # incremental decoding with a key/value cache per block
    def init_step_state(self, batch_size, like):
        return {"pos": 0, "cache": [[None, None] for _ in self.blocks]}

    def step(self, h_t, state):
        start = state["pos"]
        h = self._add_positions(h_t.unsqueeze(1), start)
        for block, cache in zip(self.blocks, state["cache"]):
            h = block(h, True, cache, start)
        state["pos"] = start + 1
        return self.ln_f(h)[:, 0], state
