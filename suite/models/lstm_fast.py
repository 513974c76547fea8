"""Fast vanilla LSTM: the manual-BPTT algorithm with its time loops compiled to C++
(csrc/lstm_fast.cpp), built with torch.utils.cpp_extension at first use and cached.

Measured alternatives (see README, "Fast path"): torch.jit.script was slower than eager here, and
torch.compile of the whole loop took over a minute cold. The build time is recorded apart from
throughput (`build_seconds()`). Without a C++ compiler, or on a GPU, the same algorithm runs with
its loop in Python (manual BPTT) and backend() says so.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import torch

from suite.models.lstm_manual_bptt import LSTMLayerFunction, ManualBPTTLSTM, layer_function

_SOURCE = Path(__file__).parent / "csrc" / "lstm_fast.cpp"
_lock = threading.Lock()
# -ffast-math lets gcc call glibc's vector exp/tanh (libmvec); -march=native because the build
# happens on the machine that runs it. Parity with nn.LSTM is tested at 1e-5 (float32).
_CFLAGS = ["-O3", "-ffast-math", "-march=native", "-fopenmp-simd"]
_state: dict = {"module": None, "error": None, "seconds": None}


def build_dir() -> Path:
    root = Path(os.environ.get("LSTM_BENCH_BUILD_DIR", Path.home() / ".cache" / "lstm-bench" / "torch_extensions"))
    path = root / f"torch{torch.__version__.replace('+', '_')}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def extension():
    """The compiled module, or None if it cannot be built here (the error is kept)."""
    with _lock:
        if _state["module"] is None and _state["error"] is None:
            start = time.perf_counter()
            try:
                from torch.utils.cpp_extension import load

                _state["module"] = load(name="lstm_bench_fast", sources=[str(_SOURCE)], build_directory=str(build_dir()),
                                        extra_cflags=_CFLAGS, verbose=False)
            except Exception as exc:  # no compiler / headers: fall back, and say so in backend()
                _state["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
            _state["seconds"] = time.perf_counter() - start
        return _state["module"]


def build_seconds() -> float | None:
    """Seconds spent building (or loading the cached build of) the extension in this process."""
    return _state["seconds"]


FastLSTMLayerFunction = layer_function(lambda *a: extension().forward(*a), lambda *a: extension().backward(*a),
                                       "FastLSTMLayerFunction")


class FastLSTM(ManualBPTTLSTM):
    """Same parameters and function as torch.nn.LSTM (vanilla); C++ time loop on the CPU."""

    def kernel(self, x) -> type[torch.autograd.Function]:
        use_cpp = x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and extension() is not None
        return FastLSTMLayerFunction if use_cpp else LSTMLayerFunction

    def prepare(self) -> float:
        """Build (or load the cached build of) the extension before any clock starts; the seconds
        this call spent, 0.0 when it was already loaded in this process."""
        if _state["module"] is not None or _state["error"] is not None:
            return 0.0
        start = time.perf_counter()
        extension()
        return time.perf_counter() - start

    def backend(self, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> str:
        device = device or torch.device("cpu")
        if device.type != "cpu":
            return f"{device.type}: manual BPTT, time loop in Python (no custom GPU kernel)"
        if extension() is None:
            return f"cpu: manual BPTT, time loop in Python (C++ build failed: {_state['error']})"
        return "cpu: C++ time loop (fused gates) + ATen GEMM"
