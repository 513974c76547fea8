"""Peak memory of one call, above what was live before it.

CUDA: torch.cuda.max_memory_allocated. CPU: the allocator's own timeline. torch.profiler with
profile_memory=True records one raw event per allocation (+bytes) and per free (−bytes); walking
them in time order and keeping the running maximum gives the exact peak of tensor memory, including
temporaries allocated and freed inside a single op (a per-op net sum would miss those). Tensor
memory only: not process RSS, not the allocator's caching.
"""

from __future__ import annotations

import torch

from suite.profiler import quiet_profiler

CPU_METHOD = "cpu allocator timeline (torch.profiler raw allocation/free events, running maximum)"
CUDA_METHOD = "cuda max_memory_allocated"


def allocation_peak(prof) -> int:
    """Running maximum of (allocated − freed) CPU bytes over the raw allocator events, in time order."""
    events = [
        e
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
    ]
    running = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        running += e.nbytes()
        peak = max(peak, running)
    return peak


def peak_memory(fn, device: torch.device) -> dict:
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return {"peak_bytes": torch.cuda.max_memory_allocated() - before, "memory_method": CUDA_METHOD}
    with quiet_profiler(profile_memory=True) as prof:
        fn()
    return {"peak_bytes": allocation_peak(prof), "memory_method": CPU_METHOD}
