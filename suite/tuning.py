"""Learning rate tuned per (task config, model), the same way for every model.

Each tuned group trains the tuning seed (the experiment's first seed) once per grid point on the
training split; the learning rate whose run scored best on the *validation* split (best_val) is
chosen; then every seed runs at that learning rate and is scored on the test split. The tuning
seed's run at the chosen point is one of those seeds (same job, same key: it is not run twice).
Diverged or failed points count as worst. Every model gets the same grid, so the same tuning budget.

Jobs of a tuned group carry the grid and the tuning seed in `extra`, so the choice can be made again
from the records alone (`choices`): the run and the report use this one function.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, replace

from suite.jobs import Job


def group_key(fields: dict) -> str:
    """A tuned group's identity: every job setting except the seed and the learning rate."""
    rest = {k: v for k, v in fields.items() if k in Job.__dataclass_fields__ and k != "seed"}
    rest["recipe"] = {k: v for k, v in (rest.get("recipe") or {}).items() if k != "lr"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TunedGroup:
    template: Job  # seed and lr are filled in per job
    grid: tuple[float, ...]
    seeds: tuple[int, ...]

    @classmethod
    def of(cls, job: Job, grid: tuple[float, ...], seeds: list[int]) -> TunedGroup:
        extra = {**job.extra, "lr_grid": list(grid), "tune_seed": seeds[0]}
        return cls(
            replace(job, extra=extra, recipe={k: v for k, v in job.recipe.items() if k != "lr"}),
            grid,
            tuple(seeds),
        )

    @property
    def key(self) -> str:
        return group_key(asdict(self.template))

    def _at(self, seed: int, lr: float) -> Job:
        return replace(self.template, seed=seed, recipe={**self.template.recipe, "lr": lr})

    def tuning_jobs(self) -> list[Job]:
        return [self._at(self.seeds[0], lr) for lr in self.grid]

    def jobs(self, lr: float) -> list[Job]:
        return [self._at(seed, lr) for seed in self.seeds]


def _score(record: dict) -> float | None:
    value = record.get("best_val")
    ok = record.get("status") == "ok" and isinstance(value, (int, float)) and math.isfinite(value)
    return float(value) if ok and value is not None else None


def choose(records: list[dict]) -> dict:
    """The tuning seed's records of one group -> {"lr", "scores" {lr: best_val or None}, "seconds"}."""
    scores = {float(r["recipe"]["lr"]): _score(r) for r in records}
    higher = bool(records[0].get("higher_is_better"))
    finished = {lr: s for lr, s in scores.items() if s is not None}
    if finished:
        lr = (max if higher else min)(finished, key=lambda k: (finished[k], -k if higher else k))
    else:  # nothing trained: the smallest learning rate is the least likely to blow up
        lr = min(scores)
    seconds = sum(r.get("train_seconds") or 0.0 for r in records)
    return {"lr": lr, "scores": scores, "seconds": seconds, "points": len(records)}


def choices(records: list[dict]) -> dict[str, dict]:
    """Every tuned group's choice, from the training records of a results store."""
    groups: dict[str, list[dict]] = {}
    latest = {r.get("key"): r for r in records}  # a retried job replaces its failure
    for r in latest.values():
        extra = r.get("extra") or {}
        if r.get("kind") == "train" and "lr_grid" in extra and r.get("seed") == extra.get("tune_seed"):
            groups.setdefault(group_key(r), []).append(r)
    return {key: choose(rs) for key, rs in groups.items()}
