"""The fast CPU path of the LSTM family and of GRU: one C++ time loop (csrc/lstm_fast.cpp), parametrised
by the cell's equations, with a hand-derived backward (derived beside each cell's code there), built
with torch.utils.cpp_extension at first use and cached.

    FastLSTM(input, hidden, layers, variant=...)   any variant of suite/models/lstm.py (vanilla: nn.LSTM's)
    FastGRU(input, hidden, layers)                  the GRU of suite/models/gru_minlstm.py (nn.GRU's)

Each keeps its reference model's parameters (names, shapes, initialisation), so weights copy either way,
and the reference cell stays the definition the tests compare against. Per layer, all in C++, each
thread running the whole time loop for its slice of the batch (no barrier between steps):
    forward   per step h_{t-1} W_hhᵀ with the weights packed once for a register-blocked micro-kernel
              (csrc/small_gemm.h), added into the input products x_t W_ihᵀ (taken every few steps for a
              chunk of steps at once), then the fused gate math on whole vectors. Under no_grad a second
              kernel keeps nothing for the backward.
    backward  per step the cell's δa_t (gate pre-activation gradients) and δa_t W_hh; every few steps
              ∂L/∂x and the weight gradients' share Σ δa_tᵀ [x_t | h_{t-1}] as one product over the
              chunk's rows while they are in cache.
Measured alternatives: torch.jit.script was slower than eager here, torch.compile of the whole loop
took over a minute cold, and ATen's addmm per step spent much of each step on dispatch and on packing
the weights again; a whole-sequence input GEMM before the loop wrote and re-read a (T, B, 4H) buffer
and spent a third of its time packing; the weight gradients and ∂L/∂x as whole-sequence at::mm after
the loop (K = T B) ran at 47-67 GFLOP/s on one core here, and the whole fwd+bwd was 5-15% slower.
Which register blocking (or BLAS) each product runs is chosen per CPU and layer shape by a measured plan,
cached beside the build (suite/models/kernel_plan.py); backend() names the kernels that ran.
The build time is recorded apart from throughput (prepare(), build_seconds()). Without a C++ compiler,
or on a GPU, the vanilla LSTM runs the same algorithm with its loop in Python (manual BPTT) and the
variants and GRU run their reference loops: backend() says which, and a one-line warning says why.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
import torch.nn as nn

from suite.errors import ConfigError
from suite.models.gru_minlstm import ReferenceGRU
from suite.models.kernel_plan import DEFAULT_BUDGET, LayerShape, Plan, PlanCache, cpu_identity
from suite.models.lstm import VARIANTS, ReferenceLSTM, Variant
from suite.models.lstm_manual_bptt import LSTMLayerFunction, run_layers

_CSRC = Path(__file__).parent / "csrc"
_SOURCES = (_CSRC / "lstm_fast.cpp",)
_HEADERS = (_CSRC / "small_gemm.h", _CSRC / "vec_math.h")
_lock = threading.Lock()
# -ffast-math lets gcc vectorise the gate math freely; -march=native because the build happens on the
# machine that runs it (AVX2/AVX-512 FMA for the micro-kernel). Parity is tested at 1e-5 (float32).
# -fopenmp: at::parallel_for is a header template whose threads exist only where the including file is
# compiled with OpenMP; without it the batch slices ran one after another on one core. The link names
# libgomp.so.1, which resolves to the copy torch has already loaded (one thread pool).
_CFLAGS = ["-O3", "-ffast-math", "-march=native", "-fopenmp"]
_LDFLAGS = ["-fopenmp"]
_state: dict = {"module": None, "error": None, "seconds": None}
_DTYPES = (torch.float32, torch.float64)
log = logging.getLogger("lstm_bench")


def build_dir() -> Path:
    default = Path.home() / ".cache" / "lstm-bench" / "torch_extensions"
    root = Path(os.environ.get("LSTM_BENCH_BUILD_DIR") or default)  # set but empty: the default, not the cwd
    path = root / f"torch{torch.__version__.replace('+', '_')}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _load(sources: tuple[Path, ...] = _SOURCES, name: str = "lstm_bench_fast"):
    """Build `sources` (with small_gemm.h) as the module `name` (suffixed with a digest: build_name); the
    sLSTM's loop (slstm_fast.py) is built by this too, as its own module."""
    try:
        return _build(_CFLAGS, _LDFLAGS, sources, name)
    except Exception as exc:  # e.g. Apple clang has no -fopenmp: one thread per call, but compiled
        log.warning(
            "lstm-bench: the C++ fast path did not build with OpenMP (%s); building it without, "
            "so each call runs on one thread",
            " ".join(str(exc).split())[:120],
        )
        return _build([f for f in _CFLAGS if f != "-fopenmp"] + ["-fopenmp-simd"], [], sources, name)


def build_name(
    cflags: list[str],
    ldflags: list[str],
    sources: tuple[Path, ...] = _SOURCES,
    prefix: str = "lstm_bench_fast",
) -> str:
    """The extension's name: a digest of every source, header and flag, and of the CPU (-march=native builds
    for the CPU at hand: a home directory shared by different machines must not load another's build)."""
    text = b"".join(p.read_bytes() for p in (*sources, *_HEADERS))
    flags = " ".join(cflags + ldflags) + "|" + cpu_identity()
    return f"{prefix}_{hashlib.sha256(text + flags.encode()).hexdigest()[:12]}"


def _build(
    cflags: list[str],
    ldflags: list[str],
    sources: tuple[Path, ...] = _SOURCES,
    prefix: str = "lstm_bench_fast",
):
    from torch.utils.cpp_extension import load

    name = build_name(cflags, ldflags, sources, prefix)
    # One directory per build, holding its own copy of the sources: ninja's state (build.ninja, the
    # object file) is then the same for every checkout with these sources. In one shared directory
    # each checkout's build.ninja named its own source paths and the next load from another worktree
    # recompiled (half a minute, in every process); the sLSTM's module (slstm_fast.py) builds the same way.
    directory = build_dir() / name
    directory.mkdir(exist_ok=True)
    # torch's own build lock is a plain file that a killed build leaves behind, and the next load then
    # waits on it forever. An flock dies with its process: while we hold it no other build of ours runs,
    # so a torch lock file found then is stale.
    with open(directory / ".lstm-bench.flock", "w") as guard:
        import fcntl  # POSIX: where it is missing, the build fails and the fallback below takes over

        fcntl.flock(guard, fcntl.LOCK_EX)
        (directory / "lock").unlink(missing_ok=True)
        for path in (*sources, *_HEADERS):  # written once: the digest names their content
            copy = directory / path.name
            if not copy.exists() or copy.read_bytes() != path.read_bytes():
                copy.write_bytes(path.read_bytes())
        return load(
            name=name,
            sources=[str(directory / p.name) for p in sources],
            extra_include_paths=[str(directory)],
            build_directory=str(directory),
            # copies: torch appends its libraries to the lists it is given, and the module-level flags
            # then named the next build of the process differently (make bench rebuilt two, ~25 s each)
            extra_cflags=list(cflags),
            extra_ldflags=list(ldflags),
            verbose=False,
        )


def load_once(state: dict, lock: threading.Lock, load, what: str, instead: str):
    """The module in `state`, built by `load()` at the first call (under `lock`), or None when it cannot be
    built here: the error is kept in `state` and logged once, in one line saying what runs `instead`.
    `state` holds "module", "error" and "seconds" (the time the build, or the load of a cached one, took)."""
    with lock:
        if state["module"] is None and state["error"] is None:
            start = time.perf_counter()
            try:
                state["module"] = load()
            except Exception as exc:  # no compiler / headers: fall back, and say so
                state["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
                log.warning("lstm-bench: %s did not build (%s); %s", what, state["error"], instead)
            state["seconds"] = time.perf_counter() - start
        return state["module"]


def prepare_once(state: dict, get) -> float:
    """A model's prepare(): build (or load the cached build of) a module before any clock starts; the
    seconds this call spent, 0.0 when the module was already loaded (or failed) in this process."""
    if state["module"] is not None or state["error"] is not None:
        return 0.0
    start = time.perf_counter()
    get()
    return time.perf_counter() - start


def extension():
    """The compiled module, or None if it cannot be built here (the error is kept, and logged once)."""
    return load_once(
        _state,
        _lock,
        lambda: _load(),
        "the C++ fast path",
        "the LSTMs and GRU run their Python loops instead",
    )


def build_seconds() -> float | None:
    """Seconds spent building (or loading the cached build of) the extension in this process."""
    return _state["seconds"]


# ---- the plan: which GEMM kernel each product runs (suite/models/kernel_plan.py) ------------------------

_plan_state: dict = {"config": None, "cache": None}


def plan_cache() -> PlanCache | None:
    """This build's plan cache under the current settings (LSTM_BENCH_PLAN_CACHE, _BUDGET, LSTM_BENCH_KERNEL);
    None without the extension."""
    ext = extension()
    if ext is None:
        return None
    env = os.environ
    config = (
        env.get("LSTM_BENCH_PLAN_CACHE"),
        env.get("LSTM_BENCH_BUILD_DIR"),
        env.get("LSTM_BENCH_PLAN_BUDGET", str(DEFAULT_BUDGET)),
        env.get("LSTM_BENCH_KERNEL") or None,
    )
    with _lock:  # read once per setting: this runs at every layer call
        if _plan_state["config"] != config:
            path, _, budget_text, forced = config
            path = path or str(build_dir() / ext.__name__ / "kernel_plans.json")  # beside the build
            try:
                budget = float(budget_text)
            except ValueError:
                raise ConfigError(
                    f"LSTM_BENCH_PLAN_BUDGET={budget_text!r} is not a number of seconds; use e.g. 0.1 "
                    "(0: never measure)"
                ) from None
            names = {False: list(ext.kernel_names(False)), True: list(ext.kernel_names(True))}

            def measure(float64, shape, role, which, plan, seconds):
                s = shape
                return ext.time_plans(
                    s.code,
                    float64,
                    s.rows,
                    s.steps,
                    s.input_size,
                    s.hidden,
                    role,
                    list(which),
                    list(plan),
                    seconds,
                )

            cache = PlanCache(Path(path), ext.__name__, names, measure, budget, forced)
            _plan_state.update(config=config, cache=cache)
        return _plan_state["cache"]


def layer_plan(cell: CellSpec, x: torch.Tensor, hidden: int) -> Plan | None:
    """The kernels of one layer call on time-major x (T, B, I); None for a single step (nothing packed)."""
    cache = plan_cache()
    T, B, I = x.shape
    if cache is None or T < 2:
        return None
    ext = extension()
    rows = ext.slice_rows(B)
    steps = min(T, max(16, 2 * max(1, ext.chunk_rows // rows)))  # whole chunks of the input products
    shape = LayerShape(cell.code, len(cell.gates), rows, steps, I, hidden)
    return cache.plan(x.dtype == torch.float64, shape)


# ---- the cells the C++ loop knows ---------------------------------------------------------------------


@dataclass(frozen=True)
class CellSpec:
    """What the Python side needs to know about a compiled cell."""

    code: int  # csrc/lstm_fast.cpp's name for it: the variant's flag bits, or kGru
    gates: str  # gate blocks with weights, in the weights' order
    has_cell_state: bool = True
    peepholes: bool = False
    gate_recurrence: bool = False  # FGR: (i, f, o)_{t-1} W_ggᵀ enters the gates


# Variant fields -> the flag bits of csrc/lstm_fast.cpp's enum (kInputGate, ...); the sum names the cell.
_FLAGS = {
    "input_gate": 1,
    "forget_gate": 2,
    "output_gate": 4,
    "input_activation": 8,
    "output_activation": 16,
    "peepholes": 32,
    "coupled_input_forget": 64,
    "full_gate_recurrence": 128,
}
GRU_CELL = CellSpec(code=1024, gates="rzn", has_cell_state=False)


def lstm_cell(variant: Variant) -> CellSpec:
    code = sum(bit for name, bit in _FLAGS.items() if getattr(variant, name))
    return CellSpec(
        code, variant.gates, peepholes=variant.peepholes, gate_recurrence=variant.full_gate_recurrence
    )


class RecurrentLayerFunction(torch.autograd.Function):
    """One layer through the C++ loop. Inputs (cell, x (T, B, I), h0, c0, W_ih, W_hh, b_ih, b_hh, W_gg, p
    [, plan]); W_gg (3H x 3H) and p (3 x H) are empty where the cell has none; plan: the kernel index of each
    product (Plan.indices; empty: the defaults). Outputs (out (T, B, H), h_n[, c_n])."""

    @staticmethod
    def forward(ctx, cell: CellSpec, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_gg, peep, plan=()):
        hs, cs, saved = extension().forward(
            cell.code, x, h0, c0, x.new_empty(0), w_ih, w_hh, b_ih, b_hh, w_gg, peep, True, list(plan)
        )
        ctx.cell, ctx.plan = cell, list(plan)
        ctx.save_for_backward(x, hs, cs, saved, w_ih, w_hh, w_gg, peep)
        return (hs[1:], hs[-1].clone()) + ((cs[-1].clone(),) if cell.has_cell_state else ())

    @staticmethod
    def backward(ctx, grad_out, grad_hn, grad_cn=None):
        x, hs, cs, saved, w_ih, w_hh, w_gg, peep = ctx.saved_tensors
        cell = ctx.cell
        zeros = hs.new_zeros(hs.shape[1:])
        grad_out = torch.zeros_like(hs[1:]) if grad_out is None else grad_out
        grad_hn = zeros if grad_hn is None else grad_hn
        grad_cn = (zeros if grad_cn is None else grad_cn) if cell.has_cell_state else hs.new_empty(0)
        g_x, g_h0, g_c0, g_w_ih, g_w_hh, g_b_ih, g_b_hh, g_w_gg, g_peep = extension().backward(
            cell.code,
            grad_out,
            grad_hn,
            grad_cn,
            x,
            hs,
            cs,
            saved,
            w_ih,
            w_hh,
            w_gg,
            peep,
            ctx.needs_input_grad[1],
            ctx.plan,
        )
        none_if_empty = [g if g.numel() else None for g in (g_x, g_c0, g_w_gg, g_peep)]
        g_x, g_c0, g_w_gg, g_peep = none_if_empty
        return None, g_x, g_h0, g_c0, g_w_ih, g_w_hh, g_b_ih, g_b_hh, g_w_gg, g_peep, None


def run_layer(cell: CellSpec, x, h0, c0, e0, weights, train: bool, plan: Plan | None = None):
    """x (T, B, I) -> out (T, B, H), h_n, c_n, e_n (FGR's last gates (i, f, o), else e0 unchanged)."""
    indices = list(plan.indices) if plan is not None else []
    if train:
        out, h, *c = RecurrentLayerFunction.apply(cell, x, h0, c0, *weights, indices)
        return out, h, c[0] if c else c0, e0
    out, c, e = extension().forward(cell.code, x, h0, c0, e0, *weights, False, indices)
    return out, out[-1], c, e if cell.gate_recurrence else e0


class CompiledLoop:
    """What FastLSTM and FastGRU share: when the compiled loop runs, the layer loop, build and label."""

    cell_spec: CellSpec
    cell_label: str  # what backend() calls the cell: "LSTM", "LSTM-cifg", "GRU"
    fallback = "reference loop in Python (autograd)"

    def compiled(self, x) -> bool:
        return x.device.type == "cpu" and x.dtype in _DTYPES and extension() is not None

    def layer_weights(self, layer: int) -> tuple:
        """(W_ih, W_hh, b_ih, b_hh, W_gg, p) of a layer as RecurrentLayerFunction takes them."""
        raise NotImplementedError

    def run_layers(self, seq, h0, c0, e0):
        """Every layer on time-major seq (T, B, I); per-layer states in, lists of final states out."""
        train = torch.is_grad_enabled() and (
            seq.requires_grad or any(p.requires_grad for p in self.parameters())
        )
        hs, cs, es = [], [], []
        for layer in range(self.num_layers):
            plan = layer_plan(self.cell_spec, seq, self.hidden_size)
            if plan is not None:  # what backend() reports: the last few shapes' kernels
                T, B, I = seq.shape
                plans, key = self.__dict__.setdefault("_plans", {}), f"B{B} T{T} I{I} H{self.hidden_size}"
                if plans.get(key) is not plan:
                    plans.pop(key, None)
                    plans[key] = plan
                    while len(plans) > 4:
                        plans.pop(next(iter(plans)))
            seq, h, c, e = run_layer(
                self.cell_spec, seq, h0[layer], c0[layer], e0[layer], self.layer_weights(layer), train, plan
            )
            if layer < self.num_layers - 1:
                seq = self.dropout(seq)
            hs.append(h), cs.append(c), es.append(e)
        return seq, hs, cs, es

    def prepare(self) -> float | None:
        """Build (or load the cached build of) the extension before any clock starts; the seconds
        this call spent, 0.0 when it was already loaded in this process. None off the CPU: the loop
        runs in Python there, and nothing is built (a C++ build would only cost a GPU run minutes)."""
        if self.layer_weights(0)[1].device.type != "cpu":  # W_hh of the first layer
            return None
        return prepare_once(_state, extension)

    def backend(self, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> str:
        device = device or torch.device("cpu")
        if device.type != "cpu":
            return f"{device.type}: {self.fallback} (no custom GPU kernel)"
        if dtype not in _DTYPES:
            return f"cpu: {self.fallback} (the C++ loop takes float32/float64)"
        if extension() is None:
            return f"cpu: {self.fallback} (C++ build failed: {_state['error']})"
        loop = f"cpu: C++ time loop ({self.cell_label}: fused gates, packed-weight GEMM kernels)"
        plans: dict[str, Plan] = getattr(self, "_plans", {})
        cache = plan_cache()
        if not plans and cache is not None:
            return f"{loop}; GEMM kernels chosen per shape at the first call (plan cache {cache.path})"
        return f"{loop}; GEMM kernels " + "; ".join(f"{k}: {p.label()}" for k, p in plans.items())


class FastLSTM(CompiledLoop, ReferenceLSTM):
    """ReferenceLSTM's parameters and function, any variant (vanilla: torch.nn.LSTM's); C++ time loop on
    the CPU."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        forget_bias: float = 0.0,
        variant: str = "vanilla",
    ):
        super().__init__(input_size, hidden_size, num_layers, variant, dropout, forget_bias)
        self.cell_spec = lstm_cell(self.variant)
        self.cell_label = "LSTM" if self.variant == VARIANTS["vanilla"] else f"LSTM-{variant}"
        if self.variant == VARIANTS["vanilla"]:
            self.fallback = "manual BPTT, time loop in Python"

    def layer_weights(self, layer: int) -> tuple:
        w = [getattr(self, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        fgr = self.variant.full_gate_recurrence
        w_gg = getattr(self, f"weight_gg_l{layer}") if fgr else w[0].new_empty(0)
        return (*w, w_gg, self._peepholes(layer))

    def _peepholes(self, layer: int):
        """(3, H): p_i, p_f, p_o, zero for a gate without one; empty without peepholes."""
        weight = cast(torch.Tensor, self.weight_hh_l0)  # registered by name in ReferenceLSTM
        if not self.variant.peepholes:
            return weight.new_empty(0)
        zero = weight.new_zeros(self.hidden_size)
        return torch.stack([getattr(self, f"peephole_{g}_l{layer}", zero) for g in "ifo"])

    def forward(self, x, state=None):
        if not self.compiled(x):
            if self.variant == VARIANTS["vanilla"]:
                return run_layers(self, x, state, LSTMLayerFunction)
            return super().forward(x, state)
        h0, c0 = state if state is not None else self.init_state(x.shape[0], x)
        e0 = [x.new_empty(0)] * self.num_layers
        seq, hs, cs, _ = self.run_layers(x.transpose(0, 1), h0, c0, e0)
        return seq.transpose(0, 1), (torch.stack(hs), torch.stack(cs))

    # incremental decoding: per layer h, c and FGR's previous gates (i, f, o) as one (B, 3H) tensor
    def init_step_state(self, batch_size: int, like: torch.Tensor):
        h, c = self.init_state(batch_size, like)
        gates = [like.new_zeros(batch_size, 3 * self.hidden_size) for _ in range(self.num_layers)]
        return list(h), list(c), gates

    def step(self, x_t, state):
        hs, cs, es = (list(s) for s in state)
        if self.compiled(x_t):
            seq, hs, cs, es = self.run_layers(x_t.unsqueeze(0), hs, cs, es)
            return seq[0], (hs, cs, es)
        for layer in range(self.num_layers):  # the reference cell
            previous = es[layer].split(self.hidden_size, -1)
            hs[layer], cs[layer], gates = self.cell(layer, x_t, hs[layer], cs[layer], previous)
            es[layer] = torch.cat(gates, -1) if self.variant.full_gate_recurrence else es[layer]
            x_t = hs[layer]
        return x_t, (hs, cs, es)

    def flop_twin(self) -> nn.Module:
        twin = ReferenceLSTM(self.input_size, self.hidden_size, self.num_layers, self.variant_name)
        twin.load_state_dict(self.state_dict())
        return twin


class FastGRU(CompiledLoop, ReferenceGRU):
    """ReferenceGRU's parameters and function (torch.nn.GRU's); C++ time loop on the CPU."""

    cell_spec = GRU_CELL
    cell_label = "GRU"

    def layer_weights(self, layer: int) -> tuple:
        w = [getattr(self, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        return (*w, w[0].new_empty(0), w[0].new_empty(0))

    def forward(self, x, state=None):
        if not self.compiled(x):
            return super().forward(x, state)
        h0 = state if state is not None else x.new_zeros(self.num_layers, x.shape[0], self.hidden_size)
        none = [x.new_empty(0)] * self.num_layers
        seq, hs, _, _ = self.run_layers(x.transpose(0, 1), h0, none, none)
        return seq.transpose(0, 1), torch.stack(hs)

    def step(self, x_t, state):
        if not self.compiled(x_t):
            return super().step(x_t, state)
        none = [x_t.new_empty(0)] * self.num_layers
        seq, hs, _, _ = self.run_layers(x_t.unsqueeze(0), list(state), none, none)
        return seq[0], hs

    def flop_twin(self) -> nn.Module:
        twin = ReferenceGRU(self.input_size, self.hidden_size, self.num_layers)
        twin.load_state_dict(self.state_dict())
        return twin
