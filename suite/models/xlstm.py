"""xLSTM blocks and the stack (Beck et al. 2024, §2.4 and Appendix B; the official NX-AI/xlstm code's
sLSTMBlock, mLSTMBlock and xLSTMBlockStack), around the cells of suite/models/slstm.py and mlstm.py.

    x = x + SLSTMLayer(LN(x))         sLSTM block, "post up-projection": the cell works at the model
    x = x + GatedFFN(LN(x))             width, then a gated MLP (GELU) up by 4/3 and back down
    x = x + MLSTMLayer(LN(x))         mLSTM block, "pre up-projection": up by 2 first, the cell works there
    return LN_f(x)                    after the last block

    SLSTMLayer(x):  x' = SiLU(causal_conv4(x));  (ĩ, f̃) = headwise(x'),  (z̃, õ) = headwise(x)
                    h = sLSTM(ĩ, f̃, z̃, õ);  return HeadNorm(h)
    MLSTMLayer(x):  (a, g) = W_up x  (2 × 2D);  a' = SiLU(causal_conv4(a))
                    q, k = blockdiag₄(a'),  v = blockdiag₄(a)        (blocks of 4 units, as the official code)
                    h = mLSTM(q, k, v) + skip ⊙ a';  return W_down (h ⊙ SiLU(g))
Heads: 4 in both cells (the paper's and the official default); headwise = block-diagonal over the heads.

Simplified against the official code, where it does not matter at our sizes (20k-50k parameters):
  - widths are not rounded up to multiples of 64 (the official code rounds the up-projections: at d_model
    56 the mLSTM's inner width would become 128 instead of 112 and the FFN's 128 instead of 75, doubling
    those layers); the FFN factor is the paper's 4/3 (the code's default is 1.3);
  - LayerNorms are torch's (scale, no bias), initialised to 1: the official code stores the scale as 1 + w
    with w = 0 at init, the same function;
  - no weight decay groups, no mixed precision, no CUDA kernels: the sLSTM runs our compiled CPU loop
    (suite/models/slstm_fast.py) or its reference loop, the mLSTM the chunkwise form in ATen ops.
Initialisation is the official one (small init, Wang init for the down-projections, the sLSTM's
power-law forget-gate biases and zero recurrent weights, the mLSTM's forget bias 3..6).
"""

from __future__ import annotations

import copy
import math
from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from suite.errors import ConfigError
from suite.models.mlstm import HeadNorm, MLSTMCell
from suite.models.slstm import GATES
from suite.models.slstm_fast import FastSLSTMCell

HEADS = 4
QKV_BLOCK = 4  # the mLSTM's q, k, v projections: block-diagonal, blocks of 4 units
CONV_KERNEL = 4
FFN_FACTOR = 4 / 3  # the sLSTM block's post up-projection
MLSTM_FACTOR = 2  # the mLSTM block's pre up-projection


def small_init_(w: torch.Tensor, dim: int) -> None:
    """N(0, √(2 / 5 dim)) (Nguyen & Salazar 2019), the official code's default for projections."""
    nn.init.normal_(w, 0.0, math.sqrt(2 / (5 * dim)))


def wang_init_(w: torch.Tensor, dim: int, blocks: int) -> None:
    """N(0, 2 / (blocks √dim)): the residual branches' last projections."""
    nn.init.normal_(w, 0.0, 2 / blocks / math.sqrt(dim))


class HeadwiseLinear(nn.Module):
    """A block-diagonal linear map: (…, heads · n) -> (…, heads · n), one n × n block per head."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"headwise projection: {dim} units do not split into {heads} heads")
        self.heads = heads
        self.weight = nn.Parameter(torch.empty(heads, dim // heads, dim // heads))  # per head: out × in

    def forward(self, x):
        y = torch.einsum("...hi,hoi->...ho", x.unflatten(-1, (self.heads, -1)), self.weight)
        return y.flatten(-2)


class CausalConv1d(nn.Module):
    """Depthwise convolution over time that sees only the past: (B, T, D) -> (B, T, D)."""

    def __init__(self, dim: int, kernel: int = CONV_KERNEL):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel, padding=kernel - 1, groups=dim)

    def forward(self, x):
        T = x.shape[1]
        return self.conv(x.transpose(1, 2))[..., :T].transpose(1, 2)

    def step(self, x_t, window):
        """One position: x_t (B, D), window (B, kernel − 1, D) the inputs before it -> (y_t, window)."""
        full = torch.cat([window, x_t[:, None]], dim=1)  # (B, kernel, D), oldest first
        y = torch.einsum("bkd,dk->bd", full, self.conv.weight[:, 0]) + self.conv.bias
        return y, full[:, 1:]

    def init_window(self, batch_size: int, like: torch.Tensor):
        return like.new_zeros(batch_size, self.conv.kernel_size[0] - 1, self.conv.in_channels)


class GatedFFN(nn.Module):
    """The sLSTM block's post up-projection: W_down (GELU(W_gate x) ⊙ W_up x)."""

    def __init__(self, dim: int, factor: float = FFN_FACTOR, dropout: float = 0.0):
        super().__init__()
        self.inner = max(1, round(factor * dim))
        self.up = nn.Linear(dim, 2 * self.inner, bias=False)  # gate and up, one matrix
        self.down = nn.Linear(self.inner, dim, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        gate, up = self.up(x).split(self.inner, dim=-1)
        return self.dropout(self.down(F.gelu(gate) * up))


class SLSTMLayer(nn.Module):
    """Causal conv for the input and forget gates, head-wise gate projections, the sLSTM, a head norm."""

    def __init__(self, dim: int, heads: int = HEADS, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.conv = CausalConv1d(dim)
        self.gates = nn.ModuleDict({g: HeadwiseLinear(dim, heads) for g in GATES})
        self.cell = FastSLSTMCell(dim, heads)
        self.norm = HeadNorm(dim, heads)
        self.dropout = nn.Dropout(dropout)

    def reset_parameters(self, block: int, blocks: int) -> None:
        dim = self.cell.hidden_size
        for gate in GATES:
            small_init_(cast(HeadwiseLinear, self.gates[gate]).weight, dim)
        nn.init.zeros_(self.cell.weight_hh)
        with torch.no_grad():  # b_f: the official "powerlaw_blockdependent" init, the rest 0
            self.cell.bias.zero_()
            d = self.cell.head_size
            ratio = block / (blocks - 1) if blocks > 1 else 0.0
            f_bias = -(-5.0 + 12.0 * (torch.arange(d) / max(d - 1, 1)) ** (0.3 + 1.3 * ratio))
            self.cell.bias[:, d : 2 * d] = f_bias  # each head's f block: from +5 down to -7

    def _gates(self, x, xc):
        """Input and conv branch (…, D) -> the cell's pre-activations (…, 4D), head-major (…, NH, 4, d)."""
        sources = {"i": xc, "f": xc, "z": x, "o": x}
        wx = torch.stack([self.gates[g](sources[g]).unflatten(-1, (self.heads, -1)) for g in GATES], dim=-2)
        return wx.flatten(-3)

    def forward(self, x):
        h, _ = self.cell(self._gates(x, F.silu(self.conv(x))))
        return self.norm(self.dropout(h))

    def init_step_state(self, batch_size: int, like: torch.Tensor):
        return self.conv.init_window(batch_size, like), self.cell.init_state(batch_size, like)

    def step(self, x_t, state):
        window, cell_state = state
        xc, window = self.conv.step(x_t, window)
        h, cell_state = self.cell.step(self._gates(x_t, F.silu(xc)), cell_state)
        return self.norm(h), (window, cell_state)


class MLSTMLayer(nn.Module):
    """Up-projection into a cell branch and a gate branch; conv, q/k/v, mLSTM, learnable skip, SiLU gate."""

    def __init__(self, dim: int, heads: int = HEADS, dropout: float = 0.0, factor: int = MLSTM_FACTOR):
        super().__init__()
        inner = self.inner = factor * dim
        self.up = nn.Linear(dim, 2 * inner, bias=False)
        self.conv = CausalConv1d(inner)
        self.q, self.k, self.v = (HeadwiseLinear(inner, inner // QKV_BLOCK) for _ in range(3))
        self.cell = MLSTMCell(inner, heads)
        self.skip = nn.Parameter(torch.ones(inner))
        self.down = nn.Linear(inner, dim, bias=False)
        self.dropout = nn.Dropout(dropout)

    def reset_parameters(self, block: int, blocks: int) -> None:
        dim = self.down.out_features
        small_init_(self.up.weight, dim)
        for proj in (self.q, self.k, self.v):
            small_init_(proj.weight, dim)
        wang_init_(self.down.weight, dim, blocks)
        nn.init.ones_(self.skip)
        self.cell.reset_parameters()

    def forward(self, x):
        a, g = self.up(x).split(self.inner, dim=-1)
        a_conv = F.silu(self.conv(a))
        h = self.cell(self.q(a_conv), self.k(a_conv), self.v(a))
        return self.dropout(self.down((h + self.skip * a_conv) * F.silu(g)))

    def init_step_state(self, batch_size: int, like: torch.Tensor):
        return self.conv.init_window(batch_size, like), None  # None: an empty matrix memory

    def step(self, x_t, state):
        window, memory = state
        a, g = self.up(x_t).split(self.inner, dim=-1)
        a_conv, window = self.conv.step(a, window)
        a_conv = F.silu(a_conv)
        h, memory = self.cell.step(self.q(a_conv), self.k(a_conv), self.v(a), memory)
        return self.down((h + self.skip * a_conv) * F.silu(g)), (window, memory)


class XLSTMBlock(nn.Module):
    """Pre-LayerNorm residual block around an sLSTM layer (+ gated FFN) or an mLSTM layer."""

    def __init__(self, kind: str, dim: int, heads: int, dropout: float, block: int, blocks: int):
        super().__init__()
        self.kind = kind
        self.norm = nn.LayerNorm(dim, bias=False)
        if kind == "s":
            self.layer: SLSTMLayer | MLSTMLayer = SLSTMLayer(dim, heads, dropout)
            self.ffn_norm = nn.LayerNorm(dim, bias=False)
            self.ffn = GatedFFN(dim, dropout=dropout)
            small_init_(self.ffn.up.weight, dim)
            wang_init_(self.ffn.down.weight, dim, blocks)
        elif kind == "m":
            self.layer = MLSTMLayer(dim, heads, dropout)
        else:
            raise ValueError(f"xLSTM block kind {kind!r}: 's' (sLSTM) or 'm' (mLSTM)")
        self.layer.reset_parameters(block, blocks)

    def forward(self, x):
        x = x + self.layer(self.norm(x))
        if self.kind == "s":
            x = x + self.ffn(self.ffn_norm(x))
        return x

    def step(self, x_t, state):
        y, state = self.layer.step(self.norm(x_t), state)
        x_t = x_t + y
        if self.kind == "s":
            x_t = x_t + self.ffn(self.ffn_norm(x_t))
        return x_t, state


class XLSTMStack(nn.Module):
    """`layers` xLSTM blocks, their kinds cycling through `pattern` ("s": all sLSTM, "m": all mLSTM, "ms":
    alternating, the paper's xLSTM[1:1]), then a LayerNorm. (B, T, width) -> ((B, T, width), None)."""

    def __init__(self, width: int, layers: int, pattern: str, heads: int = HEADS, dropout: float = 0.0):
        super().__init__()
        self.kinds = [pattern[b % len(pattern)] for b in range(layers)]
        inner = MLSTM_FACTOR * width
        if set(pattern) - {"s", "m"} or layers < 1 or heads < 1:
            raise ConfigError(f"xLSTM: need a pattern of 's'/'m' ({pattern!r}), layers, heads >= 1")
        if "s" in self.kinds and width % heads:
            raise ConfigError(f"sLSTM: width {width} does not split into {heads} heads; use a multiple")
        if "m" in self.kinds and (inner % heads or inner % QKV_BLOCK):
            raise ConfigError(
                f"mLSTM blocks: inner width {inner} (= {MLSTM_FACTOR} x {width}) does not split into {heads} "
                f"heads and blocks of {QKV_BLOCK}; use an even width"
            )
        self.blocks = nn.ModuleList(
            XLSTMBlock(kind, width, heads, dropout, b, layers) for b, kind in enumerate(self.kinds)
        )
        self.norm = nn.LayerNorm(width, bias=False)

    def forward(self, x, state=None):
        if state is not None:
            raise ValueError("XLSTMStack runs whole sequences from an empty state")
        for block in self.blocks:
            x = block(x)
        return self.norm(x), None

    # incremental decoding: per block its conv window and its cell's state (sLSTM: h, c, n, m; mLSTM: C, n, m)
    def init_step_state(self, batch_size: int, like: torch.Tensor):
        return [block.layer.init_step_state(batch_size, like) for block in self._blocks()]

    def step(self, x_t, state):
        state = list(state)
        for b, block in enumerate(self._blocks()):
            x_t, state[b] = block.step(x_t, state[b])
        return self.norm(x_t), state

    def _blocks(self) -> list[XLSTMBlock]:
        return [cast(XLSTMBlock, block) for block in self.blocks]

    def slstm_cells(self) -> list[FastSLSTMCell]:
        return [m for m in self.modules() if isinstance(m, FastSLSTMCell)]

    def backend(self, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> str:
        device = device or torch.device("cpu")
        parts = []
        if "s" in self.kinds:
            parts.append(f"sLSTM {self.slstm_cells()[0].backend(device, dtype)}")
        if "m" in self.kinds:
            parts.append(f"mLSTM {device.type}: chunkwise-parallel form in ATen ops")
        return "; ".join(parts)

    def flop_twin(self) -> nn.Module:
        """The same weights with the sLSTM's reference loop, whose matrix products FlopCounterMode sees."""
        twin = copy.deepcopy(self)
        for cell in twin.slstm_cells():
            cell.use_compiled = False
        return twin
