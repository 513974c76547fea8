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
form; on the CPU the parameters and their gradients are views of two buffers (FlatBuffers), so that
clearing, clipping and the update are an op or two each instead of one per tensor. A compiled run, or
one with the tensors apart, gives the eager run's metrics within float summation order
(tests/test_training_step.py checks both).

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
AdamW where it has no fused kernel) see. Gradients are cleared and clipped by this module's own code:
the optimizer's zero_grad and the library's clip_grad_norm_ spent more on hooks and grouping than on the
arithmetic (5% of a T=25 step), and over the flat buffers what was left of clearing, clipping and the
update took another 3% (0.32 -> 0.16 ms of 3.6 ms at T=25, one thread: small ops run 3-5x slower right
after a backward than in a micro-benchmark, their code and data evicted by the kernels'). A run also
flushes denormal floats on every compute thread (suite.models.float_env.set_flush_denormals): at high
learning rates they made a step up to 3.5x slower.
Horizontal fusion (several runs stacked into one model) is not done: the kernels' cost grows with every
stacked run, and only the per-op dispatch and the optimizer's Python, about two fifths of a T=25 step at
one thread, would be shared.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
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
        self.flat = FlatBuffers.take_over(self.opt, self.params)  # None where the parameters stay apart
        self.adamw_inputs: list[tuple] | None = None
        self.forward = model if self.mode == "eager" else _compiled(model)
        self.compile_seconds: float | None = None
        self.fallback = ""  # why a compiled step runs eager

    @property
    def label(self) -> str:
        """What ran, for records and captions: the step mode and the optimizer kernel."""
        why = f" ({self.fallback})" if self.fallback else ""
        flat = ", flat buffers" if self.flat else ""
        return f"{self.mode}{why}, AdamW {optimizer_kind(self.opt)}{flat}"

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
        if self.flat:
            self.flat.zero_grad()
        else:
            for p in self.params:  # the optimizer's zero_grad(set_to_none=True), without its profiler hooks
                p.grad = None
        loss.backward()
        norm = clip_grad_norm(self.flat.whole if self.flat else self.params, self.cfg.clip)
        return StepOutcome(loss.item(), float(norm))

    def update(self, lr: float) -> None:
        """The AdamW update at this step's learning rate."""
        for group in self.opt.param_groups:
            group["lr"] = lr
        inputs = self.adamw_inputs or fused_adamw_inputs(self.opt)
        if self.flat:  # the flat groups' tensors stay the same once the state exists: gathered once
            self.adamw_inputs = inputs
        if inputs is None:
            self.opt.step()
        else:
            fused_adamw_step(self.opt, inputs)

    def __call__(self, batch: Batch, lr: float) -> StepOutcome:
        out = self.gradients(batch)
        self.update(lr)
        return out


class FlatBuffers:
    """The parameters as views of one buffer, their gradients as views of another, and the optimizer
    stepping one tensor per parameter group (a slice of the buffer) instead of one per parameter.

    Why: at the suite's sizes the per-tensor work around the arithmetic dominates clipping and the update
    (a d_model-28 Transformer has 15 tensors of 20k values in all: clearing, the norms, the scaling and
    the step counts' increments were 15 small ops each, 0.32 ms of a 3.7 ms T=25 step at one thread).
    Over the buffers each of those is one op. The arithmetic is the same element by element: AdamW is
    elementwise, and the clipping's norm is the 2-norm of the same values summed in another order.
    Gradients are cleared by zeroing (autograd then adds into the views) instead of set to None, so a
    parameter that gets no gradient in a step is updated with a zero gradient (momentum and decay), as
    zero_grad(set_to_none=False) would have it.

    Taken only where it cannot change what the optimizer does: before its first step, every parameter
    dense, contiguous, not a view, on the CPU, of one dtype, and in one of the optimizer's groups."""

    def __init__(
        self, whole: torch.Tensor, grad: torch.Tensor, params: list[torch.Tensor], views: list[torch.Tensor]
    ):
        self.whole = [whole]  # clip_grad_norm's list: one tensor whose .grad (grad) is every gradient
        self.grad, self.params, self.views = grad, params, views
        self.pointers = [p.data_ptr() for p in params]

    @classmethod
    def take_over(cls, opt: torch.optim.Optimizer, params: Sequence[torch.Tensor]) -> FlatBuffers | None:
        grouped = [p for g in opt.param_groups for p in g["params"]]
        if opt.state or {id(p) for p in grouped} != {id(p) for p in params} or len(grouped) != len(params):
            return None
        if not params or any(
            p.device.type != "cpu"
            or p.dtype != params[0].dtype
            or p.is_sparse
            or not p.is_contiguous()
            or p._base is not None
            for p in params
        ):
            return None
        n = sum(p.numel() for p in grouped)
        whole = torch.empty(n, dtype=params[0].dtype)
        whole.grad = grad = torch.zeros_like(whole)
        views, offset = [], 0
        with torch.no_grad():
            for group in opt.param_groups:
                size = sum(p.numel() for p in group["params"])
                flat = whole[offset : offset + size]  # this group's one tensor, its gradient a view too
                flat.grad = grad[offset : offset + size]
                for p in group["params"]:
                    here = slice(offset, offset + p.numel())
                    whole[here].copy_(p.view(-1))
                    p.data = whole[here].view_as(p)
                    views.append(grad[here].view_as(p))
                    offset += p.numel()
                group["params"] = [flat]
        return cls(whole, grad, grouped, views)

    def zero_grad(self) -> None:
        """Zero the gradient buffer and point every parameter's .grad at its view again (a caller may have
        set them to None); a parameter whose tensor was replaced since is an error, not a silent no-op."""
        self.grad.zero_()
        for p, view, pointer in zip(self.params, self.views, self.pointers):
            if p.data_ptr() != pointer:
                raise RuntimeError(
                    "a parameter's tensor was replaced after its TrainStep was built: build another"
                )
            p.grad = view


def fused_adamw_inputs(opt: torch.optim.Optimizer) -> list[tuple] | None:
    """What fused_adamw_step hands the kernels, per parameter group: (group, parameters, gradients, exp_avg,
    exp_avg_sq, step counts); None where the optimizer's own step must run: not the fused AdamW, its first
    step (no state yet), a parameter without a gradient, mixed devices or dtypes in a group, AMSGrad,
    maximize, a gradient scaler."""
    if type(opt) is not torch.optim.AdamW or not opt.defaults.get("fused") or hasattr(opt, "grad_scale"):
        return None
    inputs = []
    for group in opt.param_groups:
        if group["amsgrad"] or group["maximize"] or group["capturable"] or group["differentiable"]:
            return None
        params = group["params"]
        grads = [p.grad for p in params]
        states: list[dict] = [opt.state.get(p) or {} for p in params]
        if any(g is None for g in grads) or not all(states) or len({(p.device, p.dtype) for p in params}) > 1:
            return None
        moments = [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]
        inputs.append((group, params, grads, *moments, [s["step"] for s in states]))
    return inputs


def fused_adamw_step(opt: torch.optim.Optimizer, inputs: list[tuple] | None = None) -> bool:
    """torch.optim.AdamW(fused=True).step(), bit for bit: per parameter group, its two kernels (the step
    counts' increment, then the fused update) called directly, on `inputs` (fused_adamw_inputs(opt) unless
    given: TrainStep keeps the flat groups' once gathered). Why: the optimizer's Python around them (hooks,
    gathering each group's state, grouping by device and dtype) cost 2-7% of a d_model-28 Transformer's
    T=25 step at one thread (interleaved A/B). Returns False, having done nothing, where the optimizer's own
    step must run (fused_adamw_inputs). tests/test_training_step.py checks the equality with the optimizer's
    step."""
    inputs = inputs or fused_adamw_inputs(opt)
    if inputs is None:
        return False
    with torch.no_grad():  # as the optimizer's step: in-place updates of leaves that require grad
        for group, params, grads, exp_avgs, exp_avg_sqs, steps in inputs:
            torch._foreach_add_(steps, 1)
            beta1, beta2 = group["betas"]
            torch._fused_adamw_(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
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


def clip_grad_norm(params: Sequence[torch.Tensor], max_norm: float) -> torch.Tensor:
    """torch.nn.utils.clip_grad_norm_ (the 2-norm of all gradients; each gradient scaled by min(1, max_norm /
    (norm + 1e-6))): bit for bit in three foreach ops where every gradient has one device and dtype; for one
    CPU tensor (FlatBuffers' gradient buffer) its norm and, only where it clips, one multiply, the factor
    computed in double (within float rounding of the library's); the library's function otherwise. Why: its
    grouping by device and dtype and its checks took more than the arithmetic at our sizes (with clearing
    the gradients through the optimizer, 5% of a d_model-28 Transformer's T=25 step;
    tests/test_training_step.py checks the equality)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads or len({(g.device, g.dtype) for g in grads}) > 1 or any(g.is_sparse for g in grads):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    if len(grads) == 1 and grads[0].device.type == "cpu":  # one buffer (FlatBuffers): the norm, then a
        norm = torch.linalg.vector_norm(grads[0])  # multiply only where it clips (the factor in double)
        factor = max_norm / (float(norm) + 1e-6)
        if not factor >= 1.0:  # NaN too, as the library (the divergence check stops the run)
            grads[0].mul_(factor)
        return norm
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
