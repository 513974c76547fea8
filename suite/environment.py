"""Where a run happened: device, dtype, threads, library versions, machine, commit.
Chosen once per run and copied into every record, so every number carries its label."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from functools import lru_cache
from pathlib import Path

import torch

from suite.errors import ConfigError

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device 'cuda' asked for but torch sees no CUDA GPU; use --device cpu or auto (see README: GPU "
            "install)"
        )
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(
            "device 'mps' asked for but this machine has no Apple MPS; use --device cpu or auto"
        )
    if name not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or mps")
    return torch.device(name)


def local_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":  # a driver without a GPU may send CUDA jobs to a Ray cluster's GPU nodes
        return torch.cuda.get_device_name(device) if torch.cuda.is_available() else "GPUs of the Ray cluster"
    return cpu_name()


@lru_cache(maxsize=1)
def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@lru_cache(maxsize=1)
def git_commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        )
        if out.returncode == 0:
            return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def _version(pkg: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(pkg)
    except PackageNotFoundError:
        return "not installed"


def set_tf32(enabled: bool) -> None:
    """TF32 for float32 matrix products, one setting for every model of a run: cuBLAS (our LSTMs' GEMMs,
    the Transformers, and lstm-triton's dot products, which follow it) and cuDNN (nn.LSTM on CUDA).
    PyTorch's own defaults differ (matmul off, cuDNN on), which would give nn-lstm TF32 and the others
    full float32; the suite sets both, off unless `run --tf32`. No effect on a CPU."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


# Whether denormal floats are flushed on every compute thread, as suite.models.float_env last set and read
# them (True / False, "k of n threads", None where it cannot tell): recorded in every record's env.
denormals: dict = {"flushed": None}


def cudnn_version() -> str | None:
    """cuDNN's version as x.y.z (torch reports 90100 for 9.1.0, 8902 for 8.9.2); None without cuDNN."""
    if not torch.backends.cudnn.is_available():
        return None
    v = torch.backends.cudnn.version()
    if v is None:
        return None
    major, rest = (v // 10000, v % 10000) if v >= 10000 else (v // 1000, v % 1000)
    return f"{major}.{rest // 100}.{rest % 100}"


def precision_facts() -> dict:
    """The float32 matmul settings in force: the same for every model of a run (set_tf32)."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    rnn = getattr(getattr(torch.backends.cudnn, "rnn", None), "fp32_precision", None)  # torch >= 2.9
    return {
        "tf32": matmul and cudnn,
        "tf32_matmul": matmul,
        "tf32_cudnn": cudnn,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_rnn_fp32_precision": rnn,  # "none": follows tf32_cudnn
        "cudnn_enabled": torch.backends.cudnn.enabled,
    }


def environment(device: torch.device, dtype: str) -> dict:
    return {
        "device": device.type,
        "device_name": device_name(device),
        "dtype": dtype,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda or "none (CPU build)",
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cudnn_version": cudnn_version(),
        **precision_facts(),
        "flush_denormals": denormals["flushed"],
        "mkldnn": torch.backends.mkldnn.is_available(),
        "transformers": _version("transformers"),
        "triton": _version("triton"),
        "python": platform.python_version(),
        "host": socket.gethostname(),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} logical CPUs, {cpu_name()}",
        "commit": git_commit(),
    }
