"""The one training/evaluation loop (`fit`), shared by every (task, model, seed).

The recipe (the same for every model: suite.jobs.Recipe): AdamW (β = 0.9, 0.99; weight decay on
matrices only), linear warm-up then cosine decay to min_lr_ratio·lr, gradient-norm clipping,
evaluation on the validation split every eval_every steps and at the end. The test split is scored
once, with the parameters of the best validation evaluation ("best-validation checkpoint rule").
One step (forward, loss, backward, clipping, AdamW) is suite.training_step.TrainStep, the function the
throughput jobs and the dry run's calibration time.

Divergence: a non-finite loss or gradient norm, or a running loss above divergence_factor times
its initial value, stops the run; it is recorded as status "diverged" with the step, and the
bench goes on.

Early stopping (`Stopper`, off unless the recipe asks): a run stops at the first evaluation whose
validation metric reaches the task's threshold ("solved", `until_solved`), or once `patience`
evaluations in a row have not improved on the best one by `min_improvement` of it ("plateau"). The
step (or seconds) budget stays the cap ("budget"). Records keep why (`stop_reason`) and where
(`steps_done`); the learning-rate schedule is always laid out over the cap, so a run that stops early
trained exactly as the first steps of the full-length run.
"""

from __future__ import annotations

import math
import time

import torch

from suite.interfaces import Batch, Task, split_seed
from suite.jobs import Recipe
from suite.measure.stability import GradientStats, LossWatch
from suite.records import FitResult
from suite.training_step import TrainStep


def lr_factor(done: float, step: int, cfg: Recipe) -> float:
    """Warm-up over cfg.warmup steps, then cosine from 1 to min_lr_ratio as the budget's fraction done goes
    0 -> 1."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, done)))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine


def to_device(batch: Batch, device, dtype) -> Batch:
    batch = batch.to(device)
    if batch.x.is_floating_point():
        batch.x = batch.x.to(dtype)
    if batch.y.is_floating_point():
        batch.y = batch.y.to(dtype)
    return batch


def predictor(model, device, dtype):
    def predict(x):
        x = x.to(device)
        return model(x.to(dtype) if x.is_floating_point() else x).float()

    return predict


def better(a: float, b: float | None, higher: bool) -> bool:
    return b is None or (a > b if higher else a < b)


def reached(value: float, threshold: float | None, higher: bool) -> bool:
    return (
        threshold is not None and value is not None and (value >= threshold if higher else value <= threshold)
    )


LEAVE = 0.1  # the share of the way from the baseline to the threshold that counts as having left it


class Stopper:
    """The early-stopping rule, fed one validation score per evaluation. `reason` is "solved" or
    "plateau" once the run should stop, None while it goes on.

    Patience counts the evaluations since the score last improved by min_improvement of the reference
    (the score at that last improvement), so a slow but steady learner whose gains add up is not cut
    off by a run of small steps. It counts only once the score has left the task's baseline (`floor`):
    gone a tenth of the way from the baseline to the threshold (LEAVE), or, where the threshold is the
    baseline itself (language modelling, forecasting), beaten it by min_improvement. Long-dependency
    tasks sit at the baseline for long stretches before they drop (measured here: associative recall
    T=32, an LSTM at chance for 2100 steps; adding T=100, 550-750 steps; copy memory, a Transformer 950
    steps), and such a wait is not convergence; the tenth keeps the evaluation noise at chance (±0.02 in
    accuracy) from counting as having left. A run that never leaves the baseline trains to its cap."""

    def __init__(self, cfg: Recipe, threshold: float | None, higher: bool, floor: float | None = None):
        self.cfg, self.threshold, self.higher, self.floor = cfg, threshold, higher, floor
        self.reference: float | None = None
        self.stale = 0
        self.reason: str | None = None

    def add(self, value: float) -> str | None:
        if math.isfinite(value) and (
            self.reference is None or better(value, self._bar(self.reference), self.higher)
        ):
            self.reference, self.stale = value, 0
        elif self._left_floor():
            self.stale += 1
        if self.cfg.until_solved and math.isfinite(value) and reached(value, self.threshold, self.higher):
            self.reason = "solved"
        elif self.cfg.patience and self.stale >= self.cfg.patience:
            self.reason = "plateau"
        return self.reason

    def _bar(self, score: float) -> float:
        """What an evaluation must beat to count as an improvement on `score`."""
        margin = self.cfg.min_improvement * abs(score)
        return score + margin if self.higher else score - margin

    def _left_floor(self) -> bool:
        if self.floor is None or not math.isfinite(self.floor):
            return True
        if self.reference is None:
            return False
        if self.threshold is None or not math.isfinite(self.threshold) or self.threshold == self.floor:
            return better(self.reference, self._bar(self.floor), self.higher)
        return better(self.reference, self.floor + LEAVE * (self.threshold - self.floor), self.higher)


@torch.no_grad()
def forecast_example(task: Task, model, device, dtype) -> dict:
    """The first test window, last predicted channel: lookback, truth, prediction (the report's plot)."""
    batch = next(iter(task.eval_batches("test", 1)))
    pred = predictor(model, device, dtype)(batch.x)
    targets = getattr(task, "targets", range(batch.x.shape[-1]))  # input channels predicted, in output order
    K = len(targets)
    return {
        "lookback": batch.x[0, :, targets[-1]].tolist(),
        "truth": batch.y[0].view(-1, K)[:, -1].tolist(),
        "prediction": pred[0].view(-1, K)[:, -1].cpu().tolist(),
    }


def fit(
    cfg: Recipe,
    seed: int,
    task: Task,
    model: torch.nn.Module,
    device: torch.device,
    dtype: torch.dtype,
    thresholds: dict[str, float | None],
    progress=None,
) -> FitResult:
    """Train `model` (built, initialised and prepared by the caller) on `task` under `cfg`.
    thresholds: the primary-metric value that counts as solved on "val" (time-to-threshold) and
    "test" (success), and the baseline's score ("floor": a plateau there is no plateau, see Stopper)."""
    train_step = TrainStep(model, task.loss, cfg)
    gen = torch.Generator().manual_seed(split_seed(seed, "train"))
    higher = task.higher_is_better
    metric = task.primary_metric
    grads, watch = GradientStats(cfg.clip), LossWatch(cfg.divergence_factor, cfg.spike_factor)
    curve, best, best_state = [], None, None
    stopper = Stopper(cfg, thresholds.get("val"), higher, thresholds.get("floor"))
    status, reason, diverged_step = "ok", None, None
    ttt_steps = ttt_seconds = ttt_tokens = None
    train_seconds, step, tokens = 0.0, 0, 0
    compile_seconds = None

    def evaluate(at_step):
        nonlocal best, best_state, ttt_steps, ttt_seconds, ttt_tokens
        model.eval()
        val = task.evaluate(predictor(model, device, dtype), "val", cfg.eval_batch_size, device)
        model.train()
        curve.append(
            {
                "step": at_step,
                "seconds": round(train_seconds, 4),
                "train_loss": watch.recent(),
                **{f"val_{k}": v for k, v in val.items()},
            }
        )
        if math.isfinite(val[metric]) and better(val[metric], best, higher):
            best, best_state = val[metric], {k: v.detach().clone() for k, v in model.state_dict().items()}
        if ttt_steps is None and reached(val[metric], thresholds.get("val"), higher):
            ttt_steps, ttt_seconds, ttt_tokens = at_step, train_seconds, tokens
        stopper.add(val[metric])

    model.train()
    while (
        step < cfg.steps and (cfg.seconds is None or train_seconds < cfg.seconds) and stopper.reason is None
    ):
        batch = to_device(task.train_batch(cfg.batch_size, gen), device, dtype)
        if step == 0:
            compile_seconds = train_step.warm_up(batch)  # a compiled step compiles before the clock
        start = time.perf_counter()  # the step only: making the batch is the task's cost, not the model's
        done = train_seconds / cfg.seconds if cfg.seconds else step / cfg.steps
        out = train_step.gradients(batch)  # forward, loss, backward, clipping
        loss_value, norm = out.loss, out.grad_norm
        reason = watch.check(loss_value) or (None if math.isfinite(norm) else "non-finite gradient norm")
        if reason:
            status, diverged_step = "diverged", step
            break
        grads.add(norm)
        train_step.update(cfg.lr * lr_factor(done, step, cfg))
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_seconds += time.perf_counter() - start
        tokens += batch.tokens
        step += 1
        if progress is not None:
            progress(step, cfg.steps, loss_value)
        if step % cfg.eval_every == 0:
            evaluate(step)
    if status == "ok" and (not curve or curve[-1]["step"] != step):
        evaluate(step)
    if status == "diverged":
        stop_reason = "diverged"
    elif stopper.reason is not None:
        stop_reason = stopper.reason
    else:
        stop_reason = "budget"

    test, test_by_group, example = None, None, None
    if best_state is not None:
        model.load_state_dict(best_state)
        model.eval()
        test, by_group = task.evaluate_by_group(
            predictor(model, device, dtype), "test", cfg.eval_batch_size, device
        )
        test_by_group = by_group or None  # e.g. per test length (Batch.group), for accuracy-vs-length plots
        if task.family == "forecasting":
            example = forecast_example(task, model, device, dtype)
    return FitResult(
        status=status,
        forecast_example=example,
        divergence_reason=reason,
        diverged_step=diverged_step,
        test=test,
        test_by_group=test_by_group,
        best_val=best,
        success=bool(
            test is not None and status == "ok" and reached(test[metric], thresholds.get("test"), higher)
        ),
        curve=curve,
        loss_curve=watch.curve(),
        grad_norm=grads.summary(),
        loss_spikes=watch.spikes,
        time_to_threshold_steps=ttt_steps,
        time_to_threshold_seconds=ttt_seconds,
        time_to_threshold_tokens=ttt_tokens,
        steps_done=step,
        stop_reason=stop_reason,
        train_seconds=train_seconds,
        train_tokens_per_s_in_loop=tokens / train_seconds if train_seconds else None,
        step_mode=train_step.label,
        step_compile_seconds=compile_seconds,
    )
