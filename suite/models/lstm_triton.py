"""lstm-triton: our GPU LSTM. The vanilla LSTM (nn.LSTM's function, parameters and initialisation, so
suite.models.weights.copy_lstm_weights copies weights either way) with its time loop in Triton kernels
(suite/models/lstm_triton_kernels.py), forward and backward through time, gate math fused into the
recurrent product. Per layer (time-major inside, x: (T, B, I)):

    pre = x W_ihᵀ + b_ih + b_hh                       one cuBLAS GEMM for the whole sequence
    for t: a_t = pre_t + h_{t-1} W_hhᵀ; gates; c_t, h_t  Triton: one persistent launch (or one per step)
    backward: δa_t for t = T-1 .. 0                    Triton, the same way
    ∂L/∂x = δA W_ih; ∂L/∂W_ih = δAᵀ X; ∂L/∂W_hh = δAᵀ H_prev; ∂L/∂b = Σ δA   whole-sequence GEMMs after

`kernel`: "persistent" (the whole loop in one launch, programs meeting at a grid barrier each step),
"stepwise" (one launch per step), or "auto" (persistent where its grid fits the SMs). The dot products
run in full float32 ("ieee") unless torch.backends.cuda.matmul.allow_tf32 is on, then TF32, like
cuBLAS beside them (suite.environment.set_tf32 sets both, and cuDNN's, once per run).

Where Triton cannot run, the model runs the same algorithm with its loop in Python (manual BPTT,
suite/models/lstm_manual_bptt.py), and backend() says which ran and why: no triton installed, a dtype
other than float32, or a CPU without TRITON_INTERPRET=1 (Triton's interpreter: numpy, for the tests).
"""

from __future__ import annotations

import importlib.util
import os
import time
from functools import cache

import torch
import torch.nn as nn

from suite.models.lstm import ReferenceLSTM
from suite.models.lstm_manual_bptt import LSTMLayerFunction, run_layers

KERNELS = ("auto", "persistent", "stepwise")


@cache
def triton_version() -> str | None:
    """The installed Triton's version, None when it is not installed (or does not import)."""
    if importlib.util.find_spec("triton") is None:
        return None
    try:
        import triton
    except Exception:  # a broken install is the same as none here: the fallback runs, and says why
        return None
    return str(triton.__version__)


def _kernels():
    from suite.models import lstm_triton_kernels

    return lstm_triton_kernels


def interpreter_requested() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def why_not_triton(device: torch.device, dtype: torch.dtype) -> str | None:
    """Why the Triton kernels cannot run for this device and dtype; None when they can."""
    if triton_version() is None:
        return "triton is not installed (pip install 'lstm-bench[gpu]')"
    if dtype != torch.float32:
        return f"the Triton kernels take float32, not {str(dtype).removeprefix('torch.')}"
    if device.type == "cuda":
        return None
    if device.type == "cpu" and interpreter_requested():
        return None
    return f"Triton needs a CUDA GPU (or TRITON_INTERPRET=1 on the CPU), not {device.type}"


def dot_precision(device: torch.device) -> str:
    """tl.dot's input precision: TF32 exactly when cuBLAS float32 matmuls use it, else full float32."""
    return "tf32" if device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32 else "ieee"


class TritonLayerFunction(torch.autograd.Function):
    """One layer: x (T, B, I), h0, c0 (B, H), the layer's weights -> out (T, B, H), h_T, c_T."""

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, plan):
        T, B, I = x.shape
        H = w_hh.shape[1]
        pre = torch.addmm(b_ih + b_hh, x.reshape(T * B, I), w_ih.t()).view(T, B, 4 * H)
        hs, cs, c_n = _kernels().forward(pre, w_hh, h0, c0, plan, save=True)  # pre: now the activations
        ctx.plan = plan
        ctx.save_for_backward(x, hs, cs, pre, w_ih, w_hh)
        return hs[1:], hs[T].clone(), c_n

    @staticmethod
    def backward(ctx, grad_out, grad_hn, grad_cn):
        x, hs, cs, acts, w_ih, w_hh = ctx.saved_tensors
        T, B, I = x.shape
        H = w_hh.shape[1]
        zeros = hs.new_zeros(B, H)
        da, grad_h0, grad_c0 = _kernels().backward(
            acts,
            hs,
            cs,
            w_hh,
            torch.zeros_like(hs[1:]) if grad_out is None else grad_out,
            zeros if grad_hn is None else grad_hn,
            zeros if grad_cn is None else grad_cn,
            ctx.plan,
        )
        flat = da.view(T * B, 4 * H)
        grad_x = (flat @ w_ih).view(T, B, I) if ctx.needs_input_grad[0] else None
        grad_w_ih = flat.t() @ x.reshape(T * B, I)
        grad_w_hh = flat.t() @ hs[:-1].reshape(T * B, H)
        grad_b = flat.sum(0)
        return grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_b, grad_b, None


def run_layer(x, h0, c0, weights, plan, train: bool):
    """One layer on time-major x (T, B, I) -> out (T, B, H), h_T, c_T, its loop run as `plan` says."""
    if train:
        return TritonLayerFunction.apply(x, h0, c0, *weights, plan)
    w_ih, w_hh, b_ih, b_hh = weights
    T, B, I = x.shape
    H = w_hh.shape[1]
    with torch.no_grad():
        pre = torch.addmm(b_ih + b_hh, x.reshape(T * B, I), w_ih.t()).view(T, B, 4 * H)
        hs, _, c_n = _kernels().forward(pre, w_hh, h0, c0, plan, save=False)
    return hs[1:], hs[T], c_n


class TritonLSTM(ReferenceLSTM):
    """ReferenceLSTM("vanilla")'s parameters and function (torch.nn.LSTM's); the time loop in Triton."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        forget_bias: float = 0.0,
        kernel: str = "auto",
    ):
        super().__init__(input_size, hidden_size, num_layers, "vanilla", dropout, forget_bias)
        if kernel not in KERNELS:
            raise ValueError(f"unknown lstm-triton kernel {kernel!r}; use one of {', '.join(KERNELS)}")
        self.kernel = kernel
        self.plans_used: set[str] = set()  # every loop plan (kernel, tile, grid) this module has run
        self._prepared: set = set()

    def forward(self, x, state=None):
        if why_not_triton(x.device, x.dtype) is not None or torch.is_autocast_enabled():
            return run_layers(self, x, state, LSTMLayerFunction)  # autocast: the kernels take float32
        B, T = x.shape[:2]
        if T == 0:
            raise ValueError("lstm-triton needs a sequence of at least one step (got T = 0)")
        plan = _kernels().make_plan(B, self.hidden_size, x.device, self.kernel, dot_precision(x.device))
        self.plans_used.add(plan.describe())
        h0, c0 = state if state is not None else self.init_state(B, x)
        needs_grad = x.requires_grad or any(p.requires_grad for p in self.parameters())
        train = torch.is_grad_enabled() and needs_grad
        seq = x.transpose(0, 1).contiguous()
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            weights = [
                getattr(self, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            ]
            seq, h, c = run_layer(seq, h0[layer], c0[layer], weights, plan, train)
            if layer < self.num_layers - 1:
                seq = self.dropout(seq)
            h_n.append(h)
            c_n.append(c)
        return seq.transpose(0, 1), (torch.stack(h_n), torch.stack(c_n))

    def backend(self, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> str:
        device = device or next(self.parameters()).device
        reason = why_not_triton(device, dtype)
        if reason is not None:
            return f"{device.type}: manual BPTT, time loop in Python ({reason})"
        how = f"kernel={self.kernel}, dot {dot_precision(device)}, triton {triton_version()}"
        if self.plans_used:  # what really ran, per batch size seen (training and evaluation batches)
            how += "; ran: " + " | ".join(sorted(self.plans_used))
        if device.type == "cpu":
            return f"cpu: Triton interpreter (TRITON_INTERPRET=1; numpy, for tests; {how})"
        return f"cuda: Triton time loop (lstm-triton: fused gates, {how})"

    def prepare(self) -> float | None:
        """Compile the kernels for this width on the parameters' GPU before any clock starts (one small
        forward and backward); None where no Triton kernel runs. Other tiles (other batch sizes) compile
        at first use."""
        p = next(self.parameters())
        if p.device.type != "cuda" or why_not_triton(p.device, p.dtype) is not None:
            return None
        key = (p.device, self.kernel, dot_precision(p.device))
        if key in self._prepared:
            return 0.0
        start = time.perf_counter()
        training, plans = self.training, set(self.plans_used)
        self.eval()  # no dropout: the warm-up draws no random numbers
        x = torch.zeros(16, 2, self.input_size, device=p.device, requires_grad=True)
        out, _ = self.forward(x)
        out.sum().backward()
        self.zero_grad(set_to_none=True)
        with torch.no_grad():
            self.forward(x)
        torch.cuda.synchronize(p.device)
        self.train(training)
        self.plans_used = plans  # the warm-up's tile is not what the job ran
        self._prepared.add(key)
        return time.perf_counter() - start

    def flop_twin(self) -> nn.Module:
        twin = ReferenceLSTM(self.input_size, self.hidden_size, self.num_layers, "vanilla")
        twin.load_state_dict(self.state_dict())
        return twin
