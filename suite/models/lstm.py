"""The reference LSTM: one readable cell, written as the equations are written in papers, with the
classic variants of Greff et al. 2015 ("LSTM: A Search Space Odyssey") as options of that cell.

For input x_t, previous hidden state h_{t-1} and cell state c_{t-1}
(W: input weights, R: recurrent weights, p: peephole vectors, ⊙: elementwise product):

    i_t = σ(W_i x_t + R_i h_{t-1} + p_i ⊙ c_{t-1} + b_i)       input gate
    f_t = σ(W_f x_t + R_f h_{t-1} + p_f ⊙ c_{t-1} + b_f)       forget gate
    z_t = g(W_z x_t + R_z h_{t-1} + b_z)                        cell candidate (block input), g = tanh
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ z_t                             cell state
    o_t = σ(W_o x_t + R_o h_{t-1} + p_o ⊙ c_t + b_o)           output gate (its peephole sees c_t)
    h_t = o_t ⊙ h(c_t)                                          hidden state, h = tanh

Peepholes (p_*) are Gers & Schmidhuber 2000; without them ("vanilla") this is exactly the function
of torch.nn.LSTM. Greff's variants, each applied to the peephole LSTM:
    NIG  no input gate        i_t = 1               NOAF  no output activation   h(c) = c
    NFG  no forget gate       f_t = 1 (the 1997 LSTM: the cell never decays)
    NOG  no output gate       o_t = 1               NP    no peepholes           p_* = 0
    NIAF no input activation  g(z) = z              CIFG  coupled gates          f_t = 1 − i_t
    FGR  full gate recurrence: i, f and o also see the previous gate activations (i, f, o)_{t-1}
         through nine extra recurrent matrices (stored as one 3H×3H matrix `weight_gg`).

Parameters use nn.LSTM's names and layout, gate order (i, f, g, o), one block of H rows per gate,
two biases per layer (bias_ih and bias_hh), so `load_state_dict` copies weights from and to
torch.nn.LSTM (see suite/models/weights.py). A variant that drops a gate drops its rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass(frozen=True)
class Variant:
    input_gate: bool = True
    forget_gate: bool = True
    output_gate: bool = True
    input_activation: bool = True
    output_activation: bool = True
    peepholes: bool = False
    coupled_input_forget: bool = False
    full_gate_recurrence: bool = False

    @property
    def gates(self) -> str:
        """The gate blocks that have weights, in nn.LSTM's order."""
        has_f = self.forget_gate and not self.coupled_input_forget
        return "".join(g for g, on in zip("ifgo", (self.input_gate, has_f, True, self.output_gate)) if on)


_PEEPHOLE = dict(peepholes=True)
VARIANTS: dict[str, Variant] = {
    "vanilla": Variant(),  # no peepholes: torch.nn.LSTM's function
    "peephole": Variant(**_PEEPHOLE),  # Greff's "V", the base of the eight variants below
    "nig": Variant(**_PEEPHOLE, input_gate=False),
    "nfg": Variant(**_PEEPHOLE, forget_gate=False),
    "nog": Variant(**_PEEPHOLE, output_gate=False),
    "niaf": Variant(**_PEEPHOLE, input_activation=False),
    "noaf": Variant(**_PEEPHOLE, output_activation=False),
    "np": Variant(),  # peephole LSTM minus peepholes = vanilla, named as in the paper
    "cifg": Variant(**_PEEPHOLE, coupled_input_forget=True),
    "fgr": Variant(**_PEEPHOLE, full_gate_recurrence=True),
}


class ReferenceLSTM(nn.Module):
    """Multi-layer, batch-first LSTM with autograd through a Python loop over time.

    forward(x: (B, T, input_size), state=(h0, c0) each (layers, B, H) or None)
        -> (output (B, T, H), (h_n, c_n))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        variant: str = "vanilla",
        dropout: float = 0.0,
        forget_bias: float = 0.0,
    ):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown LSTM variant {variant!r}; known: {sorted(VARIANTS)}")
        self.variant_name = variant
        self.variant = VARIANTS[variant]
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        n = len(self.variant.gates)
        H = hidden_size
        for layer in range(num_layers):
            in_size = input_size if layer == 0 else H
            self.register_parameter(f"weight_ih_l{layer}", nn.Parameter(torch.empty(n * H, in_size)))
            self.register_parameter(f"weight_hh_l{layer}", nn.Parameter(torch.empty(n * H, H)))
            self.register_parameter(f"bias_ih_l{layer}", nn.Parameter(torch.empty(n * H)))
            self.register_parameter(f"bias_hh_l{layer}", nn.Parameter(torch.empty(n * H)))
            if self.variant.peepholes:  # one vector per gate that exists: p_i, p_f, p_o
                for gate in "ifo":
                    if gate in self.variant.gates:
                        self.register_parameter(f"peephole_{gate}_l{layer}", nn.Parameter(torch.empty(H)))
            if self.variant.full_gate_recurrence:
                self.register_parameter(f"weight_gg_l{layer}", nn.Parameter(torch.empty(3 * H, 3 * H)))
        self.reset_parameters(forget_bias)

    def reset_parameters(self, forget_bias: float = 0.0) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)  # nn.LSTM's init
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)
        if forget_bias and "f" in self.variant.gates:
            j = self.variant.gates.index("f") * self.hidden_size
            for layer in range(self.num_layers):
                with torch.no_grad():
                    getattr(self, f"bias_ih_l{layer}")[j : j + self.hidden_size].fill_(forget_bias)
                    getattr(self, f"bias_hh_l{layer}")[j : j + self.hidden_size].zero_()

    # ---- one time step: the equations ---------------------------------------------------
    def cell(self, layer: int, x_t, h, c, prev_gates):
        """One step of one layer. prev_gates: (i, f, o) at t-1, used only by FGR."""
        v, H = self.variant, self.hidden_size
        W = getattr(self, f"weight_ih_l{layer}")
        R = getattr(self, f"weight_hh_l{layer}")
        pre = (
            x_t @ W.t() + h @ R.t() + getattr(self, f"bias_ih_l{layer}") + getattr(self, f"bias_hh_l{layer}")
        )
        blocks = dict(zip(v.gates, pre.split(H, dim=-1)))
        if v.full_gate_recurrence:
            recur = torch.cat(prev_gates, -1) @ getattr(self, f"weight_gg_l{layer}").t()
            for gate, extra in zip("ifo", recur.split(H, dim=-1)):
                if gate in blocks:
                    blocks[gate] = blocks[gate] + extra

        def peep(gate, cell_state):
            return getattr(self, f"peephole_{gate}_l{layer}") * cell_state if v.peepholes else 0.0

        one = torch.ones_like(c)
        i = torch.sigmoid(blocks["i"] + peep("i", c)) if v.input_gate else one
        if v.coupled_input_forget:
            f = 1.0 - i
        elif v.forget_gate:
            f = torch.sigmoid(blocks["f"] + peep("f", c))
        else:
            f = one
        z = torch.tanh(blocks["g"]) if v.input_activation else blocks["g"]
        c_new = f * c + i * z
        o = torch.sigmoid(blocks["o"] + peep("o", c_new)) if v.output_gate else one
        h_new = o * (torch.tanh(c_new) if v.output_activation else c_new)
        return h_new, c_new, (i, f, o)

    # ---- the sequence ---------------------------------------------------------------------
    def forward(self, x, state=None):
        B, T, _ = x.shape
        h0, c0 = state if state is not None else self.init_state(B, x)
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            h, c = h0[layer], c0[layer]
            gates = (torch.zeros_like(h),) * 3
            outputs = []
            for t in range(T):
                h, c, gates = self.cell(layer, x[:, t], h, c, gates)
                outputs.append(h)
            x = torch.stack(outputs, dim=1)
            if layer < self.num_layers - 1:
                x = self.dropout(x)
            h_n.append(h)
            c_n.append(c)
        return x, (torch.stack(h_n), torch.stack(c_n))

    def init_state(self, batch_size: int, like: torch.Tensor):
        zeros = like.new_zeros(self.num_layers, batch_size, self.hidden_size)
        return zeros, zeros.clone()

    # incremental decoding: the carried state is (h, c) per layer, plus previous gates for FGR
    def init_step_state(self, batch_size: int, like: torch.Tensor):
        h, c = self.init_state(batch_size, like)
        gates = [(torch.zeros_like(h[0]),) * 3 for _ in range(self.num_layers)]
        return list(h), list(c), gates

    def step(self, x_t, state):
        hs, cs, gates = state
        hs, cs, gates = list(hs), list(cs), list(gates)
        for layer in range(self.num_layers):
            hs[layer], cs[layer], gates[layer] = self.cell(layer, x_t, hs[layer], cs[layer], gates[layer])
            x_t = hs[layer]
        return x_t, (hs, cs, gates)
