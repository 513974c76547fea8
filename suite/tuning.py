"""Learning rate tuned per (task config, model), the same way for every model.

Each tuned group trains the tuning seed (the experiment's first seed) once per grid point on the
training split; the learning rate whose run scored best on the *validation* split (best_val) is
chosen; then every seed runs at that learning rate and is scored on the test split. Where the recipe
stops runs once they are solved (`until_solved`), solved runs all end near the threshold and their
scores say little: the point that reached the threshold in the fewest steps is chosen instead. The tuning
seed's run at the chosen point is one of those seeds (same job, same key: it is not run twice).
Diverged or failed points count as worst. Every model gets the same grid, so the same tuning budget.

A grid whose best point is at one of its ends may have the optimum beyond it: the grid is then
extended by one point in that direction (the grid's outer ratio again), up to `extend` points per
direction, before the seeds run (`TunedGroup.next_point`). Extension points are tuning points of the
same group, so `choose` sees them like the others.

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
    extend: int = 0  # points the grid may grow by in each direction while its best point is at an end

    @classmethod
    def of(cls, job: Job, grid: tuple[float, ...], seeds: list[int], extend: int = 0) -> TunedGroup:
        extra = {**job.extra, "lr_grid": list(grid), "tune_seed": seeds[0]}
        return cls(
            replace(job, extra=extra, recipe={k: v for k, v in job.recipe.items() if k != "lr"}),
            grid,
            tuple(seeds),
            extend,
        )

    @property
    def key(self) -> str:
        return group_key(asdict(self.template))

    def _at(self, seed: int, lr: float) -> Job:
        return replace(self.template, seed=seed, recipe={**self.template.recipe, "lr": lr})

    def tuning_jobs(self) -> list[Job]:
        return [self._at(self.seeds[0], lr) for lr in self.grid]

    def point(self, lr: float) -> Job:
        """The tuning seed's run at `lr` (a grid or extension point)."""
        return self._at(self.seeds[0], lr)

    def jobs(self, lr: float) -> list[Job]:
        return [self._at(seed, lr) for seed in self.seeds]

    def next_point(self, tried: list[float], chosen: float) -> float | None:
        """The learning rate to try next when `chosen` is at an end of the points tried so far and that
        direction has room left; None when the choice stands."""
        points = sorted(tried)
        if len(points) < 2 or chosen not in (points[0], points[-1]):
            return None
        up = chosen == points[-1]
        grown = sum(lr > self.grid[-1] for lr in points) if up else sum(lr < self.grid[0] for lr in points)
        if grown >= self.extend:
            return None
        ratio = points[-1] / points[-2] if up else points[0] / points[1]
        return float(f"{chosen * ratio:.3g}")  # 3 digits: a readable rate, and a stable job key


def _score(record: dict) -> float | None:
    value = record.get("best_val")
    ok = record.get("status") == "ok" and isinstance(value, (int, float)) and math.isfinite(value)
    return float(value) if ok and value is not None else None


def edge(choice: dict, grid: list[float]) -> str:
    """Where a group's choice sits: "inside" its grid, "extended" (beyond the grid, at a point an
    extension added and bettered), or "at the edge" (an end of every point tried: the optimum may lie
    beyond what was tried)."""
    tried = sorted(choice["scores"])
    if len(tried) > 1 and choice["lr"] in (tried[0], tried[-1]):
        return "at the edge"
    return "extended" if not grid or not grid[0] <= choice["lr"] <= grid[-1] else "inside"


def _steps_to_solve(record: dict) -> int | None:
    """Steps to the validation threshold of a finished run whose recipe stops once solved, else None."""
    steps = record.get("time_to_threshold_steps")
    stops = bool((record.get("recipe") or {}).get("until_solved"))
    if not isinstance(steps, (int, float)) or not math.isfinite(steps):  # a pandas row holds NaN for None
        return None
    return int(steps) if stops and record.get("status") == "ok" else None


def choose(records: list[dict]) -> dict:
    """The tuning seed's records of one group -> {"lr", "scores" {lr: best_val or None}, "seconds"}:
    the fewest steps to solve where runs stop once solved and any did, else the best validation score."""
    scores = {float(r["recipe"]["lr"]): _score(r) for r in records}
    higher = bool(records[0].get("higher_is_better"))
    finished = {lr: s for lr, s in scores.items() if s is not None}
    solved = {float(r["recipe"]["lr"]): s for r in records if (s := _steps_to_solve(r)) is not None}
    if solved:
        rank = {k: -v if higher else v for k, v in finished.items()}
        lr = min(solved, key=lambda k: (solved[k], rank.get(k, math.inf), k))
    elif finished:
        lr = (max if higher else min)(finished, key=lambda k: (finished[k], -k if higher else k))
    else:  # nothing trained: the smallest learning rate is the least likely to blow up
        lr = min(scores)
    seconds = sum(r.get("train_seconds") or 0.0 for r in records)
    return {"lr": lr, "scores": scores, "solved_steps": solved, "seconds": seconds, "points": len(records)}


def choices(records: list[dict]) -> dict[str, dict]:
    """Every tuned group's choice, from the training records of a results store."""
    groups: dict[str, list[dict]] = {}
    latest = {r.get("key"): r for r in records}  # a retried job replaces its failure
    for r in latest.values():
        extra = r.get("extra") or {}
        if r.get("kind") == "train" and "lr_grid" in extra and r.get("seed") == extra.get("tune_seed"):
            groups.setdefault(group_key(r), []).append(r)
    return {key: choose(rs) for key, rs in groups.items()}
