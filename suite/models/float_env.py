"""Denormal floats flushed to zero (FTZ and DAZ) on every thread that computes: the calling thread and each
thread of ATen's intra-op pool (csrc/float_env.cpp says why, and how the pool's threads are reached).

    set_flush_denormals(True)     # after torch.set_num_threads; suite.environment.denormals records it
    denormals_flushed()           # True / False, "k of n threads", None where it cannot tell
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from suite import environment
from suite.models import lstm_fast

_SOURCE = Path(__file__).parent / "csrc" / "float_env.cpp"
_state: dict = {"module": None, "error": None, "seconds": None}
_lock = threading.Lock()


def _helper():
    """The compiled helper, or None where it cannot be built (then only the calling thread is set, by
    torch)."""
    flags = ["-O2", "-fopenmp"]  # -fopenmp: at::parallel_for's OpenMP pragma is in its header
    return lstm_fast.load_once(
        _state,
        _lock,
        lambda: lstm_fast._build(flags, ["-fopenmp"], (_SOURCE,), "lstm_bench_float_env"),
        "the floating-point environment helper",
        "denormals are flushed on the calling thread only",
    )


def set_flush_denormals(enabled: bool) -> None:
    """Flush denormal floats to zero on every thread that computes, or stop: one setting for every model of a
    run, on by default (`run --keep-denormals` turns it off). Values below 1.2e-38 become 0, which no metric
    can see, and an x86 core stops paying a microcode assist for each operation on them: at a sweep's high
    learning rates the training step ran 1.6x (lstm-fast) to 3.5x (nn.LSTM) faster (README, "Denormal
    floats"). Call it after torch.set_num_threads: a pool that grows later inherits the setting from the
    calling thread, and one that is rebuilt may not."""
    torch.set_flush_denormal(enabled)  # the calling thread, wherever the helper cannot be built
    module = _helper()
    seen = None
    if module is not None and module.supported:  # what each thread reads back, once it is set
        seen = _summary(*module.set_flush_denormals(enabled))
    environment.denormals["flushed"] = seen


def denormals_flushed() -> bool | str | None:
    """Whether denormals are flushed on every thread of the intra-op pool (True / False), "k of n threads"
    when only some are, None where this cannot be read (no helper)."""
    module = _helper()
    if module is None or not module.supported:
        return None
    return _summary(*module.flushed_threads())


def _summary(threads: int, flushed: int) -> bool | str:
    if flushed in (0, threads):
        return flushed == threads
    return f"{flushed} of {threads} threads"
