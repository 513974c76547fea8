"""Compile lstm-triton's kernels for an NVIDIA GPU without one: every tile configuration the planner can
choose (for B up to 512 and H up to 2048 on a GPU of --sms SMs), to cubin through Triton's own ptxas, and
print each kernel's registers, local memory (spills) and shared memory. Catches what Triton's interpreter
cannot: type errors of the compiled language, tl.dot shape rules, register spills.

    python benchmarks/triton_compile_check.py [--arch 90] [--sms 132] [--quick]

Needs triton with its NVIDIA backend (the PyPI wheel has it); no GPU, no CUDA toolkit. Exit 1 when a
kernel fails to compile or spills.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # compiled kernels, not the interpreter's
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from suite.models import lstm_triton_kernels as K

INTS = ("T", "B", "H")


def compile_one(fn, constants: dict, target, num_warps: int, num_stages: int) -> dict:
    signature = {}
    for name in fn.arg_names:
        if name in constants:
            signature[name] = "constexpr"
        elif name in ("sync", "err"):
            signature[name] = "*i32"
        elif name in INTS:
            signature[name] = "i32"
        else:
            signature[name] = "*fp32"
    kernel = triton.compile(
        ASTSource(fn, signature, constexprs=constants),
        target=target,
        options={"num_warps": num_warps, "num_stages": num_stages},
    )
    usage = {"regs": None, "local": None, "shared": kernel.metadata.shared}
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if cuobjdump.exists():
        with tempfile.TemporaryDirectory() as tmp:
            cubin = Path(tmp) / "k.cubin"
            cubin.write_bytes(kernel.asm["cubin"])
            out = subprocess.run([str(cuobjdump), "-res-usage", str(cubin)], capture_output=True, text=True)
        found = re.search(r"REG:(\d+).*LOCAL:(\d+)", out.stdout)
        if found:
            usage["regs"], usage["local"] = int(found.group(1)), int(found.group(2))
    return usage


def configurations(n_sm: int, quick: bool) -> list[tuple]:
    shapes = [(8, 128), (64, 1024), (256, 1024)] if quick else None
    if shapes is None:
        shapes = [
            (B, H) for B in (1, 8, 16, 32, 64, 128, 256, 512) for H in (7, 100, 128, 256, 512, 1024, 2048)
        ]
    found = set()
    for B, H in shapes:
        for kernel in ("persistent", "stepwise"):
            for precision in ("ieee", "tf32"):
                try:
                    p = K.choose_tiles(B, H, n_sm, kernel, precision)
                except ValueError:
                    continue
                found.add((p.kernel, p.block_b, p.block_h, p.block_k, p.num_warps, p.precision))
    return sorted(found)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", type=int, default=90, help="compute capability x10 (90: H100/H200)")
    ap.add_argument("--sms", type=int, default=132, help="SM count the planner plans for (H200: 132)")
    ap.add_argument("--quick", action="store_true", help="three shapes' tiles only")
    args = ap.parse_args(argv)
    if K.interpreted():
        print("the kernels were defined under TRITON_INTERPRET=1; run without it", file=sys.stderr)
        return 2
    target = GPUTarget("cuda", args.arch, 32)
    print(f"triton {triton.__version__}, sm_{args.arch}, planner for {args.sms} SMs")
    bad = 0
    for kernel, bb, bh, bk, warps, precision in configurations(args.sms, args.quick):
        meta = dict(BB=bb, BH=bh, BK=bk, PRECISION=precision)
        if kernel == "persistent":
            jobs = [
                (K.lstm_fwd_persistent, {**meta, "SAVE": True, "MAX_SPIN": K.MAX_SPIN}, 1),
                (K.lstm_fwd_persistent, {**meta, "SAVE": False, "MAX_SPIN": K.MAX_SPIN}, 1),
                (K.lstm_bwd_persistent, {**meta, "MAX_SPIN": K.MAX_SPIN}, 1),
            ]
        else:
            jobs = [(K.lstm_fwd_step, {**meta, "SAVE": s}, 3) for s in (True, False)]
            jobs += [(K.lstm_bwd_step, {**meta, "HAS_NEXT": n}, 3) for n in (True, False)]
        for fn, constants, stages in jobs:
            flags = {k: v for k, v in constants.items() if k in ("SAVE", "HAS_NEXT")}
            name = f"{fn.__name__:20s} {bb:3d}x{bh:<2d} k{bk} {precision} warps={warps} {flags}"
            try:
                u = compile_one(fn, constants, target, warps, stages)
            except Exception as exc:
                bad += 1
                print(f"FAILED  {name}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
                continue
            spills = u["local"] not in (None, 0)
            bad += spills
            print(
                f"{'SPILLS' if spills else 'ok':7s} {name} regs={u['regs']} local={u['local']} "
                f"shared={u['shared']}"
            )
    print(f"{bad} failed or spilling")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
