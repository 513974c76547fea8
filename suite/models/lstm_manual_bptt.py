"""Vanilla LSTM with a hand-derived backward pass (BPTT by the chain rule through the gates).

Forward (no autograd graph), per layer, with the input projection of all steps done up front:
    A = x W_ihᵀ + b_ih + b_hh                                   (T·B × 4H, one matmul)
    a_t = A_t + h_{t-1} W_hhᵀ ;  i, f, o = σ(a_i, a_f, a_o) ;  g = tanh(a_g)
    c_t = f ⊙ c_{t-1} + i ⊙ g ;  h_t = o ⊙ tanh(c_t)

Backward, from t = T-1 down to 0, with δh = ∂L/∂h_t (from the output and from step t+1)
and δc carried from step t+1:
    δo = δh ⊙ tanh(c_t)
    δc = δc_{t+1} + δh ⊙ o ⊙ (1 − tanh²(c_t))
    δi = δc ⊙ g ;  δg = δc ⊙ i ;  δf = δc ⊙ c_{t-1} ;  δc_{t} (to t-1) = δc ⊙ f
    δa = [δi·i(1−i), δf·f(1−f), δg·(1−g²), δo·o(1−o)]        (gate pre-activations)
    δh_{t-1} = δa W_hh
After the loop the weight gradients are one batched product each, not T small ones:
    ∂L/∂W_hh = Σ_t δa_tᵀ h_{t-1} = δAᵀ H_prev ;  ∂L/∂W_ih = δAᵀ X ;  ∂L/∂b = Σ δA ;  ∂L/∂x = δA W_ih
"""

from __future__ import annotations

import torch
import torch.nn as nn

from suite.models.lstm import ReferenceLSTM


def lstm_layer_forward(x, h0, c0, w_ih, w_hh, bias):
    """x: (T, B, I) time-major. Returns outputs (T, B, H), all h (T+1, B, H), all c (T+1, B, H),
    gate activations (T, B, 4H)."""
    T, B, _ = x.shape
    H = h0.shape[-1]
    pre = torch.addmm(bias, x.reshape(T * B, -1), w_ih.t()).view(T, B, 4 * H)
    hs = x.new_empty(T + 1, B, H)
    cs = x.new_empty(T + 1, B, H)
    acts = x.new_empty(T, B, 4 * H)
    hs[0], cs[0] = h0, c0
    w_hh_t = w_hh.t()
    for t in range(T):
        a = torch.addmm(pre[t], hs[t], w_hh_t)
        torch.sigmoid(a, out=acts[t])  # i, f, o (the g block is overwritten next)
        torch.tanh(a[:, 2 * H : 3 * H], out=acts[t, :, 2 * H : 3 * H])
        g = acts[t, :, 2 * H : 3 * H]
        i, f, o = acts[t, :, :H], acts[t, :, H : 2 * H], acts[t, :, 3 * H :]
        torch.addcmul(f * cs[t], i, g, out=cs[t + 1])
        torch.mul(o, torch.tanh(cs[t + 1]), out=hs[t + 1])
    return hs[1:], hs, cs, acts


def lstm_layer_backward(grad_out, grad_hn, grad_cn, x, hs, cs, acts, w_ih, w_hh):
    T, B, H = grad_out.shape
    i, f, g, o = acts.view(T, B, 4, H).unbind(2)
    tc = torch.tanh(cs[1:])
    # Everything that does not depend on δh or δc is computed for all steps at once, outside the loop:
    k_c = o * (1 - tc * tc)  # ∂h/∂c through the output nonlinearity
    k_ifg = torch.stack(
        (g * i * (1 - i), cs[:-1] * f * (1 - f), i * (1 - g * g)), dim=2
    )  # δa_{i,f,g} = δc · k
    k_o = tc * o * (1 - o)  # δa_o = δh · k_o
    d_pre = torch.empty_like(acts)
    d_view = d_pre.view(T, B, 4, H)
    dh, dc = grad_hn, grad_cn
    for t in range(T - 1, -1, -1):  # only the recurrence on δh, δc is sequential
        dh = dh + grad_out[t]
        dc = torch.addcmul(dc, dh, k_c[t])
        torch.mul(dc.unsqueeze(1), k_ifg[t], out=d_view[t, :, :3])
        torch.mul(dh, k_o[t], out=d_view[t, :, 3])
        dc = dc * f[t]
        dh = d_pre[t] @ w_hh
    flat = d_pre.reshape(T * B, 4 * H)
    grad_w_hh = flat.t() @ hs[:-1].reshape(T * B, H)
    grad_w_ih = flat.t() @ x.reshape(T * B, -1)
    grad_b = flat.sum(0)
    grad_x = (flat @ w_ih).view(T, B, -1)
    return grad_x, dh, dc, grad_w_ih, grad_w_hh, grad_b


def layer_function(forward_kernel, backward_kernel, name: str):
    """An autograd.Function for one LSTM layer from a pair of kernels with the signatures of
    lstm_layer_forward / lstm_layer_backward."""

    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        out, hs, cs, acts = forward_kernel(
            x.contiguous(),
            h0.contiguous(),
            c0.contiguous(),
            w_ih.contiguous(),
            w_hh.contiguous(),
            b_ih + b_hh,
        )
        ctx.save_for_backward(x, hs, cs, acts, w_ih, w_hh)
        return out, hs[-1].clone(), cs[-1].clone()

    def backward(ctx, grad_out, grad_hn, grad_cn):
        x, hs, cs, acts, w_ih, w_hh = ctx.saved_tensors
        zeros = torch.zeros_like(hs[0])
        gx, gh0, gc0, gw_ih, gw_hh, gb = backward_kernel(
            torch.zeros_like(hs[1:]) if grad_out is None else grad_out.contiguous(),
            zeros if grad_hn is None else grad_hn,
            zeros if grad_cn is None else grad_cn,
            x.contiguous(),
            hs,
            cs,
            acts,
            w_ih.contiguous(),
            w_hh.contiguous(),
        )
        return gx, gh0, gc0, gw_ih, gw_hh, gb, gb  # b_ih and b_hh enter as their sum

    return type(
        name,
        (torch.autograd.Function,),
        {"forward": staticmethod(forward), "backward": staticmethod(backward)},
    )


LSTMLayerFunction = layer_function(lstm_layer_forward, lstm_layer_backward, "LSTMLayerFunction")


def run_layers(module: ReferenceLSTM, x, state, kernel: type[torch.autograd.Function]):
    """A vanilla LSTM module's forward, layer by layer, through `kernel` (batch-first in and out)."""
    B = x.shape[0]
    h0, c0 = state if state is not None else module.init_state(B, x)
    seq = x.transpose(0, 1).contiguous()  # time-major inside
    h_n, c_n = [], []
    for layer in range(module.num_layers):
        seq, h, c = kernel.apply(
            seq,
            h0[layer],
            c0[layer],
            getattr(module, f"weight_ih_l{layer}"),
            getattr(module, f"weight_hh_l{layer}"),
            getattr(module, f"bias_ih_l{layer}"),
            getattr(module, f"bias_hh_l{layer}"),
        )
        if layer < module.num_layers - 1:
            seq = module.dropout(seq)
        h_n.append(h)
        c_n.append(c)
    return seq.transpose(0, 1), (torch.stack(h_n), torch.stack(c_n))


class ManualBPTTLSTM(ReferenceLSTM):
    """Same parameters and function as ReferenceLSTM("vanilla"); forward/backward by hand."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        forget_bias: float = 0.0,
    ):
        super().__init__(input_size, hidden_size, num_layers, "vanilla", dropout, forget_bias)

    def forward(self, x, state=None):
        return run_layers(self, x, state, LSTMLayerFunction)

    def flop_twin(self) -> nn.Module:
        twin = ReferenceLSTM(self.input_size, self.hidden_size, self.num_layers, "vanilla")
        twin.load_state_dict(self.state_dict())
        return twin
