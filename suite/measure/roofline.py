"""The whole training step against this machine's limit: the step's arithmetic rate (training FLOPs per
second, from suite.measure.flops' count and the measured tokens per second) and its share of the GEMM
rate that the same process reaches at the same thread count.

The GEMM rate is one large square matrix product (GEMM_SIZE², the run's dtype, on its device), timed with
torch.utils.benchmark at the current thread count, once per process, device, dtype and thread count
(cached): the denominator of every share this process records. It is measured under the same load as
the run, so a busy machine lowers both. The micro-benchmarks (benchmarks/) give the kernels' own
roofline beside it.
"""

from __future__ import annotations

from functools import cache

import torch
from torch.utils.benchmark import Timer

from suite.records import StepRate

GEMM_SIZE = 2048


@cache
def _gemm_rate(device_type: str, dtype: torch.dtype, threads: int) -> float | None:
    if device_type not in ("cpu", "cuda"):
        return None
    device = torch.device(device_type)
    a = torch.randn(GEMM_SIZE, GEMM_SIZE, device=device).to(dtype)
    b = torch.randn(GEMM_SIZE, GEMM_SIZE, device=device).to(dtype)
    torch.mm(a, b)  # warm-up: the library's first call sets itself up
    timer = Timer("torch.mm(a, b)", globals={"torch": torch, "a": a, "b": b}, num_threads=threads)
    seconds = timer.blocked_autorange(min_run_time=0.3).median  # Timer synchronises CUDA
    return 2 * GEMM_SIZE**3 / seconds


def gemm_flops_per_s(device: torch.device, dtype: torch.dtype, threads: int | None = None) -> float | None:
    """FLOP/s of a GEMM_SIZE² torch.mm here (None on devices it is not measured on)."""
    return _gemm_rate(device.type, dtype, threads or torch.get_num_threads())


def step_rate(
    train_flops_per_token: float | None,
    tokens_per_s: float | None,
    device: torch.device,
    dtype: torch.dtype,
    threads: int | None = None,
) -> StepRate:
    """A whole step's FLOP/s and its share of this process's GEMM rate at `threads` (default: current)."""
    threads = threads or torch.get_num_threads()
    gemm = gemm_flops_per_s(device, dtype, threads)
    rate = train_flops_per_token * tokens_per_s if train_flops_per_token and tokens_per_s else None
    return StepRate(
        step_flops_per_s=rate,
        gemm_flops_per_s=gemm,
        gemm_threads=threads if gemm else None,
        step_share_of_gemm=rate / gemm if rate and gemm else None,
    )
