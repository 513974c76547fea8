"""lstm-triton (suite/models/lstm_triton.py): its Triton kernels against the reference cell and nn.LSTM on
copied weights (outputs, final states, every gradient, float32 within 1e-5), both kernels (persistent and
stepwise), the tile planner, the barrier's timeout, and the fallback where Triton cannot run.

Where torch sees a CUDA GPU these run the compiled kernels on it (TF32 off, so float32 is float32);
elsewhere Triton's interpreter runs them on the CPU (TRITON_INTERPRET=1, set per test: the kernels
module is imported, and its kernels defined, under it). Without Triton installed they skip."""

import importlib
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (optional extra: pip install -e '.[gpu]')")

from suite.models import lstm_triton
from suite.models.lstm import ReferenceLSTM
from suite.models.lstm_triton import TritonLSTM
from suite.models.weights import copy_lstm_weights

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
TOL = 1e-5  # float32: |ours - reference| <= 1e-5 (1 + |reference|) elementwise (allclose, rtol = atol)


def _error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """The largest elementwise |ours - ref| / (1 + |ref|): within TOL means allclose(rtol=atol=TOL)."""
    return ((ours - ref).abs() / (1 + ref.abs())).max().item()


@pytest.fixture
def kernels_module(monkeypatch):
    """The kernels module, compiled on a GPU, interpreted on the CPU (defined under TRITON_INTERPRET=1)."""
    if not CUDA:
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    module = sys.modules.get("suite.models.lstm_triton_kernels")
    if module is None:
        module = importlib.import_module("suite.models.lstm_triton_kernels")
    elif module.interpreted() == CUDA:  # defined under the other mode earlier in this process
        module = importlib.reload(module)
    return module


@pytest.fixture
def kernels(kernels_module):
    """The kernels, ready to launch, with TF32 off (float32 is float32 on a GPU too)."""
    if not CUDA:
        _skip_if_the_interpreter_is_broken(kernels_module)
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield kernels_module
    kernels_module.check_barriers(wait=True)  # a barrier that gave up on the GPU fails its test
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


_PROBE: list[str] = []


def _skip_if_the_interpreter_is_broken(module) -> None:
    """Triton 3.6's interpreter with numpy >= 2 fails on any range() over a kernel argument ("only
    0-dimensional arrays can be converted to Python scalars"); 3.9's works. One tiny launch tells."""
    if not _PROBE:
        try:
            plan = module.Plan("stepwise", 16, 16, 16, 4, "ieee", (1, 1))
            module.forward(
                torch.zeros(1, 1, 64),
                torch.zeros(64, 16),
                torch.zeros(1, 16),
                torch.zeros(1, 16),
                plan,
                False,
            )
            _PROBE.append("")
        except Exception as exc:
            if "0-dimensional arrays" not in str(exc):
                raise  # anything else is ours to fix, not a reason to skip
            import triton

            _PROBE.append(
                f"Triton {triton.__version__}'s interpreter fails here ({' '.join(str(exc).split())[:120]}); "
                "the CPU parity tests need triton>=3.9 (pip install -U triton)"
            )
    if _PROBE[0]:
        pytest.skip(_PROBE[0])


def _pair(I, H, layers, kernel, seed=0):
    torch.manual_seed(seed)
    ref = ReferenceLSTM(I, H, layers).to(DEVICE)
    ours = TritonLSTM(I, H, layers, kernel=kernel).to(DEVICE)
    copy_lstm_weights(ref, ours)
    return ref, ours


def _everything(model, x, state, weights):
    """Output, final states and the gradients of a loss that reaches all of them, with respect to the
    input, the initial states and every parameter."""
    x = x.detach().clone().requires_grad_()
    state = tuple(s.detach().clone().requires_grad_() for s in state)
    out, (h, c) = model(x, state)
    loss = (out * weights[0]).sum() + (h * weights[1]).sum() + (c * weights[2]).sum()
    loss.backward()
    got = {"output": out, "h_n": h, "c_n": c, "grad_x": x.grad, "grad_h0": state[0].grad}
    got["grad_c0"] = state[1].grad
    got.update({f"grad_{n}": p.grad for n, p in model.named_parameters()})
    return got


def _differences(ref, ours, B, T):
    torch.manual_seed(1)
    L, H = ref.num_layers, ref.hidden_size
    x = torch.randn(B, T, ref.input_size, device=DEVICE)
    state = (torch.randn(L, B, H, device=DEVICE), torch.randn(L, B, H, device=DEVICE))
    weights = [torch.randn(B, T, H, device=DEVICE), torch.randn(L, B, H, device=DEVICE)]
    weights.append(torch.randn(L, B, H, device=DEVICE))
    a, b = _everything(ref, x, state, weights), _everything(ours, x, state, weights)
    assert a.keys() == b.keys() and all(v is not None for v in b.values())
    return {k: _error(b[k], a[k]) for k in a}, a


# B=18: two row blocks of 16, the second mostly masked; H=20: not a power of two (tiles masked);
# on the interpreter the persistent kernel has one hidden tile, the stepwise one two.
SHAPES = [(18, 5, 6, 20, 2)]  # B, T, I, H, layers
if CUDA:  # several hidden tiles meet at the persistent kernel's barrier; long enough to race
    SHAPES += [(33, 40, 24, 100, 2), (8, 64, 32, 128, 1), (64, 16, 48, 200, 1), (3, 7, 5, 1, 1)]


@pytest.mark.parametrize("kernel", ["persistent", "stepwise"])
@pytest.mark.parametrize("B,T,I,H,layers", SHAPES)
def test_triton_lstm_matches_the_reference_cell(kernels, kernel, B, T, I, H, layers):
    ref, ours = _pair(I, H, layers, kernel)
    assert "Triton" in ours.backend(DEVICE, torch.float32)
    diffs, expected = _differences(ref, ours, B, T)
    assert f"ran: {kernel} kernel" in ours.backend(DEVICE, torch.float32)  # the plan that ran, named
    bad = {k: v for k, v in diffs.items() if not v <= TOL}
    assert not bad, bad
    # no compared gradient is trivially zero, so a gate whose gradient is missing cannot hide
    for name in ("grad_x", "grad_h0", "grad_c0", "grad_weight_hh_l0", "grad_bias_ih_l0"):
        assert expected[name].abs().max() > 1e-3, name


@pytest.mark.parametrize("kernel", ["persistent", "stepwise"])
def test_triton_lstm_matches_nn_lstm_and_weights_copy_back(kernels, kernel):
    torch.manual_seed(2)
    lib = torch.nn.LSTM(4, 24, 2, batch_first=True).to(DEVICE)
    ours = TritonLSTM(4, 24, 2, kernel=kernel).to(DEVICE)
    copy_lstm_weights(lib, ours)
    x = torch.randn(17, 6, 4, device=DEVICE)
    (a, (ha, ca)), (b, (hb, cb)) = lib(x), ours(x)
    for u, v in ((a, b), (ha, hb), (ca, cb)):
        assert _error(v, u) <= TOL
    a.sum().backward(), b.sum().backward()
    for (name, p), q in zip(lib.named_parameters(), ours.parameters()):
        assert _error(q.grad, p.grad) <= TOL, name
    back = torch.nn.LSTM(4, 24, 2, batch_first=True).to(DEVICE)
    copy_lstm_weights(ours, back)
    assert torch.equal(back(x)[0], a)


@pytest.mark.parametrize("kernel", ["persistent", "stepwise"])
def test_inference_path_gives_the_training_paths_outputs(kernels, kernel):
    _, ours = _pair(3, 20, 2, kernel)
    x = torch.randn(5, 7, 3, device=DEVICE)
    with torch.no_grad():
        out, (h, c) = ours(x)  # no saved activations, c in a two-slot ring
    out2, (h2, c2) = ours(x)
    assert torch.equal(out, out2.detach()) and torch.equal(h, h2.detach()) and torch.equal(c, c2.detach())


def test_barrier_that_waits_too_long_raises_instead_of_hanging(kernels, monkeypatch):
    """Two hidden tiles under the interpreter: its programs run one after another, so the first waits for
    a second that has not started. With a short spin limit the wait gives up, the flag is set and the
    caller raises (on a GPU a non-resident program would hang the same way)."""
    if CUDA:
        pytest.skip("the interpreter runs programs one after another; a GPU runs them at once")
    monkeypatch.setattr(kernels, "MAX_SPIN", 4)
    plan = kernels.Plan("persistent", 16, 16, 16, 4, "ieee", (1, 2))
    T, B, H = 3, 2, 20
    pre = torch.randn(T, B, 4 * H)
    with pytest.raises(kernels.BarrierTimeout, match="stepwise"):
        kernels.forward(pre, torch.randn(4 * H, H), torch.zeros(B, H), torch.zeros(B, H), plan, save=False)


@pytest.mark.skipif(not CUDA, reason="needs a GPU: the interpreter runs programs one after another")
def test_persistent_grid_of_one_program_per_sm_meets_at_every_step(kernels):
    """The widest grid the planner allows (every SM one program) on the device, against the reference."""
    n_sm = kernels.sm_count(DEVICE)
    H = 16 * n_sm
    plan = kernels.make_plan(5, H, DEVICE, "persistent")
    assert plan.grid == (1, n_sm)
    ref, ours = _pair(8, H, 1, "persistent")
    diffs, _ = _differences(ref, ours, 5, 6)
    assert max(diffs.values()) <= TOL, diffs


@pytest.mark.skipif(not CUDA, reason="needs a GPU: on the interpreter see the test above")
def test_on_the_gpu_a_grid_larger_than_fits_gives_up_and_raises(kernels, monkeypatch):
    """More programs than can be resident: the first wave waits for programs that cannot start until it
    ends. With a short spin limit each wait gives up, the flag is set and check_barriers raises."""
    monkeypatch.setattr(kernels, "MAX_SPIN", 8)
    plan = kernels.Plan("persistent", 16, 16, 16, 4, "ieee", (1, 40 * kernels.sm_count(DEVICE)))
    T, B, H = 3, 2, 20
    pre = torch.randn(T, B, 4 * H, device=DEVICE)
    zeros = torch.zeros(B, H, device=DEVICE)
    kernels.forward(pre, torch.randn(4 * H, H, device=DEVICE), zeros, zeros, plan, save=False)
    with pytest.raises(kernels.BarrierTimeout, match="stepwise"):
        kernels.check_barriers(wait=True)


def test_tile_planner_fits_the_sms_and_tl_dot(kernels_module):
    kernels = kernels_module
    for B in (1, 8, 17, 64, 256, 1000):
        for H in (1, 20, 128, 1024, 4096):
            for n_sm in (8, 132):
                plan = kernels.choose_tiles(B, H, n_sm)
                rows, tiles = plan.grid
                assert rows * plan.block_b >= B and tiles * plan.block_h >= H
                for block in (plan.block_b, plan.block_h, plan.block_k):
                    assert block >= 16 and block & (block - 1) == 0  # tl.dot: powers of two, at least 16
                if plan.kernel == "persistent":
                    assert rows * tiles <= n_sm  # every program resident, or the barrier never opens
    assert kernels.choose_tiles(64, 1024, 132).grid == (2, 64)
    assert kernels.choose_tiles(1000, 4096, 8).kernel == "stepwise"  # auto: the persistent grid cannot fit
    with pytest.raises(ValueError, match="stepwise"):
        kernels.choose_tiles(1000, 4096, 8, kernel="persistent")
    interp = kernels.choose_tiles(40, 100, 1 << 30, one_hidden_tile=True)
    assert interp.grid == (3, 1) and interp.block_h == 128


def test_fallback_where_triton_cannot_run(monkeypatch):
    """On the CPU without the interpreter, and for float64, the same algorithm runs in Python (manual
    BPTT), and backend() says so and why."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    ref, ours = _pair(3, 8, 1, "auto")
    cpu = torch.device("cpu")
    ours, ref = ours.to(cpu), ref.to(cpu)
    label = ours.backend(cpu, torch.float32)
    assert "manual BPTT" in label and "TRITON_INTERPRET" in label
    assert "float32" in ours.backend(cpu, torch.float64)
    x = torch.randn(2, 5, 3)
    assert torch.allclose(ours(x)[0], ref(x)[0], atol=TOL)
    with pytest.raises(ValueError, match="stepwise"):
        TritonLSTM(3, 8, kernel="fast")


def test_without_triton_the_model_falls_back(monkeypatch):
    monkeypatch.setattr(lstm_triton, "triton_version", lambda: None)
    _, ours = _pair(3, 8, 1, "auto")
    label = ours.backend(torch.device("cuda"), torch.float32)
    assert label.startswith("cuda: manual BPTT") and "not installed" in label


def test_registered_as_a_vanilla_lstm_twin(registry):
    spec = registry.model("lstm-triton")
    assert spec.family == "lstm" and spec.architecture == registry.model("nn-lstm").architecture


@pytest.mark.slow
def test_kernels_compile_for_sm90_without_spills():
    """What the interpreter cannot check: the compiled language's types, tl.dot's rules, registers. Triton's
    wheel compiles to sm_90 cubin with its own ptxas, no GPU needed (benchmarks/triton_compile_check.py)."""
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "triton_compile_check.py"
    import importlib.util as util

    if util.find_spec("triton.backends.nvidia") is None:
        pytest.skip("this triton has no NVIDIA backend to compile with")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, str(script), "--quick"], capture_output=True, text=True, timeout=900, env=env
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 failed or spilling" in proc.stdout
