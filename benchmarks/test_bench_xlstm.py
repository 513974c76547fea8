"""pytest-benchmark micro suite for xLSTM's cells (run by `make microbench` with the LSTM suite, whose
conftest.py prints each row's ratio to its baseline, measured in the same run).

  - the sLSTM: our compiled loop (slstm/fast) against its reference loop (slstm/reference), at the
    standard size B=32, T=128, H=128 (4 heads of 32) and across a small sweep; target ≤ 0.5x fwd+bwd;
  - the mLSTM's forms: chunkwise (what training runs) and parallel against the recurrent definition.
The cells take their gate pre-activations as input (the blocks' projections are not timed): I is their
width, 4H for the sLSTM (ĩ, f̃, z̃, õ), 3H + 2 heads for the mLSTM (q, k, v, ĩ, f̃).
"""

import pytest
import torch
from conftest import record_row
from torch.utils.flop_counter import FlopCounterMode

from suite.models.mlstm import CHUNK, mlstm_chunkwise, mlstm_parallel, mlstm_recurrent
from suite.models.slstm import SLSTMCell
from suite.models.slstm_fast import FastSLSTMCell, extension

B, T, H, HEADS = 32, 128, 128, 4
SLSTM = {"slstm/fast": FastSLSTMCell, "slstm/reference": SLSTMCell}


@pytest.fixture(scope="session", autouse=True)
def _built():
    extension()  # build the sLSTM's C++ loop before timing anything


def _slstm_fn(model, mode, b, t, h):
    """The function a benchmark times in this mode (step: one position, state carried, B=1)."""
    if mode == "step":
        wx_t = torch.randn(b, 4 * h)
        state = model.init_state(b, wx_t)

        def step():
            nonlocal state
            with torch.no_grad():
                state = model.step(wx_t, state)[1]

        return step
    wx = torch.randn(b, t, 4 * h, requires_grad=(mode != "inference"))
    if mode == "inference":

        def inference():
            with torch.no_grad():
                model(wx)

        return inference
    if mode == "forward":
        return lambda: model(wx)
    return lambda: model(wx)[0].sum().backward()


def _run_slstm(benchmark, impl, mode, b=B, t=T, h=H):
    torch.manual_seed(0)
    model = SLSTM[impl](h, HEADS)
    with torch.no_grad():  # the official init has R = 0; time a cell whose recurrence does something
        model.weight_hh.normal_(0.0, 0.1)
    b, t = (1, 1) if mode == "step" else (b, t)
    d = h // HEADS
    # the recurrent product: per step and row, NH heads of (d -> 4d); backward: δh = δa R and ∂R, twice more
    flops = 2 * t * b * 4 * h * d * (3 if mode == "fwd+bwd" else 1)
    record_row(benchmark, impl, mode, b, t, 4 * h, h, "slstm/reference", flops, "analytic")
    fn = _slstm_fn(model, mode, b, t, h)
    fn()  # warm-up
    slow = impl.endswith("reference") and mode != "step"
    benchmark.pedantic(fn, rounds=5 if slow else 10, iterations=50 if mode == "step" else 1, warmup_rounds=1)


@pytest.mark.parametrize("mode", ["forward", "fwd+bwd", "inference", "step"])
@pytest.mark.parametrize("impl", list(SLSTM))
def test_slstm_standard_size(benchmark, impl, mode):
    _run_slstm(benchmark, impl, mode)


SLSTM_SWEEP = [(32, 128, 64), (32, 128, 256), (8, 256, 128)]  # (B, T, H)


@pytest.mark.parametrize("mode", ["fwd+bwd", "inference"])
@pytest.mark.parametrize("impl", list(SLSTM))
@pytest.mark.parametrize("b,t,h", SLSTM_SWEEP, ids=[f"B{b}-T{t}-H{h}" for b, t, h in SLSTM_SWEEP])
def test_slstm_sweep(benchmark, impl, mode, b, t, h):
    _run_slstm(benchmark, impl, mode, b, t, h)


MLSTM = {
    "mlstm/chunkwise": lambda *a: mlstm_chunkwise(*a, chunk=CHUNK)[0],
    "mlstm/parallel": mlstm_parallel,
    "mlstm/recurrent": lambda *a: mlstm_recurrent(*a)[0],
}


@pytest.mark.parametrize("mode", ["fwd+bwd", "inference"])
@pytest.mark.parametrize("impl", list(MLSTM))
def test_mlstm_forms(benchmark, impl, mode):
    torch.manual_seed(0)
    d = H // HEADS
    grad = mode == "fwd+bwd"
    q, k, v = (torch.randn(B, HEADS, T, d, requires_grad=grad) for _ in range(3))
    i_pre, f_pre = (torch.randn(B, HEADS, T, requires_grad=grad) for _ in range(2))
    form = MLSTM[impl]

    def fn():
        with torch.set_grad_enabled(grad):
            out = form(q, k, v, i_pre, f_pre)
            if grad:
                out.sum().backward()

    with FlopCounterMode(display=False) as counter:
        fn()
    record_row(
        benchmark,
        impl,
        mode,
        B,
        T,
        3 * H + 2 * HEADS,
        H,
        "mlstm/recurrent",
        counter.get_total_flops(),
        "FlopCounterMode",
    )
    slow = impl.endswith("recurrent")  # the count above was its warm-up
    benchmark.pedantic(fn, rounds=3 if slow else 10, iterations=1, warmup_rounds=0)
