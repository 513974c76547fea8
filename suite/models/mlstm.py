"""The mLSTM cell of xLSTM (Beck et al. 2024, "xLSTM: Extended Long Short-Term Memory", §2.3 and
Appendix A): a matrix memory written with an outer product and read with a query, no hidden-to-hidden
weights, so that every step can be computed at once, like attention.

Per head (d units), for query, key and value q_t, k_t, v_t (k_t already scaled by 1/√d) and scalar gate
pre-activations ĩ_t, f̃_t:

    i_t = exp(ĩ_t)                                  exponential input gate
    f_t = σ(f̃_t)                                    forget gate (the official code's choice; exp allowed)
    C_t = f_t C_{t-1} + i_t v_t k_tᵀ                matrix memory (d × d)
    n_t = f_t n_{t-1} + i_t k_t                     normaliser (d)
    h̃_t = C_t q_t / max(|n_tᵀ q_t|, 1)             query readout
    h_t = o_t ⊙ h̃_t                                 (in the block the output gate is the SiLU-gated
                                                     branch around the cell: suite/models/xlstm.py)

The stabiliser, as in the sLSTM (suite/models/slstm.py): m_t = max(log f_t + m_{t-1}, ĩ_t), and C, n are
carried divided by exp(m_t): i'_t = exp(ĩ_t − m_t), f'_t = exp(log f_t + m_{t-1} − m_t), and the "1" of the
readout's lower bound becomes exp(−m_t):

    h̃_t = C_t q_t / (max(|n_tᵀ q_t|, exp(−m_t)) + ε)          ε = 1e-6 (the official code's)

Without ε the stabiliser would not change h̃ at all; ε makes the forms agree only if they use the same
m_t, so every form here starts from an empty memory with m_0 = −∞ (the official recurrent step starts
from m_0 = 0, which changes h̃ by ε-sized amounts; its parallel form is ours).

Three forms of one function, which tests/test_xlstm.py checks agree to 1e-10 in float64:
    mlstm_recurrent   the definition above, one step at a time (and decoding)
    mlstm_parallel    all steps at once: with F_tj = Σ_{s=j+1..t} log f_s (0 for j = t),
                      log D_tj = F_tj + ĩ_j (−∞ for j > t), m_t = max_j log D_tj (exactly the recurrent m_t),
                      S = (q kᵀ) ⊙ exp(log D − m),  h̃ = S v / (max(|S 1|, exp(−m)) + ε)
    mlstm_chunkwise   the parallel form inside chunks of L steps, the recurrent one between chunks
                      (memory O(T L) instead of O(T²)): what training runs, L = 32
Shapes: q, k, v (B, NH, T, d); ĩ, f̃ (B, NH, T); state (C (B, NH, d, d), n (B, NH, d), m (B, NH)).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

EPS = 1e-6
CHUNK = 32  # training's chunk length: at head size ~16-32 on a CPU, 32 beat 16 and 64 (and the parallel
# form beyond 64 steps) in fwd+bwd time; a sequence of at most one chunk runs the parallel form


def empty_state(q: torch.Tensor):
    """An empty memory for q's (B, NH, ·, d): C = 0, n = 0, m = −∞ (no forget term wins the max)."""
    B, NH, _, d = q.shape
    return q.new_zeros(B, NH, d, d), q.new_zeros(B, NH, d), q.new_full((B, NH), -math.inf)


def mlstm_recurrent(q, k, v, i_pre, f_pre, state=None, eps: float = EPS):
    """The definition: one step at a time. -> (h̃ (B, NH, T, d), final state (C, n, m))."""
    C, n, m = state if state is not None else empty_state(q)
    k = k / math.sqrt(q.shape[-1])
    log_f = F.logsigmoid(f_pre)
    out = []
    steps = zip(*(x.unbind(2) for x in (q, k, v, i_pre, log_f)))  # (B, NH, d) and (B, NH) per step
    for q_t, k_t, v_t, i_t, log_f_t in steps:
        m_new = torch.maximum(log_f_t + m, i_t)  # (B, NH)
        i = torch.exp(i_t - m_new)[..., None]  # i'_t
        f = torch.exp(log_f_t + m - m_new)[..., None]  # f'_t
        C = f[..., None] * C + i[..., None] * (v_t[..., :, None] * k_t[..., None, :])  # v kᵀ: (B, NH, d, d)
        n = f * n + i * k_t
        num = torch.einsum("bhvk,bhk->bhv", C, q_t)  # C q
        den = torch.maximum((n * q_t).sum(-1).abs(), torch.exp(-m_new)) + eps  # (B, NH)
        out.append(num / den[..., None])
        m = m_new
    return torch.stack(out, dim=2), (C, n, m)


def _decay(log_f_cum, i_pre):
    """log D (…, T, T): Σ_{s=j+1..t} log f_s + ĩ_j on and below the diagonal, −∞ above it."""
    T = i_pre.shape[-1]
    log_d = log_f_cum[..., :, None] - log_f_cum[..., None, :] + i_pre[..., None, :]
    causal = torch.ones(T, T, dtype=torch.bool, device=i_pre.device).tril()
    return log_d.masked_fill(~causal, -math.inf)


def mlstm_parallel(q, k, v, i_pre, f_pre, eps: float = EPS):
    """All steps at once (from an empty memory). -> h̃ (B, NH, T, d)."""
    d = q.shape[-1]
    log_d = _decay(torch.cumsum(F.logsigmoid(f_pre), -1), i_pre)  # (B, NH, T, T)
    m = log_d.amax(-1, keepdim=True)  # the stabiliser m_t of every row: (B, NH, T, 1)
    s = (q @ k.transpose(-1, -2) / math.sqrt(d)) * torch.exp(log_d - m)  # S = (q kᵀ) ⊙ D'
    den = torch.maximum(s.sum(-1, keepdim=True).abs(), torch.exp(-m)) + eps
    return (s @ v) / den  # divide the (T, d) result, not the (T, T) matrix


def mlstm_chunkwise(q, k, v, i_pre, f_pre, state=None, chunk: int = CHUNK, eps: float = EPS):
    """The parallel form within chunks of `chunk` steps, the recurrence (C, n, m) between them.
    -> (h̃ (B, NH, T, d), final state). One chunk of length T is the parallel form."""
    C, n, m = state if state is not None else empty_state(q)
    k = k / math.sqrt(q.shape[-1])
    log_f = F.logsigmoid(f_pre)
    out = []
    for s0 in range(0, q.shape[2], chunk):
        sl = slice(s0, s0 + chunk)
        q_c, k_c, v_c, i_c = q[:, :, sl], k[:, :, sl], v[:, :, sl], i_pre[:, :, sl]
        g = torch.cumsum(log_f[:, :, sl], -1)  # Σ_{s≤τ} log f_s from the chunk's start: (B, NH, L)
        log_d = _decay(g, i_c)  # within the chunk: (B, NH, L, L)
        carried = (g + m[..., None])[..., None]  # log of the decay applied to the carried memory
        m_row = torch.maximum(carried, log_d.amax(-1, keepdim=True))  # = the recurrent m_t: (B, NH, L, 1)
        s = (q_c @ k_c.transpose(-1, -2)) * torch.exp(log_d - m_row)
        w = torch.exp(carried - m_row)  # weight of the carried (C, n) in each row
        num = s @ v_c + w * torch.einsum("bhvk,bhlk->bhlv", C, q_c)
        den = s.sum(-1, keepdim=True) + w * torch.einsum("bhk,bhlk->bhl", n, q_c)[..., None]
        out.append(num / (torch.maximum(den.abs(), torch.exp(-m_row)) + eps))
        # the memory at the chunk's end: the recurrence's state after its last step
        m_end = m_row[:, :, -1, 0]  # (B, NH)
        write = torch.exp(g[:, :, -1:] - g + i_c - m_end[..., None])  # i'_j ∏ f' after j: (B, NH, L)
        keep = torch.exp(g[:, :, -1] + m - m_end)[..., None]  # (B, NH, 1)
        C = keep[..., None] * C + torch.einsum("bhl,bhlv,bhlk->bhvk", write, v_c, k_c)
        n = keep * n + torch.einsum("bhl,bhlk->bhk", write, k_c)
        m = m_end
    return torch.cat(out, dim=2), (C, n, m)


class HeadNorm(nn.Module):
    """Layer norm within each head (the official MultiHeadLayerNorm: group norm over NH groups), scale
    only, no bias. (…, NH·d) -> (…, NH·d)."""

    def __init__(self, dim: int, heads: int, eps: float = 1e-5):
        super().__init__()
        self.heads, self.eps = heads, eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        shape = x.shape
        x = F.group_norm(x.reshape(-1, shape[-1]), self.heads, self.weight, None, self.eps)
        return x.view(shape)


class MLSTMCell(nn.Module):
    """The mLSTM of one block, as the official mLSTMCell: the gates' pre-activations ĩ, f̃ (one per head)
    are linear in the concatenated q, k, v; the readout h̃ is normalised per head.

    forward(q, k, v: (B, T, E)) -> (B, T, E), E = heads · d; `form` chooses which of the three forms runs
    ("chunkwise" for training, "parallel" or "recurrent" for the tests)."""

    def __init__(self, dim: int, heads: int = 4, form: str = "chunkwise", chunk: int = CHUNK):
        super().__init__()
        if dim % heads:
            raise ValueError(f"mLSTM: inner dimension {dim} is not divisible by {heads} heads")
        self.dim, self.heads, self.form, self.chunk = dim, heads, form, chunk
        self.igate = nn.Linear(3 * dim, heads)
        self.fgate = nn.Linear(3 * dim, heads)
        self.outnorm = HeadNorm(dim, heads)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official init: f̃ starts at 3..6 (σ ≈ 0.95-0.998: remember), ĩ near 0, both ignore the input."""
        nn.init.zeros_(self.fgate.weight)
        with torch.no_grad():
            self.fgate.bias.copy_(torch.linspace(3.0, 6.0, self.heads))
        nn.init.zeros_(self.igate.weight)
        nn.init.normal_(self.igate.bias, 0.0, 0.1)
        nn.init.ones_(self.outnorm.weight)

    def _heads(self, q, k, v):
        """(B, T, E) each -> q, k, v (B, NH, T, d) and the gates' pre-activations ĩ, f̃ (B, NH, T)."""
        B, T, _ = q.shape
        qkv = torch.cat([q, k, v], dim=-1)
        i_pre, f_pre = (g(qkv).transpose(1, 2) for g in (self.igate, self.fgate))
        q, k, v = (x.view(B, T, self.heads, -1).transpose(1, 2) for x in (q, k, v))
        return q, k, v, i_pre, f_pre

    def _out(self, h):
        """h̃ (B, NH, T, d) -> normalised per head, (B, T, E)."""
        B, _, T, _ = h.shape
        return self.outnorm(h.transpose(1, 2).reshape(B, T, self.dim))

    def forward(self, q, k, v):
        q, k, v, i_pre, f_pre = self._heads(q, k, v)
        if self.form == "parallel":
            h = mlstm_parallel(q, k, v, i_pre, f_pre)
        elif self.form == "recurrent":
            h, _ = mlstm_recurrent(q, k, v, i_pre, f_pre)
        elif q.shape[2] <= self.chunk:  # one chunk: the parallel form, without the final state's cost
            h = mlstm_parallel(q, k, v, i_pre, f_pre)
        else:
            h, _ = mlstm_chunkwise(q, k, v, i_pre, f_pre, chunk=self.chunk)
        return self._out(h)

    def step(self, q_t, k_t, v_t, state=None):
        """One position (B, E) each, the memory (C, n, m) carried (None: empty) -> ((B, E), state)."""
        q, k, v, i_pre, f_pre = self._heads(q_t[:, None], k_t[:, None], v_t[:, None])
        h, state = mlstm_recurrent(q, k, v, i_pre, f_pre, state)
        return self._out(h)[:, 0], state
