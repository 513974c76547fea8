"""After the micro suite: each benchmark's roofline (GFLOP/s and % of this machine's GEMM rate, both from
this run) into its extra_info, and a table of ratios against each row's baseline measured in this run."""

import platform
from pathlib import Path

import torch

from suite.environment import cpu_name

SQUARE = "square"


def record_row(benchmark, impl, mode, B, T, I, H, baseline, flops, flops_source) -> None:
    """A row's declared fields (extra_info), which roofline() and the report's ratio table read: what ran, at
    which sizes, against which baseline of this run, and its FLOPs. ran_alone: pytest times one benchmark
    at a time, and `make bench` starts them after the run's last job."""
    benchmark.extra_info.update(
        impl=impl,
        mode=mode,
        B=B,
        T=T,
        I=I,
        H=H,
        threads=torch.get_num_threads(),
        baseline=baseline,
        flops=flops,
        flops_source=flops_source,
        ran_alone=True,
        concurrency=1,
    )


def roofline(benchmarks) -> None:
    """extra_info["gflops"] = FLOPs / median time; ["pct_of_gemm"] = that over the large square torch.mm's
    rate; ["pct_of_gate_gemm"] = over torch.mm at this size's gate-GEMM shape (B x H) @ (H x 4H)."""
    rate = {
        b.extra_info.get("shape"): b.extra_info["flops"] / b.stats.median / 1e9
        for b in benchmarks
        if b.extra_info.get("impl") == "torch.mm"
    }
    for b in benchmarks:
        info = b.extra_info
        if not info.get("flops"):
            continue
        info["gflops"] = round(info["flops"] / b.stats.median / 1e9, 3)
        if info.get("impl") == "torch.mm":
            continue
        if SQUARE in rate:
            info["pct_of_gemm"] = round(100 * info["gflops"] / rate[SQUARE], 1)
        gate = rate.get(f"gate-B{info['B']}-H{info['H']}")
        if gate:
            info["pct_of_gate_gemm"] = round(100 * info["gflops"] / gate, 1)


def pytest_benchmark_update_json(config, benchmarks, output_json):
    roofline(benchmarks)
    infos = {b.fullname: b.extra_info for b in benchmarks}
    for entry in output_json["benchmarks"]:
        entry["extra_info"] = infos.get(entry["fullname"], entry["extra_info"])
    # the CPU as lscpu names it, its vector ISA, and the GEMM rate every % of GEMM is taken against
    machine = output_json.setdefault("machine_info", {})
    machine["cpu_model"], machine["cpu_isa"] = cpu_name(), _isa()
    square = [b for b in benchmarks if b.extra_info.get("shape") == SQUARE and "gflops" in b.extra_info]
    if square:
        machine["gemm_gflops"] = square[0].extra_info["gflops"]


def _isa() -> str:
    """The vector extensions that decide the fast path's kernels, from the CPU's flags."""
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "asimd", "sve")
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                have = set(line.split(":", 1)[1].split())
                return " ".join(f for f in wanted if f in have)
    except OSError:
        pass
    return platform.machine()


def _key(info, impl):
    return impl, info.get("mode"), info.get("B"), info.get("T"), info.get("I"), info.get("H")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    bs = getattr(config, "_benchmarksession", None)
    if bs is None or not bs.benchmarks:
        return
    roofline(bs.benchmarks)
    median = {_key(b.extra_info, b.extra_info.get("impl")): b.stats.median for b in bs.benchmarks}
    write = terminalreporter.write_line
    terminalreporter.write_sep("-", "time over each row's baseline (same run; lower is faster), roofline")
    write(f"CPU: {cpu_name()} ({_isa()})")
    gemm = [b for b in bs.benchmarks if b.extra_info.get("impl") == "torch.mm"]
    for b in gemm:
        write(f"torch.mm {b.extra_info['shape']:18s} {b.extra_info['gflops']:8.1f} GFLOP/s")
    rows = sorted(
        (b for b in bs.benchmarks if b not in gemm),
        key=lambda b: (
            b.extra_info.get("B", 0),
            b.extra_info.get("T", 0),
            b.extra_info.get("H", 0),
            b.extra_info.get("mode", ""),
            b.extra_info.get("impl", ""),
        ),
    )
    for b in rows:
        info = b.extra_info
        base = median.get(_key(info, info.get("baseline")))
        ratio = f"{b.stats.median / base:6.2f}x {info['baseline']:<18s}" if base else " " * 26
        pct = info.get("pct_of_gemm", float("nan"))
        roof = f"{info['gflops']:7.1f} GFLOP/s {pct:5.1f}% of GEMM" if "gflops" in info else ""
        size = f"B={info.get('B'):<3} T={info.get('T'):<4} I={info.get('I'):<4} H={info.get('H'):<4}"
        write(
            f"{info.get('impl', b.name):23s} {info.get('mode', ''):9s} {size} "
            f"median {b.stats.median * 1e3:9.3f} ms {ratio} {roof}"
        )
