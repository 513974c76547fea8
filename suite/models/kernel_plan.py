"""Which GEMM kernel each product of the fast path's loop runs on this CPU, for this layer shape: measured
once per (CPU, kernel build, layer shape) and kept in a plan cache beside the build, as FFTW keeps wisdom and
LIBXSMM its dispatch table.

Why: the best register blocking depends on the CPU. On an Intel Xeon with AVX-512 (two 512-bit FMA units)
8 x 2 zmm tiles run at ~150 GFLOP/s per core where AVX2's 6 x 2 ymm tiles reach ~100; on AMD Zen 4, which
splits 512-bit operations in two, they are about even; for a few rows (a small batch slice) a wider, shorter
tile can win. csrc/small_gemm.h compiles a handful of blockings for the ISA at hand, csrc/lstm_fast.cpp adds
BLAS through ATen (MKL or OpenBLAS), and the plan picks one per product of the loop:

    ROLES[0] h_{t-1} W_hhᵀ        forward, every step         (M = batch slice, N = G H, K = H)
    ROLES[1] x W_ihᵀ              forward, per chunk of steps  (M = chunk rows, N = G H, K = I)
    ROLES[2] δa W_hh              backward, every step         (M = batch slice, N = H, K = G H)
    ROLES[3] δa W_ih              backward, per chunk          (M = chunk rows, N = I, K = G H)
    ROLES[4] δaᵀ [x | h_{t-1}]    weight gradients, per chunk  (M = G H, N = H, K = chunk rows)

How: the real loop is timed (the extension's time_plans: one batch slice on one thread, as each thread runs
its slice, a short sequence), one role at a time with the roles before it at their choice and the others at
the default (coordinate descent), every candidate in turn over repeated rounds, the fastest call of each. A
candidate replaces the default only when it is at least MARGIN faster. (Products timed alone ranked the
kernels differently from the loop.) The cache file (JSON) holds one section per CPU identity (model name,
family/model/stepping, a digest of the instruction-set flags) naming the kernel build it was measured with:
a section of another CPU is never read, and a new build (changed kernels) measures again. A file that cannot
be read is not trusted: the default kernels run, with one warning. Layers too small to time reliably (fewer
than MIN_MACS multiply-adds per step and slice) take the default without measuring.

    LSTM_BENCH_PLAN_CACHE    the cache file (default: beside the build, kernel_plans.json)
    LSTM_BENCH_PLAN_BUDGET   seconds of measurement per role and layer shape (default 0.05; 0: never measure)
    LSTM_BENCH_KERNEL        one kernel name for every product, measuring nothing (experiments)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import platform
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import torch

from suite.environment import cpu_name
from suite.errors import ConfigError

log = logging.getLogger("lstm_bench")

ROLES = ("h·W_hhᵀ", "x·W_ihᵀ", "δa·W_hh", "δa·W_ih", "δaᵀ·[x|h]")
FORMAT = 2
MIN_MACS = 1 << 16
DEFAULT_BUDGET = 0.05
MARGIN = 0.03

_measuring = {"seconds": 0.0}  # this process's seconds spent measuring plans (every PlanCache's)
_measuring_lock = threading.Lock()


def measuring_seconds() -> float:
    """Seconds this process has spent measuring plans so far. A shape is measured once per machine, at its
    first layer call: a timer of steady-state steps (the dry run's calibration) takes the difference out."""
    with _measuring_lock:
        return _measuring["seconds"]


@dataclass(frozen=True)
class LayerShape:
    """What a plan is measured for: the cell (lstm_fast's CellSpec.code), its gate blocks, the rows of one
    batch slice, the steps timed (enough for whole chunks of the input products), input and hidden size."""

    code: int
    gates: int
    rows: int
    steps: int
    input_size: int
    hidden: int

    def key(self, float64: bool) -> str:
        dtype = "float64" if float64 else "float32"
        return f"{dtype} cell {self.code} rows {self.rows} I {self.input_size} H {self.hidden} T {self.steps}"

    def macs_per_step(self) -> int:
        return self.rows * self.gates * self.hidden * (self.hidden + self.input_size)


# measure(float64, shape, role, kernel indices, plan of the other roles, seconds) -> seconds per call of each
Measure = Callable[[bool, LayerShape, int, Sequence[int], Sequence[int], float], Sequence[float]]


@lru_cache(maxsize=1)
def cpu_identity() -> str:
    """The CPU a -march=native build and a measured plan belong to: its model name, family/model/stepping
    and a digest of its instruction-set flags (/proc/cpuinfo; elsewhere the platform's strings)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("cpu family", "model", "stepping", "flags", "Features") and key not in fields:
                fields[key] = value.strip()
            if not line.strip() and fields:
                break  # the first processor's block is enough
    except OSError:
        pass
    flags = fields.get("flags") or fields.get("Features") or platform.machine()
    where = "/".join(fields.get(k, "?") for k in ("cpu family", "model", "stepping"))
    return f"{cpu_name()} ({where}, flags {hashlib.sha256(flags.encode()).hexdigest()[:8]})"


@dataclass(frozen=True)
class Plan:
    """One layer call's kernels: an index into the build's kernel list per role, and how they were chosen."""

    indices: tuple[int, ...]
    kernels: tuple[str, ...]
    source: str  # "measured on this CPU", "default: ...", "forced by LSTM_BENCH_KERNEL"

    def label(self) -> str:
        if len(set(self.kernels)) == 1:
            return f"{self.kernels[0]} for every product ({self.source})"
        return ", ".join(f"{r} {k}" for r, k in zip(ROLES, self.kernels)) + f" ({self.source})"


class PlanCache:
    """The plan cache file of one kernel build on this CPU. `measure` times the layer with each kernel in one
    role (the extension's time_plans; tests inject their own)."""

    def __init__(
        self,
        path: Path,
        build: str,
        names: dict[bool, list[str]],
        measure: Measure,
        budget: float = DEFAULT_BUDGET,
        forced: str | None = None,
        identity: str | None = None,
    ):
        self.path, self.build, self.names, self.measure = Path(path), build, names, measure
        self.budget, self.forced = budget, forced
        self.identity = identity or cpu_identity()
        self._lock = threading.Lock()
        self._plans: dict[tuple, Plan] = {}
        self._entries: dict[str, dict] | None = None  # this CPU's layer shapes, read at first use
        self._unreadable: str | None = None
        if forced is not None and not any(forced in n for n in names.values()):
            raise ConfigError(
                f"LSTM_BENCH_KERNEL={forced!r} is not a kernel of this build ({', '.join(names[False])}); "
                "unset it or pick one"
            )

    # ---- the file ----------------------------------------------------------------------------------------
    def _read(self) -> dict:
        """The whole file ({} when there is none); raises ValueError when it is not a plan cache."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        data = json.loads(text)  # JSONDecodeError is a ValueError
        if isinstance(data, dict) and isinstance(data.get("format"), int) and data["format"] != FORMAT:
            return {}  # another version's cache: measured again, and replaced
        if not isinstance(data, dict) or not isinstance(data.get("cpus"), dict):
            raise ValueError("not a plan cache")
        for section in data["cpus"].values():
            if not isinstance(section, dict) or not isinstance(section.get("layers"), dict):
                raise ValueError("a CPU section without layers")
            for entry in section["layers"].values():
                kernels = entry.get("kernels") if isinstance(entry, dict) else None
                if not isinstance(kernels, list) or len(kernels) != len(ROLES):
                    raise ValueError("a layer shape without one kernel per product")
        return data

    def _section(self, data: dict) -> dict[str, dict]:
        """This CPU's layer shapes in a file's contents; none when they were measured with another build."""
        section = data.get("cpus", {}).get(self.identity, {})
        return dict(section.get("layers", {})) if section.get("build") == self.build else {}

    def _load(self) -> dict[str, dict]:
        if self._entries is None:
            try:
                self._entries = self._section(self._read())
            except (OSError, ValueError) as exc:
                self._unreadable = f"{type(exc).__name__}: {' '.join(str(exc).split())[:100]}"
                log.warning(
                    "lstm-bench: the kernel plan cache %s is unreadable (%s); the default kernels run. "
                    "Delete the file to measure again",
                    self.path,
                    self._unreadable,
                )
                self._entries = {}
        return self._entries

    def _measured(self, float64: bool, shape: LayerShape) -> dict:
        """The entry of a shape this process has not seen: another process's, if one measured it meanwhile,
        else measured now and saved. Under the file's lock, so that the processes sharing a cache (Ray
        workers) measure a shape once and all run the same kernels (the same floating-point sums)."""
        import fcntl

        key, entries = shape.key(float64), self._load()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            guard = open(self.path.with_name(self.path.name + ".lock"), "w")  # noqa: SIM115 (closed below)
        except OSError:  # a read-only place: the plan holds in this process only
            entries[key] = self._measure(float64, shape)
            return entries[key]
        with guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            try:
                data: dict | None = self._read() or {"format": FORMAT, "cpus": {}}
            except (OSError, ValueError):
                data = None  # broken since we read it: measure, and leave the file alone
            if data is not None:
                entries.update(self._section(data))
            if key not in entries:
                entries[key] = self._measure(float64, shape)
                if data is not None:
                    data["cpus"][self.identity] = {"build": self.build, "layers": entries}
                    tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
                    tmp.write_text(json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False))
                    os.replace(tmp, self.path)
        return entries[key]

    # ---- choosing ----------------------------------------------------------------------------------------
    def plan(self, float64: bool, shape: LayerShape) -> Plan:
        """The kernels of one layer call of this shape."""
        key = (float64, shape)
        with self._lock:
            if key not in self._plans:
                self._plans[key] = self._choose(float64, shape)
            return self._plans[key]

    def _choose(self, float64: bool, shape: LayerShape) -> Plan:
        names = self.names[float64]
        default = Plan((0,) * len(ROLES), (names[0],) * len(ROLES), "")
        if self.forced is not None:
            if self.forced not in names:  # float64 has the default kernel and BLAS only
                return replace(default, source=f"default: no float64 {self.forced}")
            i = names.index(self.forced)
            return Plan((i,) * len(ROLES), (self.forced,) * len(ROLES), "forced by LSTM_BENCH_KERNEL")
        entries = self._load()
        if self._unreadable:
            return replace(default, source="default: plan cache unreadable")
        entry = entries.get(shape.key(float64))
        if entry is None:
            if shape.macs_per_step() < MIN_MACS or len(names) < 2:
                return replace(default, source="default: too small to measure")
            if self.budget <= 0:
                return replace(default, source="default: LSTM_BENCH_PLAN_BUDGET=0")
            entry = self._measured(float64, shape)
        chosen = [k if k in names else names[0] for k in entry["kernels"]]
        return Plan(tuple(names.index(k) for k in chosen), tuple(chosen), "measured on this CPU")

    def _measure(self, float64: bool, shape: LayerShape) -> dict:
        """Coordinate descent over the roles, each timed in the real loop with the others fixed."""
        names = self.names[float64]
        plan = [0] * len(ROLES)
        timings: dict[str, dict[str, float]] = {}
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # one batch slice, as each thread runs its own
        start = time.perf_counter()
        try:
            for role in range(len(ROLES)):
                seconds = list(self.measure(float64, shape, role, range(len(names)), plan, self.budget))
                best = min(range(len(names)), key=lambda i: seconds[i])
                plan[role] = best if seconds[best] < (1 - MARGIN) * seconds[0] else 0
                timings[ROLES[role]] = {name: round(s * 1e6, 1) for name, s in zip(names, seconds)}
        finally:
            torch.set_num_threads(threads)
            with _measuring_lock:
                _measuring["seconds"] += time.perf_counter() - start
        return {
            "kernels": [names[i] for i in plan],
            "us_per_call": timings,
            "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
