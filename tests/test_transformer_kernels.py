"""The Transformer's compiled CPU kernels (suite/models/transformer_fast.py) against the library ops that
define their functions: attention against F.scaled_dot_product_attention (causal or not, ALiBi, queries at an
offset as in decoding, uneven lengths that leave a vector's lanes spare), LayerNorm against F.layer_norm,
x + MLP(LayerNorm(x)) against the library's ops; each backward by gradcheck in float64; the whole model
against its flop twin (the same weights on the library ops), and the fallback when the kernel cannot run."""

import pytest
import torch
import torch.nn.functional as F

from suite.models import transformer_fast
from suite.models.transformer import MLP, Transformer
from suite.models.transformer_fast import EPS, LayerNorm, attention, ln_mlp_residual, mlp_parts, sdpa

TOL = {torch.float32: 2e-5, torch.float64: 1e-10}


# two threads split a batch unevenly: both slices and the split are exercised
pytestmark = pytest.mark.usefixtures("two_threads")


@pytest.fixture(scope="module", autouse=True)
def _built():
    if transformer_fast.extension() is None:
        pytest.skip(f"no C++ build here: {transformer_fast._state['error']}")


def _qkv(B, T, S, H, D, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, n, H, D, generator=g, dtype=dtype, requires_grad=True) for n in (T, S, S)]


def _forward_and_grads(fn, q, k, v, *args):
    out = fn(q, k, v, *args)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(9), dtype=out.dtype)
    grads = torch.autograd.grad((out * weights).sum(), (q, k, v))
    return out, grads


SHAPES = [  # (causal, T, S, d_head): queries at an offset (T < S) are decoding's case, so causal
    *[(causal, 37, 37, 7) for causal in (True, False)],
    *[(causal, 64, 64, 16) for causal in (True, False)],
    (True, 1, 23, 8),
    (True, 5, 19, 3),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("alibi", [False, True])
@pytest.mark.parametrize("causal,T,S,D", SHAPES)
def test_attention_matches_sdpa(dtype, alibi, causal, T, S, D):
    H = 3
    q, k, v = _qkv(5, T, S, H, D, dtype)
    slopes = transformer_fast.alibi_slopes(H) if alibi else None
    assert transformer_fast.compiled_applies(q)
    got, got_grads = _forward_and_grads(attention, q, k, v, causal, slopes)
    want, want_grads = _forward_and_grads(sdpa, q, k, v, causal, slopes)
    assert (got - want).abs().max() < TOL[dtype]
    for a, b in zip(got_grads, want_grads):
        assert (a - b).abs().max() < TOL[dtype] * 10


@pytest.mark.parametrize("causal,alibi", [(True, False), (False, True), (True, True)])
def test_attention_gradcheck(causal, alibi):
    q, k, v = _qkv(2, 6, 6, 2, 5, torch.float64)
    slopes = transformer_fast.alibi_slopes(2).double() if alibi else None
    assert torch.autograd.gradcheck(lambda q, k, v: attention(q, k, v, causal, slopes), (q, k, v))


def test_wide_heads_and_dropout_run_sdpa():
    q = torch.zeros(1, 4, 2, transformer_fast.MAX_HEAD_DIM + 1)
    assert not transformer_fast.compiled_applies(q)
    assert transformer_fast.kernel_name(q) == "SDPA"
    assert not transformer_fast.compiled_applies(q[..., :8], dropout=0.1)
    assert transformer_fast.kernel_name(q[..., :8]) == "small-head C++ kernel"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_layer_norm_matches_library(dtype):
    g = torch.Generator().manual_seed(0)
    x = (3 * torch.randn(41, 7, 28, generator=g, dtype=dtype) + 1).requires_grad_()
    ln = LayerNorm(28).to(dtype)
    with torch.no_grad():
        ln.weight.normal_(generator=g), ln.bias.normal_(generator=g)
    dy = torch.randn(x.shape, generator=g, dtype=dtype)
    got = ln(x)
    got_grads = torch.autograd.grad(got, (x, ln.weight, ln.bias), dy)
    want = F.layer_norm(x, (28,), ln.weight, ln.bias, ln.eps)
    want_grads = torch.autograd.grad(want, (x, ln.weight, ln.bias), dy)
    assert (got - want).abs().max() < TOL[dtype]
    for a, b in zip(got_grads, want_grads):  # ∂γ, ∂β sum 287 rows: relative to their size
        assert (a - b).abs().max() < TOL[dtype] * 10 * max(1.0, b.abs().max().item())


def test_layer_norm_gradcheck():
    g = torch.Generator().manual_seed(0)
    x, w, b = (
        torch.randn(n, generator=g, dtype=torch.float64).requires_grad_() for n in ((5, 6), (6,), (6,))
    )
    op = transformer_fast.extension().layer_norm
    assert torch.autograd.gradcheck(lambda x, w, b: op(x, w, b, 1e-5), (x, w, b))


def _ln_mlp(C, F_, dtype, seed=0):
    torch.manual_seed(seed)
    mlp = MLP(C, F_).to(dtype)
    with torch.no_grad():
        mlp.vectors.normal_()  # γ, β and the biases away from 1 and 0
    return mlp


def _library(x, mlp):  # x + MLP(LayerNorm(x)) on the library's ops, same parameters
    ln_w, ln_b, w1, b1, w2, b2 = mlp_parts(mlp.matrices, mlp.vectors)
    return x + F.linear(F.gelu(F.linear(F.layer_norm(x, ln_w.shape, ln_w, ln_b, EPS), w1, b1)), w2, b2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tokens", [1, 300, 2500])  # a slice of rows per thread; 2500: chunks of 1024 in each
def test_ln_mlp_residual_matches_the_library(dtype, tokens):
    mlp = _ln_mlp(28, 112, dtype)
    x = (3 * torch.randn(tokens, 28, dtype=dtype) + 1).requires_grad_()  # GELU's whole range, tails included
    dy = torch.randn(tokens, 28, dtype=dtype)
    params = [x, mlp.matrices, mlp.vectors]
    got = ln_mlp_residual(x, mlp)
    assert got is not None and "LnMlpFunction" in got.grad_fn.next_functions[0][0].name()
    with torch.no_grad():  # keeps no GELU'(h) for a backward: the same output
        assert torch.equal(ln_mlp_residual(x, mlp), got)
    got_grads = torch.autograd.grad(got, params, dy)
    want = _library(x, mlp)
    want_grads = torch.autograd.grad(want, params, dy)
    assert (got - want).abs().max() < TOL[dtype]
    for a, b in zip(got_grads, want_grads):  # weight gradients sum 300 rows: relative to their size
        assert (a - b).abs().max() < TOL[dtype] * 10 * max(1.0, b.abs().max().item())


def test_ln_mlp_gelu_over_its_range():
    """GELU inside the kernel (erf by Abramowitz & Stegun): first-layer weights scaled so that the hidden
    values span about ±15, both tails of GELU and GELU' included, against the library's ops."""
    mlp = _ln_mlp(28, 112, torch.float32)
    with torch.no_grad():
        mlp.matrices[:112].mul_(40)  # W_1
    ln_w, ln_b, w1, b1, _, _ = mlp_parts(mlp.matrices, mlp.vectors)
    x = torch.randn(256, 28).requires_grad_()
    h = F.linear(F.layer_norm(x, (28,), ln_w, ln_b, EPS), w1, b1)
    assert h.min() < -8 and h.max() > 8
    got, want = ln_mlp_residual(x, mlp), _library(x, mlp)
    assert got is not None and (got - want).abs().max() < 1e-4 * want.abs().max()
    (got_grad,), (want_grad,) = (torch.autograd.grad(y.square().sum(), [x]) for y in (got, want))
    assert (got_grad - want_grad).abs().max() < 1e-4 * want_grad.abs().max()


def test_ln_mlp_gradcheck():
    mlp = _ln_mlp(3, 5, torch.float64)
    x = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    params = [p.detach().requires_grad_() for p in (mlp.matrices, mlp.vectors)]
    op = transformer_fast.extension().ln_mlp
    assert torch.autograd.gradcheck(lambda x, m, v: op(x, m, v, 1e-5), (x, *params))


def _matches_its_flop_twin(model: Transformer, batch: int) -> None:
    """Outputs and every parameter's gradient (relative to its size) on the kernels and on the library ops."""
    model = model.double()
    twin = model.flop_twin()
    assert all(not m.fast for m in twin.modules() if hasattr(m, "fast"))
    x = torch.randn(batch, 50, 28, dtype=torch.float64)
    got, want = model(x)[0], twin(x)[0]
    assert (got - want).abs().max() < 1e-10
    got_grads = torch.autograd.grad(got.square().sum(), list(model.parameters()))
    want_grads = torch.autograd.grad(want.square().sum(), list(twin.parameters()))
    for a, b in zip(got_grads, want_grads):
        assert (a - b).abs().max() < 1e-9 * max(1.0, b.abs().max().item())


@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "rope", "alibi", "none"])
@pytest.mark.parametrize("causal", [True, False])
def test_model_matches_its_flop_twin(positions, causal):
    """The whole Transformer on its kernels against the same weights on the library ops."""
    torch.manual_seed(0)
    heads = 2 if positions == "rope" else 4
    _matches_its_flop_twin(Transformer(28, 2, heads, max_len=64, positions=positions, causal=causal), 3)


@pytest.mark.parametrize("positions", ["learned", "rope"])
def test_a_batch_of_more_rows_than_a_chunk_matches_the_flop_twin(positions):
    """2500 tokens: each thread's slice of rows goes in chunks of 1024, whose boundaries fall inside
    sequences (RoPE's angle follows the row's position, not its place in the chunk)."""
    torch.manual_seed(0)
    _matches_its_flop_twin(
        Transformer(28, 1, 2 if positions == "rope" else 4, max_len=64, positions=positions), 50
    )


def test_decoding_with_the_kernel_matches_the_full_sequence():
    torch.manual_seed(0)
    model = Transformer(28, 2, 2, max_len=64, positions="rope").eval()
    x = torch.randn(2, 20, 28)
    with torch.no_grad():
        full = model(x)[0]
        state, steps = model.init_step_state(2, x), []
        for t in range(20):
            out, state = model.step(x[:, t], state)
            steps.append(out)
    assert (torch.stack(steps, 1) - full).abs().max() < 1e-5


def test_backend_names_the_kernels():
    model = Transformer(28, 2, 4)
    label = model.backend(torch.device("cpu"), torch.float32)
    assert "C++ LayerNorm and MLP" in label and "small-head C++ kernel" in label
    assert "SDPA" in Transformer(64, 1, 2).backend(torch.device("cpu"), torch.float32)  # d_head 32


@pytest.mark.parametrize("positions", ["learned", "alibi", "rope"])
def test_ln_attention_residual_gradcheck(positions):
    """x + Attention(LayerNorm(x)) as one op (both projections, RoPE's rotation, the kernel between them):
    gradcheck."""
    torch.manual_seed(0)
    model = Transformer(8, 1, 2, max_len=8, positions=positions).double()
    attn = model.blocks[0].attn
    x = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True)
    params = [p.detach().requires_grad_() for p in (attn.matrices, attn.vectors)]
    rotation = transformer_fast.rope_rotation(5, 4, torch.float64) if positions == "rope" else None
    op = transformer_fast.extension().ln_attention

    def half(x, matrices, vectors):
        return op(x, matrices, vectors, 2, attn.slopes, True, 1e-5, rotation)

    assert torch.autograd.gradcheck(half, (x, *params))
    fused = transformer_fast.ln_attention_residual(x, attn, True)
    assert fused is not None and "LnAttentionFunction" in fused.grad_fn.name()


@pytest.mark.parametrize(
    "positions,causal", [("learned", True), ("alibi", True), ("rope", True), ("none", False)]
)
def test_the_backbone_op_gradcheck(positions, causal):
    """Every block and the final LayerNorm as one op (one autograd node): gradcheck over its input and every
    weight, two blocks so that a block's backward feeds the next."""
    torch.manual_seed(0)
    model = Transformer(8, 2, 2, max_len=8, positions=positions, causal=causal).double()
    x = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True)
    halves = [half for block in model.blocks for half in (block.attn, block.mlp)]
    weights = [t.detach().requires_grad_() for h in halves for t in (h.matrices, h.vectors)]
    weights += [t.detach().requires_grad_() for t in (model.ln_f.weight, model.ln_f.bias)]
    attn = model.blocks[0].attn
    rotation = transformer_fast.rope_rotation(5, 4, torch.float64) if positions == "rope" else None
    op = transformer_fast.extension().backbone

    def backbone(x, *weights):
        return op(x, list(weights), 2, attn.slopes, causal, 1e-5, rotation)

    assert torch.autograd.gradcheck(backbone, (x, *weights), fast_mode=True)  # a random projection
    y, _ = model(x)
    assert "BackboneFunction" in y.grad_fn.name()
    with torch.no_grad():  # evaluation: the same function, no node
        assert torch.equal(model(x)[0], y.detach())
