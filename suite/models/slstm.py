"""The sLSTM cell of xLSTM (Beck et al. 2024, "xLSTM: Extended Long Short-Term Memory", §2.2 and
Appendix A): the LSTM with exponential gating, a normaliser state and a stabiliser state. The readable
reference: one step is the equations; the compiled loop (suite/models/slstm_fast.py) is checked against it.

For the gate pre-activations from the input ã_t = W x_t (computed outside the cell, by the block's
head-wise projections: suite/models/xlstm.py), previous hidden state h_{t-1} and recurrent weights R
that are block-diagonal over heads (each head's h mixes only into its own gates):

    (ĩ, f̃, z̃, õ)_t = ã_t + R h_{t-1} + b                pre-activations of the four gates
    i_t = exp(ĩ_t)                                       exponential input gate
    f_t = σ(f̃_t)                                         forget gate (the paper allows exp(f̃_t) too;
                                                         the official code's "slstm" function: sigmoid)
    z_t = tanh(z̃_t)                                      cell input
    o_t = σ(õ_t)                                         output gate
    c_t = f_t c_{t-1} + i_t z_t                          cell state
    n_t = f_t n_{t-1} + i_t                              normaliser state
    h_t = o_t ⊙ c_t / n_t                                hidden state

exp(ĩ) overflows for ĩ > 88 in float32, so the cell carries c and n divided by exp(m_t), with the
stabiliser state m_t a running log-space maximum:

    m_t  = max(log f_t + m_{t-1}, ĩ_t)                   (m_t = ĩ_t and f'_t = 0 where n_{t-1} = 0)
    i'_t = exp(ĩ_t − m_t)            ≤ 1
    f'_t = exp(log f_t + m_{t-1} − m_t)   ≤ 1
    c_t  = f'_t c_{t-1} + i'_t z_t,   n_t = f'_t n_{t-1} + i'_t,   h_t = o_t ⊙ c_t / n_t

Every exp argument is ≤ 0, so nothing overflows, and h_t is unchanged: c_t and n_t are the unstabilised
ones times the same exp(−m_t), which cancels in c_t / n_t. (It also follows that n_t ≥ 1 after the first
step: one of i'_t, f'_t is exactly 1.) The official code starts from m = 0 and sets m_1 = ĩ_1 when the
whole batch's n is 0 (and clamps f'_1 ≤ 1, since exp(log f_1 − ĩ_1) overflows for a very negative ĩ_1); we
decide per unit: n_{t-1} = 0 is an empty memory, with nothing to forget (f'_t = 0, not computed from an exp
that can overflow), which is the same function from a zero state.

Gradients hold the stabiliser fixed (m_t is detached): h depends on c and n only through c / n, and every
later (c, n) carries the same factor exp(−m_t), so the paths through m_t contribute nothing to the gradient
of a loss on the outputs h or on the state carried into later steps (the official vanilla code
differentiates through the max and gets the same numbers). Only a loss on the stabilised c_T or n_T by
itself, which is not a quantity of the model, sees the difference: its gradient is taken at fixed m_T.
The initial m_0 is an input like c_0 and n_0, and has its gradient (through f'_1).

Heads: the H units are NH heads of d = H / NH units. Pre-activations are laid out head-major,
(NH, 4, d) per time step with the gates in the order (i, f, z, o); R is (NH, 4d, d) (each head's block
like nn.Linear's weight: out × in); b is (NH, 4d). The official package stores R as (NH, d, 4, d) and
the bias as (NH, 4, d): tests/test_xlstm.py copies weights between the two.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

GATES = "ifzo"


class SLSTMCell(nn.Module):
    """One sLSTM layer's recurrence, autograd through a Python loop over time (the definition).

    forward(wx: (B, T, 4H) gate pre-activations from the input, head-major; state=(h, c, n, m) each
    (B, H) or None) -> (h: (B, T, H), (h_T, c_T, n_T, m_T))
    """

    def __init__(self, hidden_size: int, num_heads: int = 4):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"sLSTM: hidden size {hidden_size} is not divisible by {num_heads} heads")
        self.hidden_size, self.num_heads = hidden_size, num_heads
        d = self.head_size = hidden_size // num_heads
        self.weight_hh = nn.Parameter(torch.zeros(num_heads, 4 * d, d))  # R: the official init is zeros
        self.bias = nn.Parameter(torch.zeros(num_heads, 4 * d))

    def init_state(self, batch_size: int, like: torch.Tensor):
        zeros = like.new_zeros(batch_size, self.hidden_size)
        return zeros, zeros.clone(), zeros.clone(), zeros.clone()

    # ---- one time step: the equations -------------------------------------------------------------------
    def cell(self, wx_t, h, c, n, m):
        """wx_t: (B, 4H); h, c, n, m: (B, H) -> the new (h, c, n, m)."""
        B, NH, d = h.shape[0], self.num_heads, self.head_size
        rec = torch.einsum("bhk,hgk->bhg", h.view(B, NH, d), self.weight_hh)  # R h_{t-1}: (B, NH, 4d)
        pre = wx_t.view(B, NH, 4 * d) + rec + self.bias
        i_pre, f_pre, z_pre, o_pre = (g.reshape(B, NH * d) for g in pre.view(B, NH, 4, d).unbind(2))
        log_f = F.logsigmoid(f_pre)
        empty = n == 0  # an empty memory: m_t = ĩ_t, nothing to forget
        m_new = torch.where(empty, i_pre, torch.maximum(log_f + m, i_pre)).detach()  # stabiliser
        i = torch.exp(i_pre - m_new)  # i'_t
        f = torch.exp(torch.where(empty, -math.inf, log_f + m - m_new))  # f'_t
        z = torch.tanh(z_pre)
        o = torch.sigmoid(o_pre)
        c_new = f * c + i * z
        n_new = f * n + i
        h_new = o * c_new / n_new
        return h_new, c_new, n_new, m_new

    # ---- the sequence -----------------------------------------------------------------------------------
    def forward(self, wx, state=None):
        h, c, n, m = state if state is not None else self.init_state(wx.shape[0], wx)
        outputs = []
        for wx_t in wx.unbind(1):  # unbind, not wx[:, t]: its backward is one stack, not T full-size adds
            h, c, n, m = self.cell(wx_t, h, c, n, m)
            outputs.append(h)
        return torch.stack(outputs, dim=1), (h, c, n, m)

    def step(self, wx_t, state):
        h, c, n, m = self.cell(wx_t, *state)
        return h, (h, c, n, m)
