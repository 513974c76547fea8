"""lstm-triton against nn.LSTM (cuDNN) on one GPU: forward+backward and inference, over a grid of batch,
sequence length and width, interleaved, written to a CSV and a JSON as it goes (a run cut short keeps
what it measured).

    python benchmarks/gpu_lstm_bench.py --out DIR [--budget-seconds 170] [--tf32-grid]

Per shape (B, T, H; input width = H, one layer, batch-first, float32), each implementation is timed
with triton.testing.do_bench (CUDA events, the L2 cache flushed before each call, median of the calls)
in rounds that rotate the implementations' order; the figure is the median over rounds. Implementations:
cudnn (nn.LSTM), triton-persistent, triton-stepwise, triton-auto (what lstm-triton picks). Full float32
(TF32 off for cuBLAS, cuDNN and tl.dot) unless --tf32-grid adds a smaller TF32 grid (TF32 on for all).
The ratio is ours / cuDNN (< 1: ours is faster). Shapes are measured in priority order (B <= 64 first,
the issue's target: forward+backward at most 1.0x cuDNN) and no new shape starts after the budget.

--smoke: tiny shapes on the CPU through Triton's interpreter (set TRITON_INTERPRET=1), wall-clock
timing: checks this script, not speed."""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from suite.environment import cudnn_version, precision_facts, set_tf32
from suite.models.lstm_library import detect_backend
from suite.models.lstm_triton import TritonLSTM, triton_version
from suite.models.lstm_triton_kernels import check_barriers
from suite.models.weights import copy_lstm_weights

IMPLS = ("cudnn", "triton-persistent", "triton-stepwise", "triton-auto")
FIELDS = [
    "precision",
    "B",
    "T",
    "H",
    "mode",
    "impl",
    "ms",
    "ratio_vs_cudnn",
    "rounds",
    "plan",
    "max_abs_diff_out",
    "error",
]


def grid(smoke: bool, tf32: bool) -> list[tuple[str, tuple[int, int, int]]]:
    """(precision, (B, T, H)) in the order measured: the issue's target region first (B <= 64, full
    float32), then a few TF32 shapes, then the large batch."""
    if smoke:
        return [("ieee", (2, 4, 16)), ("ieee", (3, 3, 20))]
    shapes = [("ieee", (B, T, H)) for B in (8, 64) for H in (128, 512, 1024) for T in (128, 512, 1024)]
    if tf32:
        shapes += [("tf32", (B, 512, H)) for B in (8, 64) for H in (256, 1024)]
    return shapes + [("ieee", (256, T, H)) for H in (128, 512, 1024) for T in (128, 1024)]


def timer(device: torch.device, fast: bool):
    if device.type == "cuda":
        from triton.testing import do_bench

        warmup, rep = (5, 20) if fast else (10, 40)
        return lambda fn: do_bench(fn, warmup=warmup, rep=rep, return_mode="median")

    def wall(fn, reps: int = 3) -> float:  # the interpreter smoke run: wall clock, ms
        fn()
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times)

    return wall


def models(H: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    lib = torch.nn.LSTM(H, H, batch_first=True).to(device)
    out = {"cudnn": lib}
    for impl in IMPLS[1:]:
        ours = TritonLSTM(H, H, kernel=impl.removeprefix("triton-")).to(device)
        copy_lstm_weights(lib, ours)
        out[impl] = ours
    return out


def plan_of(B: int, H: int, device: torch.device, kernel: str, precision: str) -> str:
    from suite.models import lstm_triton_kernels as K

    try:
        return K.make_plan(B, H, device, kernel, precision).describe()
    except ValueError as exc:
        return f"no plan: {exc}"


def measure_shape(shape, device, bench, rounds, precision, writer, rows) -> None:
    B, T, H = shape
    nets = models(H, device)
    x = torch.randn(B, T, H, device=device, requires_grad=True)
    grad = torch.randn(B, T, H, device=device)
    reference = None
    diffs: dict[str, float | None] = {}
    for impl, net in nets.items():  # correctness first, once per shape: the output against cuDNN's
        try:
            with torch.no_grad():
                out = net(x)[0]
            reference = out if impl == "cudnn" else reference
            diffs[impl] = (out - reference).abs().max().item() if reference is not None else None
        except Exception as exc:
            diffs[impl] = None
            print(f"  {impl}: forward failed: {type(exc).__name__}: {str(exc)[:200]}", flush=True)

    def train(net):
        def fn():
            out, _ = net(x)
            out.backward(grad)

        return fn

    def infer(net):
        def fn():
            with torch.no_grad():
                net(x)

        return fn

    for mode, make in (("fwd+bwd", train), ("inference", infer)):
        times: dict[str, list[float]] = {impl: [] for impl in nets}
        errors: dict[str, str] = {}
        order = list(nets)
        for r in range(rounds):
            for impl in order[r % len(order) :] + order[: r % len(order)]:  # rotate the order each round
                if impl in errors:
                    continue
                net = nets[impl]
                try:
                    times[impl].append(bench(make(net)))
                    check_barriers(wait=True)  # a persistent launch that gave up is an error, not a time
                except Exception as exc:
                    errors[impl] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
                finally:
                    x.grad = None
                    net.zero_grad(set_to_none=True)
        base = statistics.median(times["cudnn"]) if times["cudnn"] else None
        for impl in nets:
            ms = statistics.median(times[impl]) if times[impl] else None
            kernel = impl.removeprefix("triton-")
            row = {
                "precision": precision,
                "B": B,
                "T": T,
                "H": H,
                "mode": mode,
                "impl": impl,
                "ms": round(ms, 4) if ms is not None else None,
                "ratio_vs_cudnn": round(ms / base, 4) if ms is not None and base else None,
                "rounds": len(times[impl]),
                "plan": "" if impl == "cudnn" else plan_of(B, H, device, kernel, precision),
                "max_abs_diff_out": diffs.get(impl),
                "error": errors.get(impl, ""),
            }
            writer.writerow(row)
            rows.append(row)
        line = "  ".join(
            f"{impl}={r['ms']}ms({r['ratio_vs_cudnn']}x)" if r["ms"] is not None else f"{impl}=FAILED"
            for impl, r in zip(nets, rows[-len(nets) :])
        )
        print(f"[{time.strftime('%H:%M:%S')}] {precision} B={B} T={T} H={H} {mode}: {line}", flush=True)
        for impl, err in errors.items():
            print(f"    {impl}: {err}", flush=True)


def facts(device: torch.device) -> dict:
    info = {
        "device": device.type,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "sm_count": torch.cuda.get_device_properties(device).multi_processor_count
        if device.type == "cuda"
        else None,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": triton_version(),
        "cudnn": cudnn_version(),
        "nn_lstm_backend": detect_backend(device.type, torch.float32),
        "timing": "triton.testing.do_bench (CUDA events, L2 flushed, median), median over rotated rounds"
        if device.type == "cuda"
        else "wall clock (interpreter smoke run: not a speed figure)",
        "layout": "one layer, input width = H, batch-first, float32",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
    }
    return info


def summary(rows: list[dict]) -> list[str]:
    """The issue's target: lstm-triton (auto) forward+backward at most 1.0x cuDNN at B <= 64."""
    lines = []
    for precision in sorted({r["precision"] for r in rows}):
        for impl in IMPLS[1:]:
            got = [
                r
                for r in rows
                if r["precision"] == precision
                and r["impl"] == impl
                and r["mode"] == "fwd+bwd"
                and r["B"] <= 64
                and r["ratio_vs_cudnn"] is not None
            ]
            if not got:
                continue
            ratios = sorted(r["ratio_vs_cudnn"] for r in got)
            met = sum(x <= 1.0 for x in ratios)
            lines.append(
                f"{precision} {impl} fwd+bwd, B<=64: {met}/{len(got)} shapes at <= 1.0x cuDNN; ratio median "
                f"{statistics.median(ratios):.2f}, range {ratios[0]:.2f}-{ratios[-1]:.2f}"
            )
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="directory for lstm_gpu_bench.csv / .json")
    ap.add_argument("--budget-seconds", type=float, default=170.0, help="no new shape starts after this")
    ap.add_argument("--rounds", type=int, default=3, help="rotated rounds per shape (median over them)")
    ap.add_argument("--tf32-grid", action="store_true", help="also a small grid with TF32 on for all")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU (TRITON_INTERPRET=1)")
    args = ap.parse_args(argv)
    if args.smoke:
        device = torch.device("cpu")
        if os.environ.get("TRITON_INTERPRET") != "1":
            print("--smoke runs Triton's interpreter: set TRITON_INTERPRET=1", file=sys.stderr)
            return 2
    elif not torch.cuda.is_available():
        print("no CUDA GPU: nothing to measure (--smoke checks this script on the CPU)", file=sys.stderr)
        return 2
    else:
        device = torch.device("cuda")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows: list[dict] = []
    info = facts(device)
    print(json.dumps(info, indent=1), flush=True)
    plan = grid(args.smoke, args.tf32_grid)
    skipped = []
    with open(out / "lstm_gpu_bench.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        for precision, shape in plan:
            if time.perf_counter() - start > args.budget_seconds:
                skipped.append((precision, *shape))
                continue
            set_tf32(precision == "tf32")
            try:
                measure_shape(shape, device, timer(device, args.smoke), args.rounds, precision, writer, rows)
            except Exception as exc:  # e.g. out of memory: this shape is lost, the next one runs
                print(f"shape {shape} ({precision}) failed: {type(exc).__name__}: {exc}", flush=True)
            f.flush()
            if device.type == "cuda":
                torch.cuda.empty_cache()  # the last shape's buffers, before the next one's
    set_tf32(False)
    lines = summary(rows)
    if skipped:
        lines.append(f"not measured (budget of {args.budget_seconds:.0f} s spent): {skipped}")
    report = {
        **info,
        "precision_settings": precision_facts(),
        "rows": rows,
        "summary": lines,
        "seconds": time.perf_counter() - start,
    }
    (out / "lstm_gpu_bench.json").write_text(json.dumps(report, indent=1))
    print("\n".join(["", "summary:", *lines]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
