"""What flushing denormal floats saves, per model, at a learning rate high enough to make them
(suite/models/float_env.py; csrc/float_env.cpp says why).

Two copies of each model, same seed, same batches, train side by side with the suite's step (TrainStep:
clipping, fused AdamW) on adding (T=25, B=32, backbone budget 20k), one step each in turn: copy A with
denormals flushed on every compute thread, copy B with them kept (IEEE). Interleaved step by step in one
process, so the machine's drift hits both alike. Prints, per model and per block of steps, the median
milliseconds per step of each and their ratio, the two copies' losses (which should agree to float noise),
and the CPU.

    PYTHONPATH=. .venv/bin/python benchmarks/denormals.py [--lr 0.1] [--steps 600] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from suite.environment import cpu_name
from suite.jobs import Recipe
from suite.models.float_env import set_flush_denormals
from suite.models.sizing import build_model
from suite.registry import load_registry
from suite.training_step import TrainStep
from tasks.adding_problem import AddingProblem


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="transformer,lstm-fast,nn-lstm")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--block", type=int, default=200, help="steps per printed line")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    registry, task = load_registry([]), AddingProblem(seq_len=25)
    print(f"CPU: {cpu_name()}; torch {torch.__version__}, {args.threads} thread(s), lr {args.lr}")
    for name in args.models.split(","):
        torch.manual_seed(0)
        model, _ = build_model(registry.model(name), task.spec, budget=20000)
        steps = {"flushed": TrainStep(model, task.loss, Recipe(lr=args.lr))}
        steps["ieee"] = TrainStep(copy.deepcopy(model), task.loss, Recipe(lr=args.lr))
        gen = torch.Generator().manual_seed(0)
        times: dict[str, list[float]] = {k: [] for k in steps}
        for i in range(1, args.steps + 1):
            batch = task.sample(32, gen)
            losses = {}
            for mode, step in steps.items():
                set_flush_denormals(mode == "flushed")
                start = time.perf_counter()
                losses[mode] = step(batch, args.lr).loss
                times[mode].append(time.perf_counter() - start)
            if i % args.block == 0:
                ms = {k: statistics.median(v[-args.block :]) * 1e3 for k, v in times.items()}
                print(
                    f"{name:12s} steps {i - args.block + 1:4d}-{i:4d}: flushed {ms['flushed']:6.2f} ms, "
                    f"IEEE {ms['ieee']:6.2f} ms (x{ms['ieee'] / ms['flushed']:.2f}); loss "
                    f"{losses['flushed']:.4g} vs {losses['ieee']:.4g}"
                )
    set_flush_denormals(False)


if __name__ == "__main__":
    main()
