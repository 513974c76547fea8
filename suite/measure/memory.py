"""Peak memory of one call. CUDA: torch.cuda.max_memory_allocated. CPU: the allocator's own events
recorded by torch.profiler(profile_memory=True), summed in time order: the peak of tensor memory
held above what was live before the call (activations, gradients, workspaces), not process RSS."""

from __future__ import annotations

import contextlib
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile


@contextlib.contextmanager
def quiet_profiler():
    """Profile with kineto's start/stop lines (written straight to fd 2) kept off the terminal."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            yield prof
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_memory(fn, device: torch.device) -> dict:
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return {"peak_bytes": torch.cuda.max_memory_allocated() - before, "memory_method": "cuda max_memory_allocated"}
    with quiet_profiler() as prof:
        fn()
    # each op's own allocations minus frees (self, not counting its children), in time order
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    running = peak = 0
    for e in events:
        running += e.self_cpu_memory_usage
        peak = max(peak, running)
    return {"peak_bytes": int(peak), "memory_method": "cpu tensor allocations (torch.profiler memory events)"}
