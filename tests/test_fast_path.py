"""The compiled fast path of every LSTM variant and GRU against its reference cell on copied weights,
its hand-derived backward (gradcheck), the registry's models on it, decoding, and the fallback."""

import logging

import pytest
import torch

from suite.interfaces import TaskSpec
from suite.models import lstm_fast
from suite.models.gru_minlstm import ReferenceGRU
from suite.models.lstm import VARIANTS, ReferenceLSTM
from suite.models.lstm_fast import GRU_CELL, FastGRU, FastLSTM, RecurrentLayerFunction, extension, lstm_cell
from suite.models.sizing import build_model

CELLS = [*VARIANTS, "gru"]
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
B = 9  # two threads split 9 rows 5 + 4: both slices and an uneven split are exercised


# two threads split a batch unevenly: both slices and the split are exercised
pytestmark = pytest.mark.usefixtures("two_threads")


def _pair(cell, dtype, I=5, H=7, layers=2, seed=0):
    """(reference, fast) with the same weights."""
    torch.manual_seed(seed)
    if cell == "gru":
        ref, fast = ReferenceGRU(I, H, layers), FastGRU(I, H, layers)
    else:
        ref, fast = ReferenceLSTM(I, H, layers, cell), FastLSTM(I, H, layers, variant=cell)
    fast.load_state_dict(ref.state_dict())
    return ref.to(dtype), fast.to(dtype)


def _outputs_and_grads(model, x, state, weights):
    """Everything the parity test compares: output, final state, and the gradients of a loss that
    reaches all of them, with respect to the input, the initial state and every parameter."""
    x = x.detach().clone().requires_grad_()
    state = tuple(s.detach().clone().requires_grad_() for s in state)
    out, final = model(x, state if len(state) > 1 else state[0])
    final = (final,) if isinstance(final, torch.Tensor) else tuple(final)
    loss = (out * weights[0]).sum() + sum((f * w).sum() for f, w in zip(final, weights[1:]))
    loss.backward()
    got = {"output": out, **{f"final_{k}": f for k, f in enumerate(final)}, "grad_x": x.grad}
    got.update({f"grad_state_{k}": s.grad for k, s in enumerate(state)})
    got.update({f"grad_{n}": p.grad for n, p in model.named_parameters()})
    return got


def _compare(ref, fast, dtype, T=6):
    """Max abs difference per compared quantity (reference vs fast), same inputs."""
    torch.manual_seed(1)
    layers, H = ref.num_layers, ref.hidden_size
    x = torch.randn(B, T, ref.input_size, dtype=dtype)
    n_state = 1 if isinstance(ref, ReferenceGRU) else 2
    state = tuple(torch.randn(layers, B, H, dtype=dtype) for _ in range(n_state))
    weights = [torch.randn(B, T, H, dtype=dtype)]
    weights += [torch.randn(layers, B, H, dtype=dtype) for _ in range(n_state)]
    a, b = _outputs_and_grads(ref, x, state, weights), _outputs_and_grads(fast, x, state, weights)
    assert a.keys() == b.keys()
    return {k: (a[k] - b[k]).abs().max().item() for k in a}, a


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("cell", CELLS)
def test_fast_path_matches_reference_cell(cell, dtype):
    ref, fast = _pair(cell, dtype)
    assert "C++" in fast.backend(torch.device("cpu"), dtype)
    diffs, expected = _compare(ref, fast, dtype)
    bad = {k: v for k, v in diffs.items() if not v <= TOL[dtype]}
    assert not bad, bad
    # every gate block's gradient is compared and is not trivially zero, so a wrong gate cannot hide
    gates = GRU_CELL.gates if cell == "gru" else VARIANTS[cell].gates
    H = ref.hidden_size
    for name in ("grad_weight_ih_l0", "grad_weight_hh_l0", "grad_bias_ih_l0"):
        for k, gate in enumerate(gates):
            assert expected[name][k * H : (k + 1) * H].abs().max() > 1e-6, (name, gate)
    with torch.no_grad():  # the inference kernel computes the same function
        x = torch.randn(B, 5, ref.input_size, dtype=dtype)
        assert torch.allclose(ref(x)[0], fast(x)[0], atol=TOL[dtype], rtol=0)


def _perturbed(fn, k, per_cell):
    """fn with the k-th of every `per_cell` calls changed a little: one gate's equation made wrong."""
    calls = [0]

    def wrong(x, *args, **kwargs):
        calls[0] += 1
        return fn(x * 1.001 if (calls[0] - 1) % per_cell == k else x, *args, **kwargs)

    return wrong


@pytest.mark.parametrize("cell", ["vanilla", "peephole", "cifg", "fgr", "gru"])
def test_parity_check_fails_on_a_wrong_gate(cell, monkeypatch):
    """Make one nonlinearity of the reference cell (each in turn) slightly wrong: parity must fail."""
    ref, fast = _pair(cell, torch.float64, layers=1)
    sigmoids = {"gru": 2, "cifg": 2}.get(cell, 3)  # σ calls per cell step: (r, z), (i, o), or (i, f, o)
    tanhs = 1 if cell == "gru" else 2  # tanh calls per cell step: n, or z and h(c)
    for name, per_cell in (("sigmoid", sigmoids), ("tanh", tanhs)):
        for k in range(per_cell):
            with monkeypatch.context() as m:
                m.setattr(torch, name, _perturbed(getattr(torch, name), k, per_cell))
                diffs, _ = _compare(ref, fast, torch.float64)
            assert max(diffs.values()) > 1e-6, (name, k)


def _gradcheck_args(spec, T=3, I=2, H=3):
    """(x, h0, c0, W_ih, W_hh, b_ih, b_hh, W_gg, p) in float64, empty where the cell has none."""
    G = len(spec.gates)
    c0 = torch.randn(B, H) if spec.has_cell_state else torch.empty(0)
    args = [
        torch.randn(T, B, I),
        torch.randn(B, H),
        c0,
        torch.randn(G * H, I),
        torch.randn(G * H, H),
        torch.randn(G * H),
        torch.randn(G * H),
        torch.randn(3 * H, 3 * H) if spec.gate_recurrence else torch.empty(0),
        torch.randn(3, H) if spec.peepholes else torch.empty(0),
    ]
    return [a.double().requires_grad_(a.numel() > 0) for a in args]


def _gradcheck(spec, fast_mode, **sizes):
    torch.manual_seed(0)
    return torch.autograd.gradcheck(
        lambda *a: RecurrentLayerFunction.apply(spec, *a),
        _gradcheck_args(spec, **sizes),
        eps=1e-6,
        atol=1e-7,
        fast_mode=fast_mode,
    )


@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck_hand_derived_backward(cell):
    """float64 gradcheck of one layer through the C++ loop with respect to every input, B=9 on 2 threads.
    fast_mode checks a random projection of the Jacobian (seconds); FGR, the cell that exercises every
    term (peepholes, gate recurrence), also gets the full Jacobian."""
    spec = GRU_CELL if cell == "gru" else lstm_cell(VARIANTS[cell])
    assert _gradcheck(spec, fast_mode=True)
    if cell == "fgr":
        assert _gradcheck(spec, fast_mode=False, T=2, H=2)


@pytest.mark.parametrize("cell", ["vanilla", "peephole", "fgr", "gru"])
def test_decoding_step_matches_the_sequence(cell):
    """step() (one-step kernel, unpacked weights) reproduces the sequence forward, state carried."""
    _, fast = _pair(cell, torch.float64)
    x = torch.randn(3, 7, fast.input_size, dtype=torch.float64)
    with torch.no_grad():
        full = fast(x)[0]
        state = fast.init_step_state(3, x)
        steps = []
        for t in range(7):
            y, state = fast.step(x[:, t], state)
            steps.append(y)
    assert torch.allclose(full, torch.stack(steps, 1), atol=1e-12)


def test_runs_are_deterministic():
    _, fast = _pair("peephole", torch.float32, H=33)
    x = torch.randn(13, 20, 5)
    results = []
    for _ in range(2):
        fast.zero_grad()
        out = fast(x)[0]
        out.square().sum().backward()
        results.append([out, *[p.grad for p in fast.parameters()]])
    assert all(torch.equal(a, b) for a, b in zip(*results))


VARIANT_MODELS = [f"lstm-{v}" for v in VARIANTS if v != "vanilla"] + ["gru"]


@pytest.mark.parametrize("name", VARIANT_MODELS)
def test_registry_variant_models_run_the_compiled_path(registry, name):
    spec = TaskSpec(seq_len=10, input_vocab=7, output_dim=7)
    model, width = build_model(registry.model(name), spec, budget=3000, dtype=torch.float64)
    assert "C++ time loop" in model.backend(torch.device("cpu"), torch.float64)
    backbone = model.backbone
    assert isinstance(backbone, (FastLSTM, FastGRU))
    # the reference model on copied weights computes the same outputs and gradients
    layers = backbone.num_layers
    reference = (
        ReferenceGRU(width, width, layers)
        if name == "gru"
        else ReferenceLSTM(width, width, layers, backbone.variant_name)
    )
    ref = model.__class__(spec, reference, width).double()
    ref.load_state_dict(model.state_dict())
    x = torch.randint(0, 7, (B, 10))
    outs = []
    for m in (model, ref):
        m.zero_grad()
        y = m(x)
        y.square().sum().backward()
        outs.append([y, *[p.grad for p in m.parameters()]])
    for a, b in zip(*outs):
        assert torch.allclose(a, b, atol=1e-10, rtol=0)


def test_failed_build_falls_back_with_one_warning(monkeypatch, caplog):
    """A machine without a compiler: the Python paths run, backend() says so, one warning line, no crash."""

    def no_compiler():
        raise RuntimeError("Error building extension: c++: command not found")

    monkeypatch.setattr(lstm_fast, "_state", {"module": None, "error": None, "seconds": None})
    monkeypatch.setattr(lstm_fast, "_load", no_compiler)
    with caplog.at_level(logging.WARNING, logger="lstm_bench"):
        for cell in ("vanilla", "gru"):  # manual BPTT in Python; the reference loop
            ref, fast = _pair(cell, torch.float64, layers=1)
            assert "C++ build failed" in fast.backend() and "command not found" in fast.backend()
            diffs, _ = _compare(ref, fast, torch.float64)
            assert max(diffs.values()) <= 1e-10, diffs
        assert "manual BPTT" in FastLSTM(3, 4).backend()
    warnings = [r for r in caplog.records if r.name == "lstm_bench"]
    assert len(warnings) == 1 and "\n" not in warnings[0].getMessage()
    assert "did not build" in warnings[0].getMessage()


def test_an_empty_build_dir_variable_means_the_default(tmp_path, monkeypatch):
    """LSTM_BENCH_BUILD_DIR= (set, empty) once built into the working directory."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LSTM_BENCH_BUILD_DIR", "")
    assert lstm_fast.build_dir().is_relative_to(tmp_path / ".cache")


def test_a_killed_build_does_not_block_the_next(tmp_path, monkeypatch):
    """torch's build lock is a file a killed build leaves behind; the next build must not wait on it."""
    import torch.utils.cpp_extension

    monkeypatch.setenv("LSTM_BENCH_BUILD_DIR", str(tmp_path))
    stale = lstm_fast.build_dir() / lstm_fast.build_name(lstm_fast._CFLAGS, lstm_fast._LDFLAGS) / "lock"
    stale.parent.mkdir()
    stale.touch()

    def fake_load(**kwargs):  # torch's load() would wait forever for this file
        assert not stale.exists()
        return "module"

    monkeypatch.setattr(torch.utils.cpp_extension, "load", fake_load)
    assert lstm_fast._load() == "module"


def test_a_build_does_not_change_the_next_builds_name(tmp_path, monkeypatch):
    """torch's load() appends its libraries to the flag lists it is given; with the module's own lists the
    next build in the process got another digest, and rebuilt (order-dependent: every make bench rebuilt two
    modules in its micro-benchmark process)."""
    import torch.utils.cpp_extension

    monkeypatch.setenv("LSTM_BENCH_BUILD_DIR", str(tmp_path))
    names = []

    def load(**kwargs):  # what torch does to the lists
        kwargs["extra_ldflags"].append("-ltorch_cpu")
        kwargs["extra_cflags"].append("-DTORCH_EXTENSION_NAME=x")
        names.append(kwargs["name"])
        return "module"

    monkeypatch.setattr(torch.utils.cpp_extension, "load", load)
    assert lstm_fast._load() == "module" and lstm_fast._load() == "module"
    assert names[0] == names[1] == lstm_fast.build_name(lstm_fast._CFLAGS, lstm_fast._LDFLAGS)


def test_a_compiler_without_openmp_still_builds_the_fast_path(tmp_path, monkeypatch, caplog):
    """Apple clang has no -fopenmp: the build is retried without it (one thread per call), with one "
    "warning."""
    import torch.utils.cpp_extension

    monkeypatch.setenv("LSTM_BENCH_BUILD_DIR", str(tmp_path))
    flags = []

    def load(**kwargs):
        flags.append(kwargs["extra_cflags"])
        if "-fopenmp" in kwargs["extra_cflags"]:
            raise RuntimeError("clang: error: unsupported option '-fopenmp'")
        return "module"

    monkeypatch.setattr(torch.utils.cpp_extension, "load", load)
    with caplog.at_level(logging.WARNING, logger="lstm_bench"):
        assert lstm_fast._load() == "module"
    assert len(flags) == 2 and "-fopenmp" not in flags[1]
    assert ["without" in r.getMessage() for r in caplog.records if r.name == "lstm_bench"] == [True]


def test_fast_path_is_compiled_here():
    assert extension() is not None, "the C++ fast path did not build on this machine"


def test_batch_slices_run_on_separate_threads():
    """at::parallel_for is a header template: compiled without OpenMP it runs every slice on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert extension().parallel_threads(2) == 2
    finally:
        torch.set_num_threads(threads)
