"""The published pattern, checked standalone: sLSTM solves parity and extrapolates in length, mLSTM does not
(xLSTM paper, Fig. 4 and Appendix; Walker et al. 2025: parity sLSTM 100, mLSTM 53.0).

Parity: a bit string, the label is whether it holds an odd number of ones (read after the last bit).
Trained on lengths 1..40 (each batch one length, drawn uniformly), tested on every length 41..256: the
accuracy of the final label over `--eval-per-length` strings per length (chance: 0.5). The models are
the suite's own (`slstm`, `mlstm`, `xlstm` from suite/models/catalog.py, sized to `--budget` backbone
parameters), trained with Adam, gradient clipping 1.0 and a cosine schedule.

    PYTHONPATH=. .venv/bin/python benchmarks/xlstm_parity.py --models slstm,mlstm --steps 3000

Prints one line per model (test accuracy overall and per length band, training accuracy, seconds) and
the CPU it ran on. Until the suite's own length-generalization tasks exist, this is the check to run.
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import torch
import torch.nn.functional as F

from suite.interfaces import TaskSpec
from suite.models.catalog import MODELS
from suite.models.sizing import build_model

SPEC = TaskSpec(seq_len=40, input_vocab=2, output_dim=2, readout="last")
BANDS = [(41, 64), (65, 128), (129, 256)]


def parity_batch(n: int, length: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n bit strings of one length -> (bits (n, length), parity (n,))."""
    x = torch.randint(0, 2, (n, length), generator=generator)
    return x, x.sum(1) % 2


@torch.no_grad()
def accuracy_by_length(model, lengths, per_length: int, seed: int) -> dict[int, float]:
    g = torch.Generator().manual_seed(seed)
    model.eval()
    out = {}
    for length in lengths:
        x, y = parity_batch(per_length, length, g)
        out[length] = (model(x).argmax(-1) == y).float().mean().item()
    model.train()
    return out


def train(name: str, args) -> dict:
    spec = {m.name: m for m in MODELS}[name]
    model, width = build_model(spec, SPEC, budget=args.budget, seed=args.seed)
    g = torch.Generator().manual_seed(args.seed + 1)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)),
    )
    start = time.perf_counter()
    for step in range(args.steps):
        length = int(torch.randint(1, args.train_max + 1, (1,), generator=g))
        x, y = parity_batch(args.batch, length, g)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        schedule.step()
        if args.verbose and (step + 1) % 500 == 0:
            probe = accuracy_by_length(model, [args.train_max, 2 * args.train_max], 256, seed=99)
            print(f"  {name} step {step + 1}: loss {loss.item():.3f}, acc at {probe}", flush=True)
    seconds = time.perf_counter() - start
    test = accuracy_by_length(model, range(args.train_max + 1, args.test_max + 1), args.eval_per_length, 1234)
    seen = accuracy_by_length(model, range(1, args.train_max + 1), args.eval_per_length, 4321)
    return {
        "model": name,
        "width": width,
        "params": sum(p.numel() for p in model.parameters()),
        "backend": model.backend(torch.device("cpu"), torch.float32),
        "train_acc": sum(seen.values()) / len(seen),
        "test_acc": sum(test.values()) / len(test),
        "bands": {
            f"{lo}-{hi}": sum(v for k, v in test.items() if lo <= k <= hi) / (hi - lo + 1) for lo, hi in BANDS
        },
        "seconds": seconds,
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="slstm,mlstm")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--budget", type=int, default=20000, help="backbone parameters, as the profiles")
    p.add_argument("--train-max", type=int, default=40)
    p.add_argument("--test-max", type=int, default=256)
    p.add_argument("--eval-per-length", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(
        f"parity: train lengths 1-{args.train_max}, test {args.train_max + 1}-{args.test_max} "
        f"({args.eval_per_length} strings per length), {args.steps} steps x batch {args.batch}, "
        f"lr {args.lr}, budget {args.budget}, seed {args.seed}; {cpu}, {args.threads} thread(s), "
        f"torch {torch.__version__}"
    )
    for name in args.models.split(","):
        r = train(name, args)
        bands = "  ".join(f"{k}: {v:.3f}" for k, v in r["bands"].items())
        print(
            f"{r['model']:6s} width {r['width']:3d} ({r['params']} params)  "
            f"train-length acc {r['train_acc']:.3f}  test acc {r['test_acc']:.3f}  [{bands}]  "
            f"{r['seconds']:.0f} s  ({r['backend']})",
            flush=True,
        )


if __name__ == "__main__":
    main()
