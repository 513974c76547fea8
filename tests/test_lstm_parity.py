"""Our LSTMs against torch.nn.LSTM on copied weights, the hand-derived backward, and the variants."""

import pytest
import torch

from suite.models.gru_minlstm import MinLSTM, ReferenceGRU
from suite.models.lstm import VARIANTS, ReferenceLSTM
from suite.models.lstm_fast import FastLSTM
from suite.models.lstm_library import LibraryLSTM
from suite.models.lstm_manual_bptt import LSTMLayerFunction, ManualBPTTLSTM
from suite.models.weights import copy_lstm_weights

IMPLS = [ReferenceLSTM, ManualBPTTLSTM, FastLSTM, LibraryLSTM]
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def _run(model, x, state):
    x = x.detach().clone().requires_grad_()
    out, (h, c) = model(x, state)
    (out.pow(2).sum() + h.sum() + 0.5 * c.sum()).backward()
    return out, h, c, x.grad, {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("impl", IMPLS, ids=lambda c: c.__name__)
def test_matches_nn_lstm(impl, with_state, layers, dtype):
    torch.manual_seed(0)
    ref = torch.nn.LSTM(6, 9, layers, batch_first=True).to(dtype)
    ours = impl(6, 9, layers).to(dtype)
    copy_lstm_weights(ref, ours)
    x = torch.randn(4, 13, 6, dtype=dtype)
    state = (
        (torch.randn(layers, 4, 9, dtype=dtype), torch.randn(layers, 4, 9, dtype=dtype))
        if with_state
        else None
    )
    expected, got = _run(ref, x, state), _run(ours, x, state)
    tol = TOL[dtype]
    for a, b in zip(expected[:4], got[:4]):
        assert torch.allclose(a, b, atol=tol, rtol=0), (a - b).abs().max()
    for name, grad in expected[4].items():
        assert torch.allclose(grad, got[4][name], atol=tol, rtol=0), (name, (grad - got[4][name]).abs().max())


def test_weights_copy_back_to_nn_lstm():
    ours = ReferenceLSTM(3, 5, 2)
    ref = torch.nn.LSTM(3, 5, 2, batch_first=True)
    copy_lstm_weights(ours, ref)
    x = torch.randn(2, 7, 3)
    assert torch.allclose(ours(x)[0], ref(x)[0], atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        copy_lstm_weights(ReferenceLSTM(3, 5, 2, "cifg"), ref)


def test_gradcheck_manual_bptt():
    """The Python manual BPTT (the compiled loop's gradchecks are in test_fast_path.py)."""
    torch.manual_seed(0)
    T, B, I, H = 5, 3, 4, 3
    args = [
        torch.randn(T, B, I),
        torch.randn(B, H),
        torch.randn(B, H),
        torch.randn(4 * H, I),
        torch.randn(4 * H, H),
        torch.randn(4 * H),
        torch.randn(4 * H),
    ]
    args = [a.double().requires_grad_() for a in args]
    assert torch.autograd.gradcheck(LSTMLayerFunction.apply, args, eps=1e-6, atol=1e-7)


def _cell(variant, seed=0):
    torch.manual_seed(seed)
    m = ReferenceLSTM(4, 5, 1, variant).double()
    x, h, c = torch.randn(3, 4).double(), torch.randn(3, 5).double(), torch.randn(3, 5).double()
    h2, c2, (i, f, o) = m.cell(0, x, h, c, (torch.zeros_like(h),) * 3)
    return m, x, h, c, h2, c2, i, f, o


def test_cifg_forget_gate_is_one_minus_input_gate():
    *_, i, f, _o = _cell("cifg")
    assert torch.allclose(f, 1 - i)


def test_nfg_cell_state_never_decays():
    m, x, h, c, _h2, _c2, _i, f, _o = _cell("nfg")
    assert torch.all(f == 1)
    with torch.no_grad():  # with the input gate shut, the cell carries its state unchanged
        m.bias_ih_l0[:5] = -1e4
        _, c3, _ = m.cell(0, x, h, c, (torch.zeros_like(h),) * 3)
    assert torch.allclose(c3, c, atol=1e-12)


def test_nig_nog_noaf_niaf_equations():
    *_, i, f, o = _cell("nig")
    assert torch.all(i == 1)
    _, _, _, c, h2, c2, i, f, o = _cell("nog")
    assert torch.all(o == 1) and torch.allclose(h2, torch.tanh(c2))
    _, _, _, c, h2, c2, i, f, o = _cell("noaf")
    assert torch.allclose(h2, o * c2)
    m, x, h, c, h2, c2, i, f, o = _cell("niaf")
    z = (c2 - f * c) / i  # the block input, no tanh: can leave [-1, 1]
    pre = (x @ m.weight_ih_l0.t() + h @ m.weight_hh_l0.t() + m.bias_ih_l0 + m.bias_hh_l0)[:, 10:15]
    assert torch.allclose(z, pre)


def test_peepholes_and_fgr_change_the_function():
    for variant, param in (("peephole", "peephole_f_l0"), ("fgr", "weight_gg_l0")):
        m, x, h, c, _h2, *_ = _cell(variant)
        with torch.no_grad():
            getattr(m, param).mul_(3.0)
        gates = (torch.rand_like(h),) * 3
        assert not torch.allclose(m.cell(0, x, h, c, gates)[0], _cell(variant)[0].cell(0, x, h, c, gates)[0])


def test_vanilla_and_np_are_nn_lstm_shaped_and_variants_drop_gate_rows():
    assert VARIANTS["vanilla"] == VARIANTS["np"]
    assert ReferenceLSTM(4, 5, 1, "cifg").weight_ih_l0.shape == (15, 4)
    assert ReferenceLSTM(4, 5, 1, "nig").weight_ih_l0.shape == (15, 4)
    assert ReferenceLSTM(4, 5, 1, "fgr").weight_gg_l0.shape == (15, 15)


def test_gru_matches_nn_gru():
    torch.manual_seed(0)
    ref = torch.nn.GRU(4, 6, 2, batch_first=True).double()
    ours = ReferenceGRU(4, 6, 2).double()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 9, 4).double()
    assert torch.allclose(ours(x)[0], ref(x)[0], atol=1e-10)


def test_minlstm_parallel_scan_equals_recurrence():
    torch.manual_seed(0)
    m = MinLSTM(4, 6, 2).double()
    x = torch.randn(3, 20, 4).double()
    full = m(x)[0]
    state = m.init_step_state(3, x)
    steps = []
    for t in range(20):
        y, state = m.step(x[:, t], state)
        steps.append(y)
    assert torch.allclose(full, torch.stack(steps, 1), atol=1e-9)
