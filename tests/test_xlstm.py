"""xLSTM (suite/models/slstm.py, mlstm.py, slstm_fast.py, xlstm.py): the mLSTM's three forms agree, the
compiled sLSTM matches its reference cell, gradchecks, the stabiliser, and the official `xlstm` package
(2.0.6, in the `test` extra) as the independent oracle on copied weights."""

import logging
import math

import pytest
import torch
import torch.nn.functional as F

from suite.models import slstm_fast
from suite.models.mlstm import mlstm_chunkwise, mlstm_parallel, mlstm_recurrent
from suite.models.slstm import SLSTMCell
from suite.models.slstm_fast import FastSLSTMCell, SLSTMFunction
from suite.models.xlstm import XLSTMStack

try:
    import xlstm as official
except ImportError:  # the oracle is a test-only dependency
    official = None
needs_oracle = pytest.mark.skipif(
    official is None,
    reason="the official xlstm package is not installed (pip install xlstm==2.0.6, in the test extra)",
)
f64 = torch.float64


# ---- mLSTM: recurrent (the definition), parallel and chunkwise forms ----------------------------------


def _mlstm_inputs(B=2, NH=3, T=23, d=4, gate_scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, NH, T, d, generator=g, dtype=f64) for _ in range(3))
    i_pre = torch.randn(B, NH, T, generator=g, dtype=f64) * gate_scale
    f_pre = torch.randn(B, NH, T, generator=g, dtype=f64) * gate_scale
    return [x.requires_grad_() for x in (q, k, v, i_pre, f_pre)]


def _out_and_grads(fn, inputs):
    out = fn(*inputs)
    out = out[0] if isinstance(out, tuple) else out
    grads = torch.autograd.grad(out.sin().sum(), inputs)  # a loss that weighs every output differently
    return [out, *grads]


@pytest.mark.parametrize("chunk", [1, 5, 16, 64])
def test_mlstm_forms_agree_to_1e10_in_float64(chunk):
    """Outputs and the gradients of q, k, v, ĩ, f̃: recurrent = parallel = chunkwise (T = 23: a last
    chunk shorter than the others; chunk 64 > T: one chunk, the parallel form)."""
    inputs = _mlstm_inputs()
    recurrent = _out_and_grads(mlstm_recurrent, inputs)
    parallel = _out_and_grads(mlstm_parallel, inputs)
    chunked = _out_and_grads(lambda *a: mlstm_chunkwise(*a, chunk=chunk), inputs)
    for name, a, b, c in zip(["h", "q", "k", "v", "i", "f"], recurrent, parallel, chunked):
        assert (a - b).abs().max() <= 1e-10, (name, "parallel", (a - b).abs().max())
        assert (a - c).abs().max() <= 1e-10, (name, "chunkwise", (a - c).abs().max())
    _, state_r = mlstm_recurrent(*inputs)
    _, state_c = mlstm_chunkwise(*inputs, chunk=chunk)
    for a, b in zip(state_r, state_c):  # the memory (C, n, m) after the last step
        assert (a - b).abs().max() <= 1e-10


def test_mlstm_chunkwise_carries_its_state_across_calls():
    q, k, v, i, f = (x.detach() for x in _mlstm_inputs(T=20))
    whole, state = mlstm_recurrent(q, k, v, i, f)
    first, mid = mlstm_chunkwise(q[:, :, :9], k[:, :, :9], v[:, :, :9], i[:, :, :9], f[:, :, :9], chunk=4)
    rest, end = mlstm_chunkwise(q[:, :, 9:], k[:, :, 9:], v[:, :, 9:], i[:, :, 9:], f[:, :, 9:], mid, chunk=4)
    assert (torch.cat([first, rest], 2) - whole).abs().max() <= 1e-10
    assert all((a - b).abs().max() <= 1e-10 for a, b in zip(end, state))


def test_mlstm_forms_differ_when_the_stabiliser_differs():
    """The test above can fail: starting the recurrence from m_0 = 0 instead of an empty memory (−∞), as
    the official recurrent step does, changes h̃ through ε by more than 1e-10."""
    q, k, v, i, f = (x.detach() for x in _mlstm_inputs(gate_scale=6.0))
    B, NH, _, d = q.shape
    zero_m = (q.new_zeros(B, NH, d, d), q.new_zeros(B, NH, d), q.new_zeros(B, NH))
    gap = (mlstm_recurrent(q, k, v, i, f, zero_m)[0] - mlstm_parallel(q, k, v, i, f)).abs().max()
    assert 1e-10 < gap < 1e-3


def test_mlstm_gradcheck():
    inputs = _mlstm_inputs(B=1, NH=1, T=5, d=2)
    assert torch.autograd.gradcheck(lambda *a: mlstm_chunkwise(*a, chunk=4)[0], inputs)


# ---- sLSTM: the compiled loop against its reference cell -------------------------------------------------


def _slstm_pair(H, NH, dtype, seed=0):
    torch.manual_seed(seed)
    ref = SLSTMCell(H, NH).to(dtype)
    with torch.no_grad():  # the official init has R = 0: random weights exercise the recurrence
        ref.weight_hh.normal_(0.0, 0.5)
        ref.bias.normal_(0.0, 1.0)
    fast = FastSLSTMCell(H, NH).to(dtype)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def _slstm_state(B, H, dtype):
    h, c, m = (torch.randn(B, H, dtype=dtype) for _ in range(3))
    return h, c, torch.rand(B, H, dtype=dtype) + 0.5, m  # n > 0: a memory that has been written


def _slstm_run(model, wx, state):
    wx = wx.clone().requires_grad_()
    state = None if state is None else [s.clone().requires_grad_() for s in state]
    out, (h, c, n, m) = model(wx, state)
    (out.pow(2).sum() + h.sum() + 0.3 * c.sum() + 0.2 * n.sum()).backward()
    grads = [wx.grad] + ([s.grad for s in state] if state else []) + [p.grad for p in model.parameters()]
    return [out, h, c, n, m], grads


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 2e-5), (f64, 1e-10)])
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("B, heads", [(3, 1), (9, 3)])  # 9 rows: two batch slices on two threads
def test_compiled_slstm_matches_its_reference_cell(B, heads, with_state, dtype, tol):
    """Outputs, the final (h, c, n, m), and every gradient: ∂L/∂wx, ∂L/∂(h0, c0, n0, m0), ∂L/∂R, ∂L/∂b."""
    H, T = 4 * heads, 11
    ref, fast = _slstm_pair(H, heads, dtype)
    assert fast.compiled(torch.empty(0, dtype=dtype)), fast.backend()
    wx = torch.randn(B, T, 4 * H, dtype=dtype) * 3
    state = _slstm_state(B, H, dtype) if with_state else None
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        (values_r, grads_r), (values_f, grads_f) = _slstm_run(ref, wx, state), _slstm_run(fast, wx, state)
    finally:
        torch.set_num_threads(threads)
    scale = max(1.0, max(g.abs().max().item() for g in grads_r))
    for name, a, b in zip(["out", "h", "c", "n", "m"], values_r, values_f):
        assert (a - b).abs().max() <= tol * max(1.0, a.abs().max().item()), (name, (a - b).abs().max())
    for k, (a, b) in enumerate(zip(grads_r, grads_f)):
        assert a is not None and b is not None, k
        assert (a - b).abs().max() <= tol * scale, (k, (a - b).abs().max())
    with torch.no_grad():  # the inference kernel
        out_r, state_r = ref(wx, state)
        out_f, state_f = fast(wx, state)
    for a, b in zip([out_r, *state_r], [out_f, *state_f]):
        assert (a - b).abs().max() <= tol * max(1.0, a.abs().max().item())


def test_compiled_slstm_state_carries_across_calls():
    """Two calls with the state carried (training kernel, gradients through the boundary) = one call."""
    _, fast = _slstm_pair(8, 2, f64)
    wx = torch.randn(3, 10, 32, dtype=f64, requires_grad=True)
    whole, _ = fast(wx)
    first, state = fast(wx[:, :4])
    rest, _ = fast(wx[:, 4:], state)
    assert (torch.cat([first, rest], 1) - whole).abs().max() <= 1e-12
    g_whole = torch.autograd.grad(whole.sin().sum(), [wx, fast.weight_hh])
    g_split = torch.autograd.grad(torch.cat([first, rest], 1).sin().sum(), [wx, fast.weight_hh])
    assert all((a - b).abs().max() <= 1e-10 for a, b in zip(g_whole, g_split))


def test_compiled_slstm_gradcheck():
    """The hand-derived backward against finite differences, every input (the outputs h: the stabilised
    c_T, n_T alone depend on the representation m_T; their gradients are checked against the reference)."""
    torch.manual_seed(0)
    B, T, NH, d = 2, 4, 2, 2
    H = NH * d
    wx = torch.randn(T, B, 4 * H, dtype=f64)
    R, bias = torch.randn(NH, 4 * d, d, dtype=f64) * 0.5, torch.randn(NH, 4 * d, dtype=f64)
    h0, c0, m0 = torch.randn(B, H, dtype=f64), torch.randn(B, H, dtype=f64), torch.randn(B, H, dtype=f64)
    n0 = torch.rand(B, H, dtype=f64) + 0.5
    inputs = [t.requires_grad_() for t in (wx, R, bias, h0, c0, n0, m0)]
    assert torch.autograd.gradcheck(lambda *a: SLSTMFunction.apply(*a)[:2], inputs)


def test_slstm_without_a_compiler_runs_its_reference_loop(monkeypatch, caplog):
    def no_compiler(*args, **kwargs):
        raise RuntimeError("Error building extension: c++: command not found")

    monkeypatch.setattr(slstm_fast, "_state", {"module": None, "error": None, "seconds": None})
    monkeypatch.setattr(slstm_fast.lstm_fast, "_load", no_compiler)
    ref, fast = _slstm_pair(8, 2, f64)
    with caplog.at_level(logging.WARNING, logger="lstm_bench"):
        wx = torch.randn(2, 5, 32, dtype=f64)
        assert torch.equal(fast(wx)[0], ref(wx)[0])
        assert "C++ build failed" in fast.backend() and "command not found" in fast.backend()
    warnings = [r.getMessage() for r in caplog.records if r.name == "lstm_bench"]
    assert len(warnings) == 1 and "did not build" in warnings[0]


# ---- the stabiliser ------------------------------------------------------------------------------------


def _unstabilised_slstm(cell, wx):
    """The paper's sLSTM without m: i = exp(ĩ), f = σ(f̃), from a zero state."""
    B, T, _ = wx.shape
    NH, d = cell.num_heads, cell.head_size
    h = c = n = wx.new_zeros(B, NH * d)
    out = []
    for t in range(T):
        rec = torch.einsum("bhk,hgk->bhg", h.view(B, NH, d), cell.weight_hh)
        pre = (wx[:, t].view(B, NH, 4 * d) + rec + cell.bias).view(B, NH, 4, d)
        i, f, z, o = (pre[:, :, g].reshape(B, -1) for g in range(4))
        c = torch.sigmoid(f) * c + torch.exp(i) * torch.tanh(z)
        n = torch.sigmoid(f) * n + torch.exp(i)
        h = torch.sigmoid(o) * c / n
        out.append(h)
    return torch.stack(out, 1)


def _unstabilised_mlstm(q, k, v, i_pre, f_pre):
    """The paper's parallel mLSTM without m: D = exp(F + ĩ), h̃ = S v / max(|S 1|, 1)."""
    T = q.shape[2]
    log_f = torch.cumsum(F.logsigmoid(f_pre), -1)
    log_d = log_f[..., :, None] - log_f[..., None, :] + i_pre[..., None, :]
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    s = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])) * torch.exp(log_d).masked_fill(~mask, 0)
    return (s @ v) / torch.maximum(s.sum(-1, keepdim=True).abs(), torch.ones_like(s[..., :1]))


def _extreme_gates(shape_i, shape_f, scale, generator):
    """Gate pre-activations of ±scale (random signs)."""
    sign = lambda shape: torch.randint(0, 2, shape, generator=generator).to(f64) * 2 - 1
    return sign(shape_i) * scale, sign(shape_f) * scale


@pytest.mark.parametrize("dtype, scale, tol", [(torch.float16, 50.0, 2e-2), (torch.float32, 100.0, 1e-4)])
def test_stabiliser_keeps_outputs_finite_where_exp_overflows(dtype, scale, tol):
    """Input and forget pre-activations of ±50 in float16 (exp overflows above 11) and ±100 in float32
    (above 88): the unstabilised equations give inf/NaN in that dtype, the stabilised forms stay finite and
    equal the unstabilised equations evaluated in float64 (where exp(100) is finite)."""
    g = torch.Generator().manual_seed(0)
    B, T, NH, d = 2, 12, 2, 4
    H = NH * d
    # sLSTM: the four gates' pre-activations, ĩ and f̃ extreme
    cell = SLSTMCell(H, NH).to(f64)
    with torch.no_grad():
        cell.weight_hh.normal_(0.0, 0.3, generator=g)
    wx = torch.randn(B, T, NH, 4, d, generator=g, dtype=f64)
    wx[:, :, :, 0], wx[:, :, :, 1] = _extreme_gates(wx[:, :, :, 0].shape, wx[:, :, :, 1].shape, scale, g)
    wx = wx.reshape(B, T, 4 * H)
    truth = _unstabilised_slstm(cell, wx)
    assert truth.isfinite().all()
    assert not _unstabilised_slstm(cell.to(dtype), wx.to(dtype)).isfinite().all(), "no overflow: test is void"
    models = [cell.to(dtype)]
    if dtype != torch.float16:  # the compiled loop takes float32 and float64
        fast = FastSLSTMCell(H, NH).to(dtype)
        fast.load_state_dict(cell.state_dict())
        models.append(fast)
    for model in models:
        x = wx.to(dtype).requires_grad_()
        out, _ = model(x)
        assert out.isfinite().all() and (out.double() - truth).abs().max() <= tol, type(model).__name__
        out.float().sum().backward()
        assert x.grad.isfinite().all()
    # mLSTM: ĩ, f̃ extreme
    q, k, v = (torch.randn(B, NH, T, d, generator=g, dtype=f64) for _ in range(3))
    i_pre, f_pre = _extreme_gates((B, NH, T), (B, NH, T), scale, g)
    truth = _unstabilised_mlstm(q, k, v, i_pre, f_pre)
    assert truth.isfinite().all()
    low = [x.to(dtype) for x in (q, k, v, i_pre, f_pre)]
    assert not _unstabilised_mlstm(*low).isfinite().all(), "no overflow: the test is void"
    forms = {
        "recurrent": lambda *a: mlstm_recurrent(*a)[0],
        "parallel": mlstm_parallel,
        "chunkwise": lambda *a: mlstm_chunkwise(*a, chunk=5)[0],
    }
    for name, form in forms.items():
        out = form(*low)
        assert out.isfinite().all() and (out.double() - truth).abs().max() <= tol, name


# ---- the models ---------------------------------------------------------------------------------------


def test_flop_twin_runs_the_reference_loop_with_the_same_weights():
    stack = XLSTMStack(16, 2, "ms").double()
    twin = stack.flop_twin()
    assert all(cell.use_compiled for cell in stack.slstm_cells())
    assert not any(cell.use_compiled for cell in twin.slstm_cells())
    x = torch.randn(2, 7, 16, dtype=f64)
    assert (stack(x)[0] - twin(x)[0]).abs().max() <= 1e-12
    assert "C++ time loop" in stack.backend() and "chunkwise" in stack.backend()


def test_widths_that_do_not_split_into_heads_are_one_line_errors():
    from suite.errors import ConfigError

    with pytest.raises(ConfigError, match="multiple"):
        XLSTMStack(30, 2, "s")
    with pytest.raises(ConfigError, match="even width"):
        XLSTMStack(31, 1, "m")
    XLSTMStack(30, 1, "m")  # inner width 60: 4 heads of 15 units, q/k/v in 15 blocks of 4


# ---- the official package (NX-AI/xlstm 2.0.6) as the oracle ----------------------------------------------


def _randomise(module, generator):
    with torch.no_grad():  # the official init has zeros and ones that would hide a wrong mapping
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * 0.3)


def _official_stack(dim, blocks, slstm_at, context):
    from xlstm import (
        FeedForwardConfig,
        mLSTMBlockConfig,
        mLSTMLayerConfig,
        sLSTMBlockConfig,
        sLSTMLayerConfig,
        xLSTMBlockStack,
        xLSTMBlockStackConfig,
    )

    mlstm = mLSTMLayerConfig(num_heads=4, qkv_proj_blocksize=4, round_proj_up_to_multiple_of=1)
    slstm = sLSTMLayerConfig(backend="vanilla", num_heads=4, conv1d_kernel_size=4, dtype="float32")
    ffn = FeedForwardConfig(proj_factor=4 / 3, act_fn="gelu", round_proj_up_to_multiple_of=1)
    config = xLSTMBlockStackConfig(
        mlstm_block=mLSTMBlockConfig(mlstm=mlstm),
        slstm_block=sLSTMBlockConfig(slstm=slstm, feedforward=ffn),
        context_length=context,
        num_blocks=blocks,
        embedding_dim=dim,
        slstm_at=slstm_at,
    )
    return xLSTMBlockStack(config)


def copy_official_weights(theirs, ours: XLSTMStack) -> None:
    """The official xLSTMBlockStack's weights into ours. Their LayerNorms store the scale as 1 + w; their
    sLSTM bias is gate-major (4, NH, d), ours head-major (NH, 4, d); their sLSTM layer feeds `fgate` into the
    input gate and `igate` into the forget gate (names swapped; both read the conv branch)."""
    src = dict(theirs.named_parameters())
    mapping = {"norm.weight": ("post_blocks_norm.weight", "scale")}
    for b, kind in enumerate(ours.kinds):
        o, t = f"blocks.{b}.", f"blocks.{b}."
        mapping[o + "norm.weight"] = (t + "xlstm_norm.weight", "scale")
        if kind == "m":
            for mine, their in [
                ("skip", "learnable_skip"),
                ("up.weight", "proj_up.weight"),
                ("down.weight", "proj_down.weight"),
                ("conv.conv.weight", "conv1d.conv.weight"),
                ("conv.conv.bias", "conv1d.conv.bias"),
                *[(f"{x}.weight", f"{x}_proj.weight") for x in "qkv"],
                *[
                    (f"cell.{g}.{w}", f"mlstm_cell.{g}.{w}")
                    for g in ("igate", "fgate")
                    for w in ("weight", "bias")
                ],
            ]:
                mapping[o + "layer." + mine] = (t + "xlstm." + their, "copy")
            mapping[o + "layer.cell.outnorm.weight"] = (t + "xlstm.mlstm_cell.outnorm.weight", "scale")
        else:
            for mine, their in [
                ("conv.conv.weight", "conv1d.conv.weight"),
                ("conv.conv.bias", "conv1d.conv.bias"),
                ("gates.i.weight", "fgate.weight"),
                ("gates.f.weight", "igate.weight"),
                ("gates.z.weight", "zgate.weight"),
                ("gates.o.weight", "ogate.weight"),
                ("cell.weight_hh", "slstm_cell._recurrent_kernel_"),
            ]:
                mapping[o + "layer." + mine] = (t + "xlstm." + their, "copy")
            mapping[o + "layer.cell.bias"] = (t + "xlstm.slstm_cell._bias_", "bias")
            mapping[o + "layer.norm.weight"] = (t + "xlstm.group_norm.weight", "scale")
            mapping[o + "ffn_norm.weight"] = (t + "ffn_norm.weight", "scale")
            mapping[o + "ffn.up.weight"] = (t + "ffn.proj_up.weight", "copy")
            mapping[o + "ffn.down.weight"] = (t + "ffn.proj_down.weight", "copy")
    mine = dict(ours.named_parameters())
    assert set(mapping) == set(mine), set(mapping) ^ set(mine)
    assert len({their for their, _ in mapping.values()}) == len(src)
    with torch.no_grad():
        for name, (their, how) in mapping.items():
            value = src[their]
            if how == "scale":
                value = 1.0 + value
            elif how == "bias":
                NH, four_d = mine[name].shape
                value = value.view(4, NH, four_d // 4).permute(1, 0, 2).reshape(NH, four_d)
            mine[name].copy_(value.view(mine[name].shape))


def _grads_by_official_name(ours, theirs):
    return {n: p.grad for n, p in ours.named_parameters()}, {n: p.grad for n, p in theirs.named_parameters()}


@needs_oracle
@pytest.mark.parametrize("pattern", ["m", "s", "ms"])
def test_blocks_match_the_official_package(pattern):
    """Our mLSTM and sLSTM blocks and a mixed stack against xlstm 2.0.6 (its vanilla sLSTM backend and
    its parallel mLSTM backend), float64, copied weights: outputs and the gradient of every input."""
    g = torch.Generator().manual_seed(0)
    dim, T = 24, 40  # the mLSTM: chunks of 32 and 8 steps
    blocks = len(pattern)
    theirs = _official_stack(dim, blocks, [b for b, k in enumerate(pattern) if k == "s"], T).to(f64)
    _randomise(theirs, g)
    ours = XLSTMStack(dim, blocks, pattern).to(f64)
    copy_official_weights(theirs, ours)
    x = torch.randn(3, T, dim, generator=g, dtype=f64)
    x_t, x_o = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_t, (y_o, _) = theirs(x_t), ours(x_o)
    assert (y_t - y_o).abs().max() <= 1e-10, (y_t - y_o).abs().max()
    y_t.sin().sum().backward()
    y_o.sin().sum().backward()
    assert (x_t.grad - x_o.grad).abs().max() <= 1e-10
    # the sLSTM's compiled loop ran, not its reference loop
    assert all(cell.compiled(x) for cell in ours.slstm_cells())


@needs_oracle
def test_slstm_cell_matches_the_official_vanilla_backend():
    """The cell alone, both of ours against sLSTMCell_vanilla: outputs, final (h, c, n, m), ∂wx, ∂R, ∂b."""
    from xlstm.blocks.slstm.cell import sLSTMCell_vanilla, sLSTMCellConfig

    g = torch.Generator().manual_seed(1)
    B, T, NH, d = 3, 11, 3, 4
    H = NH * d
    config = sLSTMCellConfig(hidden_size=H, num_heads=NH, backend="vanilla", dtype="float32")
    theirs = sLSTMCell_vanilla(config).to(f64)
    _randomise(theirs, g)
    x = torch.randn(B, T, 4, NH, d, generator=g, dtype=f64) * 2  # theirs: gate-major per step
    x_t = x.reshape(B, T, 4 * H).requires_grad_()
    y_t, state_t = theirs(x_t)  # (B, NH, T, d), (4, B, H): h, c, n, m
    y_t = y_t.transpose(1, 2).reshape(B, T, H)
    y_t.sin().sum().backward()
    bias = theirs._bias_.detach().view(4, NH, d).permute(1, 0, 2).reshape(NH, 4 * d)
    for cls in (SLSTMCell, FastSLSTMCell):
        ours = cls(H, NH).to(f64)
        with torch.no_grad():
            ours.weight_hh.copy_(theirs._recurrent_kernel_)  # (NH, 4d, d) in both
            ours.bias.copy_(bias)
        x_o = x.permute(0, 1, 3, 2, 4).reshape(B, T, 4 * H).requires_grad_()  # ours: head-major
        y_o, state_o = ours(x_o)
        assert (y_o - y_t).abs().max() <= 1e-10, cls.__name__
        assert all((a - b).abs().max() <= 1e-10 for a, b in zip(state_t, state_o)), cls.__name__
        y_o.sin().sum().backward()
        g_x = x_t.grad.view(B, T, 4, NH, d).permute(0, 1, 3, 2, 4).reshape(B, T, 4 * H)
        assert (g_x - x_o.grad).abs().max() <= 1e-10
        assert (ours.weight_hh.grad - theirs._recurrent_kernel_.grad).abs().max() <= 1e-10
        g_b = theirs._bias_.grad.view(4, NH, d).permute(1, 0, 2).reshape(NH, 4 * d)
        assert (ours.bias.grad - g_b).abs().max() <= 1e-10


@needs_oracle
def test_mlstm_forms_match_the_official_backends():
    """Our parallel form = its parallel_stabilized_simple (outputs and gradients); our recurrence from its
    starting state (m_0 = 0) = its recurrent_step_stabilized_simple step by step; our chunkwise form from
    that state = its chunkwise_simple (outputs)."""
    from xlstm.blocks.mlstm.backends import (
        chunkwise_simple,
        parallel_stabilized_simple,
        recurrent_step_stabilized_simple,
    )

    inputs = _mlstm_inputs(T=32, gate_scale=4.0)
    q, k, v, i, f = inputs
    theirs = _out_and_grads(
        lambda q, k, v, i, f: parallel_stabilized_simple(q, k, v, i[..., None], f[..., None]), inputs
    )
    ours = _out_and_grads(mlstm_parallel, inputs)
    assert all((a - b).abs().max() <= 1e-10 for a, b in zip(theirs, ours))

    q, k, v, i, f = (x.detach() for x in inputs)
    B, NH, T, d = q.shape
    C, n, m = q.new_zeros(B, NH, d, d), q.new_zeros(B, NH, d, 1), q.new_zeros(B, NH, 1, 1)
    steps = []
    for t in range(T):
        h, (C, n, m) = recurrent_step_stabilized_simple(
            C,
            n,
            m,
            *(x[:, :, t : t + 1].clone() for x in (q, k, v)),
            i[:, :, t, None, None],
            f[:, :, t, None, None],
        )
        steps.append(h[:, :, 0])
    zero_m = (q.new_zeros(B, NH, d, d), q.new_zeros(B, NH, d), q.new_zeros(B, NH))
    h_rec, (C_o, n_o, m_o) = mlstm_recurrent(q, k, v, i, f, zero_m)
    assert (torch.stack(steps, 2) - h_rec).abs().max() <= 1e-10
    # their C is k vᵀ, ours v kᵀ (the paper's); the same memory
    assert (C.transpose(-1, -2) - C_o).abs().max() <= 1e-10 and (n[..., 0] - n_o).abs().max() <= 1e-10
    assert (m[..., 0, 0] - m_o).abs().max() <= 1e-10
    h_chunk = chunkwise_simple(q, k, v, i, f, chunk_size=8)
    assert (h_chunk - mlstm_chunkwise(q, k, v, i, f, zero_m, chunk=8)[0]).abs().max() <= 1e-10
