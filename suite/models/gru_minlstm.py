"""The modern comparison points of the LSTM family: GRU and minLSTM.

GRU (Cho et al. 2014), in nn.GRU's parameter layout, gate order (r, z, n):
    r_t = σ(W_r x_t + b_ir + R_r h_{t-1} + b_hr)          reset gate
    z_t = σ(W_z x_t + b_iz + R_z h_{t-1} + b_hz)          update gate
    n_t = tanh(W_n x_t + b_in + r_t ⊙ (R_n h_{t-1} + b_hn))
    h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t-1}

minLSTM (Feng et al. 2024, "Were RNNs All We Needed?"): gates see only the input, so the
recurrence is linear in h and all steps can be computed at once by a parallel scan:
    f_t = σ(W_f x_t),  i_t = σ(W_i x_t),  h̃_t = g(W_h x_t)     g(v) = v + ½ (v ≥ 0), σ(v) (v < 0)
    f'_t = f_t / (f_t + i_t),  i'_t = i_t / (f_t + i_t)
    h_t = f'_t ⊙ h_{t-1} + i'_t ⊙ h̃_t
The scan runs in log space, with a_t = Σ_{k≤t} log f'_k:
    log h_t = a_t + logcumsumexp_{k≤t}(log i'_k + log h̃_k − a_k)
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class ReferenceGRU(nn.Module):
    def __init__(self, input_size, hidden_size, num_layers=1, dropout=0.0):
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        H = hidden_size
        for layer in range(num_layers):
            n_in = input_size if layer == 0 else H
            self.register_parameter(f"weight_ih_l{layer}", nn.Parameter(torch.empty(3 * H, n_in)))
            self.register_parameter(f"weight_hh_l{layer}", nn.Parameter(torch.empty(3 * H, H)))
            self.register_parameter(f"bias_ih_l{layer}", nn.Parameter(torch.empty(3 * H)))
            self.register_parameter(f"bias_hh_l{layer}", nn.Parameter(torch.empty(3 * H)))
        bound = 1 / math.sqrt(H)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def cell(self, layer, x_t, h):
        gi = x_t @ getattr(self, f"weight_ih_l{layer}").t() + getattr(self, f"bias_ih_l{layer}")
        gh = h @ getattr(self, f"weight_hh_l{layer}").t() + getattr(self, f"bias_hh_l{layer}")
        i_r, i_z, i_n = gi.chunk(3, -1)
        h_r, h_z, h_n = gh.chunk(3, -1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return (1 - z) * n + z * h

    def forward(self, x, state=None):
        B, T, _ = x.shape
        h0 = state if state is not None else x.new_zeros(self.num_layers, B, self.hidden_size)
        finals = []
        for layer in range(self.num_layers):
            h = h0[layer]
            outs = []
            for t in range(T):
                h = self.cell(layer, x[:, t], h)
                outs.append(h)
            x = torch.stack(outs, 1)
            if layer < self.num_layers - 1:
                x = self.dropout(x)
            finals.append(h)
        return x, torch.stack(finals)

    def init_step_state(self, batch_size, like):
        return list(like.new_zeros(self.num_layers, batch_size, self.hidden_size))

    def step(self, x_t, state):
        state = list(state)
        for layer in range(self.num_layers):
            state[layer] = x_t = self.cell(layer, x_t, state[layer])
        return x_t, state


def _g(v):
    return torch.where(v >= 0, v + 0.5, torch.sigmoid(v))


def _log_g(v):
    return torch.where(v >= 0, (F.relu(v) + 0.5).log(), -F.softplus(-v))


class MinLSTM(nn.Module):
    """Stacked minLSTM layers; training uses the log-space parallel scan, step() the recurrence."""

    def __init__(self, input_size, hidden_size, num_layers=1, dropout=0.0):
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.proj = nn.ModuleList(
            nn.Linear(input_size if k == 0 else hidden_size, 3 * hidden_size) for k in range(num_layers)
        )

    def _gates(self, layer, x):
        k_f, k_i, k_h = self.proj[layer](x).chunk(3, -1)
        diff = F.softplus(-k_f) - F.softplus(-k_i)
        return -F.softplus(diff), -F.softplus(-diff), k_h  # log f', log i', pre-activation of h̃

    def forward(self, x, state=None):
        B = x.shape[0]
        finals = []
        for layer in range(self.num_layers):
            log_f, log_i, k_h = self._gates(layer, x)
            h0 = state[layer] if state is not None else x.new_full((B, self.hidden_size), 0.5)  # g(0) = ½
            a = torch.cumsum(log_f, dim=1)
            log_terms = torch.cat([h0.clamp_min(1e-12).log().unsqueeze(1), log_i + _log_g(k_h)], dim=1)
            a0 = torch.cat([a.new_zeros(B, 1, self.hidden_size), a], dim=1)
            x = torch.exp(a0 + torch.logcumsumexp(log_terms - a0, dim=1))[:, 1:]
            finals.append(x[:, -1])
            if layer < self.num_layers - 1:
                x = self.dropout(x)
        return x, torch.stack(finals)

    def init_step_state(self, batch_size, like):
        return [like.new_full((batch_size, self.hidden_size), 0.5) for _ in range(self.num_layers)]

    def step(self, x_t, state):
        state = list(state)
        for layer in range(self.num_layers):
            log_f, log_i, k_h = self._gates(layer, x_t)
            state[layer] = x_t = log_f.exp() * state[layer] + log_i.exp() * _g(k_h)
        return x_t, state
