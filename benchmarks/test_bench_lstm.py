"""pytest-benchmark micro suite (run by `make bench` / `make microbench`, never by `make test`).

What runs, all in one run (ratios and the roofline are only meaningful within one run):
  - every LSTM implementation and each Transformer at the standard size B=32, T=128, I=64, H=128;
  - our fast path against nn.LSTM (oneDNN on the CPU) across a sweep of T, H and B;
  - every LSTM variant and GRU: the fast path against its reference loop (and nn.GRU);
  - torch.mm at each gate-GEMM shape (B x H) @ (H x 4H) and at a large square shape: this machine's
    single-precision GEMM rate, the roofline's denominator.
Modes: "forward" (autograd recording, no backward), "fwd+bwd", "inference" (torch.no_grad) and "step"
(one decoding step, B=1, state carried, as the latency jobs time it through model.step).
Each benchmark records its FLOPs (matrix products, 2 per multiply-add: analytic for the recurrent
models, suite.measure.flops.recurrent_flops, which the tests check against FlopCounterMode; counted with
FlopCounterMode for the Transformers); conftest.py turns them into GFLOP/s and % of the GEMM rate.
"""

import pytest
import torch
from conftest import record_row
from torch.utils.flop_counter import FlopCounterMode

from suite.measure.flops import recurrent_flops
from suite.models import capabilities
from suite.models.gru_minlstm import ReferenceGRU
from suite.models.lstm import VARIANTS, ReferenceLSTM
from suite.models.lstm_fast import FastGRU, FastLSTM, extension
from suite.models.lstm_library import LibraryLSTM
from suite.models.lstm_manual_bptt import ManualBPTTLSTM
from suite.models.transformer import Transformer

B, T, I, H = 32, 128, 64, 128
SQUARE = 2048  # the large square torch.mm: the machine's GEMM rate


class _NNGRU(torch.nn.GRU):
    """nn.GRU, batch-first, with the step() the suite's latency jobs call."""

    def __init__(self, i, h):
        super().__init__(i, h, batch_first=True)

    def init_step_state(self, batch, like):
        return like.new_zeros(1, batch, self.hidden_size)

    def step(self, x_t, state):
        out, state = self(x_t.unsqueeze(1), state)
        return out[:, 0], state


# name -> (builder(i, h), weight blocks of H rows, FGR); "nn-lstm" is every ratio's reference
RNNS = {
    "nn-lstm": (LibraryLSTM, 4, False),
    "lstm-reference": (ReferenceLSTM, 4, False),
    "lstm-manual": (ManualBPTTLSTM, 4, False),
    "lstm-fast": (FastLSTM, 4, False),
}
for _v, _spec in VARIANTS.items():
    if _v != "vanilla":
        _gates, _fgr = len(_spec.gates), _spec.full_gate_recurrence
        RNNS[f"lstm-{_v}/fast"] = (lambda i, h, v=_v: FastLSTM(i, h, variant=v), _gates, _fgr)
        RNNS[f"lstm-{_v}/reference"] = (lambda i, h, v=_v: ReferenceLSTM(i, h, 1, v), _gates, _fgr)
RNNS.update(
    {"gru/fast": (FastGRU, 3, False), "gru/reference": (ReferenceGRU, 3, False), "nn-gru": (_NNGRU, 3, False)}
)


def _transformer(i, h):
    return torch.nn.Sequential(torch.nn.Linear(i, h), _Drop(Transformer(h, 2, 4, max_len=2048)))


def _hf_gpt2(i, h):
    from suite.models.hf_transformers import gpt2

    return torch.nn.Sequential(torch.nn.Linear(i, h), _Drop(gpt2(h, 2, 4, 2048)))


class _Drop(torch.nn.Module):  # (output, state) -> output, like the LSTMs' [0]
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return (self.m(x)[0],)


TRANSFORMERS = {"transformer": _transformer, "hf-gpt2": _hf_gpt2}


@pytest.fixture(scope="session", autouse=True)
def _built():
    extension()  # build the C++ path before timing anything


def _baseline(impl: str) -> str:
    """What a row's ratio is taken against: nn.LSTM for the vanilla LSTMs and Transformers, the reference
    loop for a variant's or GRU's fast path."""
    return impl.replace("/fast", "/reference") if impl.endswith("/fast") else "nn-lstm"


def _timed(model, mode, b, t, i):
    """The function a benchmark times in this mode."""
    if mode == "step":
        x_t = torch.randn(b, i)
        with torch.no_grad():
            state = model.init_step_state(b, x_t)

        def fn():
            nonlocal state
            with torch.no_grad():
                state = model.step(x_t, state)[1]

        return fn
    x = torch.randn(b, t, i, requires_grad=(mode != "inference"))
    if mode == "inference":

        def fn():
            with torch.no_grad():
                model(x)
    elif mode == "forward":

        def fn():
            model(x)
    else:

        def fn():
            model(x)[0].sum().backward()

    return fn


def _run(benchmark, impl, mode, b=B, t=T, i=I, h=H):
    torch.manual_seed(0)
    if impl in TRANSFORMERS:
        model, source = TRANSFORMERS[impl](i, h), "FlopCounterMode"
        flops = _counted_flops(model, mode, b, t, i)
    else:
        build, gates, fgr = RNNS[impl]
        model, source = build(i, h), "analytic"
        steps = 1 if mode == "step" else t
        flops = recurrent_flops(
            gates, steps, 1 if mode == "step" else b, i, h, backward=(mode == "fwd+bwd"), gate_recurrence=fgr
        )
    b_run = 1 if mode == "step" else b
    fn = _timed(model, mode, b_run, t, i)
    record_row(benchmark, impl, mode, b_run, 1 if mode == "step" else t, i, h, _baseline(impl), flops, source)
    fn()  # warm-up (and the build, for compiled paths; the fast path's kernel plan for this shape)
    slow = impl.endswith("reference") and mode != "step"
    benchmark.pedantic(fn, rounds=5 if slow else 10, iterations=50 if mode == "step" else 1, warmup_rounds=1)
    # what ran, after it ran: the fast path names the GEMM kernels its plan chose for this shape
    benchmark.extra_info["backend"] = capabilities.backend(model, torch.device("cpu"), torch.float32)


def _counted_flops(model, mode, b, t, i):
    x = torch.randn(b, t, i, requires_grad=(mode == "fwd+bwd"))
    with torch.set_grad_enabled(mode == "fwd+bwd"), FlopCounterMode(display=False) as counter:
        out = model(x)[0]
        if mode == "fwd+bwd":
            out.sum().backward()
    return counter.get_total_flops()


# ---- this machine's GEMM rate, measured in the same run ------------------------------------------
GATE_SHAPES = sorted(
    {(B, H), (32, 64), (32, 256), (8, 128), (64, 128), (8, 256), (1, 64), (1, 128), (1, 256)}
)


@pytest.mark.parametrize("shape", ["square", *[f"gate-B{b}-H{h}" for b, h in GATE_SHAPES]])
def test_gemm_rate(benchmark, shape):
    """torch.mm in float32: (B x H) @ (H x 4H), one step's gate GEMM, and a large square product."""
    if shape == "square":
        m, k, n = SQUARE, SQUARE, SQUARE
    else:
        b, h = (int(v[1:]) for v in shape.split("-")[1:])
        m, k, n = b, h, 4 * h
    a, w = torch.randn(m, k), torch.randn(k, n)
    benchmark.extra_info.update(
        impl="torch.mm",
        mode="gemm",
        shape=shape,
        B=m,
        H=k,
        flops=2 * m * k * n,
        threads=torch.get_num_threads(),
        flops_source="analytic",
    )
    benchmark.pedantic(
        torch.mm,
        args=(a, w),
        rounds=5 if shape == "square" else 10,
        iterations=1 if shape == "square" else 200,
        warmup_rounds=1,
    )


# ---- the standard size: every implementation ------------------------------------------------------
@pytest.mark.parametrize("mode", ["forward", "fwd+bwd", "inference", "step"])
@pytest.mark.parametrize("impl", ["nn-lstm", "lstm-reference", "lstm-manual", "lstm-fast"])
def test_standard_size(benchmark, impl, mode):
    _run(benchmark, impl, mode)


@pytest.mark.parametrize("mode", ["forward", "fwd+bwd", "inference"])
@pytest.mark.parametrize("impl", list(TRANSFORMERS))
def test_transformers(benchmark, impl, mode):
    _run(benchmark, impl, mode)


# ---- the sweep: the fast path against nn.LSTM ----------------------------------------------------
SWEEP = [
    (32, 32, 64, 128),
    (32, 512, 64, 128),
    (32, 128, 64, 64),
    (32, 128, 64, 256),
    (8, 128, 64, 128),
    (64, 128, 64, 128),
    (8, 256, 128, 256),
]  # (B, T, I, H); the last is the reviewers' second check


@pytest.mark.parametrize("mode", ["forward", "fwd+bwd", "inference"])
@pytest.mark.parametrize("impl", ["nn-lstm", "lstm-fast"])
@pytest.mark.parametrize("b,t,i,h", SWEEP, ids=[f"B{b}-T{t}-I{i}-H{h}" for b, t, i, h in SWEEP])
def test_sweep(benchmark, impl, mode, b, t, i, h):
    _run(benchmark, impl, mode, b, t, i, h)


@pytest.mark.parametrize("h", [64, 256])
@pytest.mark.parametrize("impl", ["nn-lstm", "lstm-fast"])
def test_sweep_step(benchmark, impl, h):
    _run(benchmark, impl, "step", h=h, i=h)


# ---- every variant and GRU: the fast path against its reference loop ------------------------------
VARIANT_IMPLS = sorted(k for k in RNNS if "/" in k or k == "nn-gru")


@pytest.mark.parametrize("mode", ["fwd+bwd", "inference", "step"])
@pytest.mark.parametrize("impl", VARIANT_IMPLS)
def test_variants(benchmark, impl, mode):
    _run(benchmark, impl, mode)
