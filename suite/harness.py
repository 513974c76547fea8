"""The one training/evaluation loop (`fit`), shared by every (task, model, seed).

The recipe (the same for every model: suite.jobs.Recipe): AdamW (β = 0.9, 0.99; weight decay on
matrices only), linear warm-up then cosine decay to min_lr_ratio·lr, gradient-norm clipping,
evaluation on the validation split every eval_every steps and at the end. The test split is scored
once, with the parameters of the best validation evaluation ("best-validation checkpoint rule").

Divergence: a non-finite loss or gradient norm, or a running loss above divergence_factor times
its initial value, stops the run; it is recorded as status "diverged" with the step, and the
bench goes on.
"""

from __future__ import annotations

import copy
import math
import time

import torch

from suite.interfaces import Batch, Task, split_seed
from suite.jobs import Recipe
from suite.measure.stability import GradientStats, LossWatch
from suite.records import FitResult


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
    "test" (success)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},  # matrices decay;
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]  # biases, norms, peepholes do not
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(split_seed(seed, "train"))
    higher = task.higher_is_better
    metric = task.primary_metric
    grads, watch = GradientStats(cfg.clip), LossWatch(cfg.divergence_factor, cfg.spike_factor)
    curve, best, best_state = [], None, None
    status, reason, diverged_step = "ok", None, None
    ttt_steps = ttt_seconds = ttt_tokens = None
    train_seconds, step, tokens = 0.0, 0, 0

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
            best, best_state = val[metric], copy.deepcopy(model.state_dict())
        if ttt_steps is None and reached(val[metric], thresholds.get("val"), higher):
            ttt_steps, ttt_seconds, ttt_tokens = at_step, train_seconds, tokens

    model.train()
    while step < cfg.steps and (cfg.seconds is None or train_seconds < cfg.seconds):
        batch = to_device(task.train_batch(cfg.batch_size, gen), device, dtype)
        start = time.perf_counter()  # the step only: making the batch is the task's cost, not the model's
        done = train_seconds / cfg.seconds if cfg.seconds else step / cfg.steps
        for group in opt.param_groups:
            group["lr"] = cfg.lr * lr_factor(done, step, cfg)
        loss = task.loss(model(batch.x), batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.clip))
        loss_value = loss.item()
        reason = watch.check(loss_value) or (None if math.isfinite(norm) else "non-finite gradient norm")
        if reason:
            status, diverged_step = "diverged", step
            break
        grads.add(norm)
        opt.step()
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
        train_seconds=train_seconds,
        train_tokens_per_s_in_loop=tokens / train_seconds if train_seconds else None,
    )
