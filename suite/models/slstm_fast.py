"""The sLSTM on a compiled CPU time loop (csrc/slstm.cpp) with a hand-derived backward (derived beside the
code there), built with torch.utils.cpp_extension at first use and cached, as the LSTMs' fast path
(suite/models/lstm_fast.py, whose build helper it shares; it is its own module, so either builds alone).

    FastSLSTMCell(hidden, heads)    SLSTMCell's parameters and function (suite/models/slstm.py)

Per step, per batch slice (one per thread, no barrier between steps): the recurrent product head by head
(block-diagonal R, small_gemm.h's micro-kernel), then the fused pointwise equations; backward the same in
reverse, with ∂L/∂R = Σ_t δa_tᵀ h_{t-1} as one batched product after the loop. Without a C++ compiler, on
a GPU, or in another dtype, the reference loop runs: backend() says which, one warning line says why.
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from suite.models import lstm_fast
from suite.models.slstm import SLSTMCell

_SOURCES = (Path(__file__).parent / "csrc" / "slstm.cpp",)
_lock = threading.Lock()
_state: dict = {"module": None, "error": None, "seconds": None}
_DTYPES = (torch.float32, torch.float64)


def extension():
    """The compiled module, or None if it cannot be built here (the error is kept, and logged once)."""
    return lstm_fast.load_once(
        _state,
        _lock,
        lambda: lstm_fast._load(_SOURCES, "lstm_bench_slstm"),
        "the sLSTM's C++ loop",
        "it runs its Python loop instead",
    )


class SLSTMFunction(torch.autograd.Function):
    """One sLSTM layer through the C++ loop. Inputs wx (T, B, 4H), R (NH, 4d, d), bias (NH, 4d) and the
    initial state h0, c0, n0, m0 (B, H); outputs (h (T, B, H), h_T, c_T, n_T, m_T). m_T only rescales the
    carried (c, n): it has no gradient of its own (marked non-differentiable)."""

    @staticmethod
    def forward(ctx, wx, R, bias, h0, c0, n0, m0):
        hs, cs, ns, m, saved = extension().forward(wx, R, bias.reshape(-1), h0, c0, n0, m0, True)
        ctx.save_for_backward(hs, cs, ns, saved, R)
        ctx.mark_non_differentiable(m)
        return hs[1:], hs[-1].clone(), cs[-1].clone(), ns[-1].clone(), m

    @staticmethod
    def backward(ctx, grad_out, grad_h, grad_c, grad_n, _grad_m):
        hs, cs, ns, saved, R = ctx.saved_tensors
        zeros = hs.new_zeros(hs.shape[1:])
        grad_out = torch.zeros_like(hs[1:]) if grad_out is None else grad_out
        grads = [zeros if g is None else g for g in (grad_h, grad_c, grad_n)]
        d_wx, d_h0, d_c0, d_n0, d_m0 = extension().backward(grad_out, *grads, hs, cs, ns, saved, R)
        T, B, _ = d_wx.shape
        NH, d = R.shape[0], R.shape[2]
        # ∂L/∂R_h = Σ_{t,b} δa_{t,b,h}ᵀ h_{t-1,b,h}: one batched product over all steps and rows
        da = d_wx.view(T * B, NH, 4 * d).transpose(0, 1)  # (NH, TB, 4d)
        h_prev = hs[:-1].reshape(T * B, NH, d).transpose(0, 1)  # (NH, TB, d)
        d_R = torch.bmm(da.transpose(1, 2), h_prev)
        d_bias = d_wx.sum((0, 1)).view(NH, 4 * d)
        return d_wx, d_R, d_bias, d_h0, d_c0, d_n0, d_m0


class FastSLSTMCell(SLSTMCell):
    """SLSTMCell's parameters and function; the C++ time loop on the CPU (float32/float64)."""

    use_compiled = True  # False: always the reference loop (flop_twin() counts FLOPs on that)

    def compiled(self, x) -> bool:
        return self.use_compiled and x.device.type == "cpu" and x.dtype in _DTYPES and extension() is not None

    def forward(self, wx, state=None):
        if not self.compiled(wx):
            return super().forward(wx, state)
        h0, c0, n0, m0 = state if state is not None else self.init_state(wx.shape[0], wx)
        needs_grad = wx.requires_grad or any(p.requires_grad for p in self.parameters())
        train = torch.is_grad_enabled() and needs_grad
        wx_t = wx.transpose(0, 1).contiguous()  # time-major (T, B, 4H)
        if train:
            out, h, c, n, m = SLSTMFunction.apply(wx_t, self.weight_hh, self.bias, h0, c0, n0, m0)
        else:
            out, c, n, m = extension().forward(
                wx_t, self.weight_hh, self.bias.reshape(-1), h0, c0, n0, m0, False
            )
            h = out[-1]
        return out.transpose(0, 1), (h, c, n, m)

    def step(self, wx_t, state):
        """One position: wx_t (B, 4H), state (h, c, n, m) -> (h, state)."""
        if not self.compiled(wx_t):
            return super().step(wx_t, state)
        out, state = self.forward(wx_t[:, None], state)
        return out[:, 0], state

    def prepare(self) -> float:
        """Build (or load the cached build of) the extension before any clock starts; the seconds this call
        spent, 0.0 when it was already loaded in this process."""
        return lstm_fast.prepare_once(_state, extension)

    def backend(self, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> str:
        device = device or torch.device("cpu")
        fallback = "reference loop in Python (autograd)"
        if device.type != "cpu":
            return f"{device.type}: {fallback} (no custom GPU kernel)"
        if dtype not in _DTYPES:
            return f"cpu: {fallback} (the C++ loop takes float32/float64)"
        if extension() is None:
            return f"cpu: {fallback} (C++ build failed: {_state['error']})"
        return "cpu: C++ time loop (sLSTM: fused pointwise, head-wise packed-weight micro-kernel GEMM)"
