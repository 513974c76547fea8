"""One training step, written once: forward, loss, backward, gradient-norm clipping, the AdamW update.

harness.fit trains with it; the dry run's calibration (suite/estimate.py) and the throughput jobs
(suite/measure/throughput.py) time it. So what is timed is what trains, clipping and fused optimizer
included.

    step = TrainStep(model, task.loss, cfg)     # the recipe's AdamW (suite.jobs.Recipe)
    out = step.gradients(batch)                 # forward, loss, backward, clipping -> loss, gradient norm
    ...                                         # the divergence check reads out.loss and out.grad_norm
    step.update(lr)                             # the optimizer step at this step's learning rate
    step(batch, lr)                             # both at once (what the timers time)

How a step runs (`step_mode`, recorded with every training run; Recipe.step_mode asks for one):
  eager     the model's own modules, op by op (the default).
  compiled  the model under torch.compile (Inductor). Dynamo's cache is shared by every model of the
            same class, configuration and input shapes in a process, so the seeds and learning-rate points
            of a tuned group compile once; the compile happens before the clock, on a copy of the model
            (`step_compile_seconds`), and evaluation runs the eager module on the same weights.
Either way the optimizer is AdamW's fused kernel where torch has one for the parameters' device and
dtype (CPU and CUDA floats), called directly after the first step (fused_adamw_step), else its foreach
form. A compiled run gives the eager run's metrics within float summation order
(tests/test_training_step.py checks it).

Why eager is the default (measured at 1 thread, CPU time, on an Intel Xeon with AVX-512, the profiles'
parameter budgets): compiling cut a d_model-28 Transformer's step by 9-18% (T = 64-120), hf-gpt2's by
0-20%, and made lstm-fast's 10% slower (its C++ op breaks the graph), for 30-60 s of compile per process
and shape (5-25 s from a warm Inductor cache): it does not pay back in a 200-2,000-step run. What a small
Transformer's step spent its time on was per-head attention (SDPA's flash kernel at d_head 7: a third of
the step at T=64, more beyond; bmm + softmax formulations were slower), LayerNorm's backward, GELU and
small GEMMs: our Transformer now runs its own kernels for those on the CPU
(suite/models/transformer_fast.py; T=100, B=32, 2 threads: 13.2 -> 5.6 ms a step against 964c9af, back to
back, with their projections on the library's GEMM and the ops as C++ autograd nodes), and each half of
a block holds its weights in two tensors, which halved what this step's per-tensor loops (clipping, and
AdamW where it has no fused kernel) see. Gradients are cleared by setting them to None and clipped by
clip_grad_norm below: the optimizer's zero_grad and the library's clip_grad_norm_ spent more on hooks and
grouping than on the arithmetic (5% of a T=25 step). A run also flushes denormal floats on every compute
thread (suite.models.float_env.set_flush_denormals): at high learning rates they made a step up to 3.5x
slower.
Horizontal fusion (several runs stacked into one model) is not done: the kernels' cost grows with every
stacked run, and only the per-op dispatch and the optimizer's Python, about two fifths of a T=25 step at
one thread, would be shared.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch

from suite.errors import one_line
from suite.interfaces import Batch
from suite.jobs import Recipe

STEP_MODES = ("eager", "compiled")


def adamw(params: list[torch.nn.Parameter], cfg: Recipe) -> torch.optim.AdamW:
    """The recipe's AdamW (β = 0.9, 0.99): weight decay on matrices only (biases, norms and peepholes do not
    decay); the fused kernel where torch has one, else foreach (one kernel per op over every tensor)."""
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    try:
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99), fused=True)
    except RuntimeError:  # no fused kernel for this device or dtype
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99), foreach=True)


def optimizer_kind(opt: torch.optim.Optimizer) -> str:
    defaults = opt.defaults
    return "fused" if defaults.get("fused") else "foreach" if defaults.get("foreach") else "for-loop"


@dataclass
class StepOutcome:
    loss: float  # the batch's training loss (before the update)
    grad_norm: float  # the gradient norm before clipping


class TrainStep:
    """forward -> loss -> backward -> clip -> AdamW, on one model, with the recipe's optimizer state."""

    def __init__(self, model: torch.nn.Module, loss_fn, cfg: Recipe, mode: str | None = None):
        self.model, self.loss_fn, self.cfg = model, loss_fn, cfg
        self.mode = mode or cfg.step_mode
        if self.mode not in STEP_MODES:
            raise ValueError(f"step mode must be eager or compiled, got {self.mode!r}")
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.opt = adamw(self.params, cfg)
        self.forward = model if self.mode == "eager" else _compiled(model)
        self.compile_seconds: float | None = None
        self.fallback = ""  # why a compiled step runs eager

    @property
    def label(self) -> str:
        """What ran, for records and captions: the step mode and the optimizer kernel."""
        why = f" ({self.fallback})" if self.fallback else ""
        return f"{self.mode}{why}, AdamW {optimizer_kind(self.opt)}"

    def warm_up(self, batch: Batch) -> float | None:
        """Compile before any clock starts, on a copy of the model (its weights, buffers and the RNG
        stream untouched): returns the seconds spent, None in eager mode."""
        if self.mode == "eager" or self.compile_seconds is not None:
            return self.compile_seconds
        start = time.perf_counter()
        twin = copy.deepcopy(self.model)
        try:
            with torch.random.fork_rng(devices=[]):
                self.loss_fn(_compiled(twin)(batch.x), batch).backward()
        except Exception as exc:  # a model torch.compile cannot take: the run goes on eager, and says why
            self.mode, self.forward = "eager", self.model
            self.fallback = f"compile failed: {type(exc).__name__}: {one_line(exc)[:120]}"
        self.compile_seconds = time.perf_counter() - start
        return self.compile_seconds

    def gradients(self, batch: Batch) -> StepOutcome:
        """Forward, loss, backward and gradient-norm clipping: the divergence check's inputs."""
        loss = self.loss_fn(self.forward(batch.x), batch)
        for p in self.params:  # the optimizer's zero_grad(set_to_none=True), without its profiler hooks
            p.grad = None
        loss.backward()
        norm = clip_grad_norm(self.params, self.cfg.clip)
        return StepOutcome(loss.item(), float(norm))

    def update(self, lr: float) -> None:
        """The AdamW update at this step's learning rate."""
        for group in self.opt.param_groups:
            group["lr"] = lr
        if not fused_adamw_step(self.opt):
            self.opt.step()

    def __call__(self, batch: Batch, lr: float) -> StepOutcome:
        out = self.gradients(batch)
        self.update(lr)
        return out


def fused_adamw_step(opt: torch.optim.Optimizer) -> bool:
    """torch.optim.AdamW(fused=True).step(), bit for bit: per parameter group, its two kernels (the step
    counts' increment, then the fused update) called directly. Why: the optimizer's Python around them
    (hooks, gathering each group's state, grouping by device and dtype) cost 2-7% of a d_model-28
    Transformer's T=25 step at one thread (interleaved A/B). Returns False, having done nothing, where the
    optimizer's own step must run: not the fused AdamW, its first step (no state yet), a parameter without a
    gradient, mixed devices or dtypes in a group, AMSGrad, maximize, a gradient scaler.
    tests/test_training_step.py checks the equality with the optimizer's step."""
    if type(opt) is not torch.optim.AdamW or not opt.defaults.get("fused") or hasattr(opt, "grad_scale"):
        return False
    ready = []
    for group in opt.param_groups:
        if group["amsgrad"] or group["maximize"] or group["capturable"] or group["differentiable"]:
            return False
        params = group["params"]
        grads = [p.grad for p in params]
        states: list[dict] = [opt.state.get(p) or {} for p in params]
        if any(g is None for g in grads) or not all(states) or len({(p.device, p.dtype) for p in params}) > 1:
            return False
        ready.append((group, params, grads, states))
    with torch.no_grad():  # as the optimizer's step: in-place updates of leaves that require grad
        for group, params, grads, states in ready:
            steps = [s["step"] for s in states]
            torch._foreach_add_(steps, 1)
            beta1, beta2 = group["betas"]
            torch._fused_adamw_(
                params,
                grads,
                [s["exp_avg"] for s in states],
                [s["exp_avg_sq"] for s in states],
                [],
                steps,
                amsgrad=False,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                maximize=False,
                grad_scale=None,
                found_inf=None,
            )
    return True


def clip_grad_norm(params: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """torch.nn.utils.clip_grad_norm_ (the 2-norm of all gradients; each gradient scaled by min(1, max_norm /
    (norm + 1e-6))), bit for bit, in three foreach ops where every gradient has one device and dtype; the
    library's function otherwise. Why: its grouping by device and dtype and its checks took more than the
    arithmetic at our sizes (with clearing the gradients through the optimizer, 5% of a d_model-28
    Transformer's T=25 step; tests/test_training_step.py checks the equality)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads or len({(g.device, g.dtype) for g in grads}) > 1 or any(g.is_sparse for g in grads):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    torch._foreach_mul_(grads, torch.clamp(max_norm / (norm + 1e-6), max=1.0))
    return norm


def _compiled(model: torch.nn.Module):
    """torch.compile of the module: a new instance of the same class, configuration and shapes reuses the
    compiled code (dynamo guards on them, not on the instance), so only the first of a group compiles."""
    import torch._dynamo

    # one process runs many task configurations: keep each one's graphs instead of falling back to eager
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    return torch.compile(model)
