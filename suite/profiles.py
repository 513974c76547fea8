"""Profiles: named configs in TOML files (suite/profiles/*.toml; copy one, edit it, and pass its
path to --profile). A profile holds experiments; each experiment states its role (suite.jobs.ROLES)
and crosses tasks x models x seeds (lists inside task params or train settings are sweep axes). A
[tune] table (lr = [...]) tunes the learning rate per (task config, model), the same grid for every
model (see suite/tuning.py); an experiment may set `tune = false` or its own grid. A [measure]
table asks for throughput, latency and sequence-length scaling jobs.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

from suite.errors import ConfigError
from suite.jobs import ROLES, Job, Recipe, sweep
from suite.registry import Registry
from suite.tuning import TunedGroup, choose

PROFILE_DIR = Path(__file__).parent / "profiles"
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("float32", "float64", "bfloat16")


@dataclass
class Profile:
    name: str
    path: Path
    data: dict

    @property
    def description(self) -> str:
        return self.data.get("description", "")


def available_profiles() -> dict[str, Path]:
    return {p.stem: p for p in sorted(PROFILE_DIR.glob("*.toml"))}


def load_profile(name_or_path: str) -> Profile:
    path = Path(name_or_path)
    if not (path.suffix == ".toml" and path.exists()):
        known = available_profiles()
        if name_or_path not in known:
            raise ConfigError(
                f"unknown profile {name_or_path!r}; known profiles: {', '.join(known)} (or the path of a "
                ".toml file)"
            )
        path = known[name_or_path]
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"profile {path} is not valid TOML: {exc}") from None
    return Profile(path.stem, path, data)


def resolve_seeds(value) -> list[int]:
    if isinstance(value, str):
        try:
            parts = [int(p) for p in value.split(",") if p.strip()]
        except ValueError:
            raise ConfigError(f"--seeds takes a count (3) or a list (0,1,2), got {value!r}") from None
        value = parts[0] if len(parts) == 1 else parts
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ConfigError(f"seeds must be a positive count, got {value}")
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and s >= 0 for s in value):
        return list(value)
    raise ConfigError(f"seeds must be a count or a list of non-negative integers, got {value!r}")


@dataclass
class Plan:
    """What a profile asks for: jobs whose settings are known now (LR-tuning points included), and
    groups whose seeds run at the learning rate the tuning chooses on the validation split."""

    jobs: list[Job]
    tuned: list[TunedGroup]

    def tuning_jobs(self) -> list[Job]:
        return [job for group in self.tuned for job in group.tuning_jobs()]

    def first_phase(self) -> list[Job]:
        return self.tuning_jobs() + self.jobs

    def follow_ups(self, settled: dict[str, dict]) -> list[Job]:
        """What can run now that these records are in (settled: key -> record): for every tuned group
        whose tuning points all have a record, either one more point beyond an end of its grid (its best
        point is at that end and the grid may still grow: TunedGroup.next_point) or its seeds, at the
        learning rate its validation scores chose. The tuning seed's run at that rate is one of its
        tuning points: same job, same key, not run twice."""
        jobs = []
        for i, (group, grid) in enumerate(self._points):
            points = dict(grid)
            while all(key in settled for key in points.values()):
                lr = choose([settled[key] for key in points.values()])["lr"]
                more = group.next_point(list(points), lr)
                if more is None:
                    if (i, lr) not in self._seeds:  # the same Job objects each call: keys hashed once
                        self._seeds[i, lr] = group.jobs(lr)
                    jobs += self._seeds[i, lr]
                    break
                points[more] = group.point(more).key
                if points[more] not in settled:
                    jobs.append(group.point(more))
        return jobs

    @cached_property
    def _points(self) -> list[tuple[TunedGroup, dict[float, str]]]:
        """Each group's grid points: learning rate -> job key (hashed once)."""
        return [
            (group, {float(job.recipe["lr"]): job.key for job in group.tuning_jobs()}) for group in self.tuned
        ]

    @cached_property
    def _seeds(self) -> dict:
        return {}


def expand(
    profile: Profile, registry: Registry, *, seeds=None, tasks=None, models=None, experiments=None
) -> Plan:
    """Profile -> validated plan of jobs. Raises ConfigError before anything runs."""
    data = profile.data
    base_recipe = data.get("train", {})  # the TOML key stays `train`
    base_tune = _grid(data.get("tune"), "[tune]")
    extend = _extend(data.get("tune"))
    seed_list = resolve_seeds(seeds if seeds is not None else data.get("seeds", 1))
    wanted_tasks = _names(tasks, registry.task)
    wanted_models = _names(models, registry.model)
    jobs: list[Job] = []
    tuned: list[TunedGroup] = []
    for exp in data.get("experiment", []):
        exp_name = exp.get("name") or "main"
        role = _role(exp, exp_name)
        if experiments and exp_name not in experiments:
            continue
        exp_seeds = resolve_seeds(exp["seeds"]) if "seeds" in exp and seeds is None else seed_list
        grid = _experiment_grid(exp, role, base_tune)
        for model in exp.get("models", []):
            registry.model(model)
        for task_entry in exp.get("task", []):
            task_name = task_entry.get("name")
            cls = registry.task(task_name)
            recipe_values = {**base_recipe, **exp.get("train", {}), **task_entry.get("train", {})}
            budget = int(task_entry.get("param_budget", exp.get("param_budget", 0)))
            models_here = [
                m
                for m in exp.get("models", [])
                if not (
                    (wanted_tasks and task_name not in wanted_tasks)
                    or (wanted_models and m not in wanted_models)
                )
            ]
            for params in sweep(task_entry.get("params", {})):
                for recipe in sweep(recipe_values):
                    cfg = Recipe.from_dict(recipe)
                    lr_is_axis = isinstance(recipe_values.get("lr"), list)
                    for model in models_here:
                        job = Job(
                            kind="train",
                            experiment=exp_name,
                            task=cls.name,
                            model=model,
                            seed=exp_seeds[0],
                            task_params=params,
                            model_options=exp.get("model_options", {}).get(model, {}),
                            param_budget=budget,
                            layers=exp.get("layers"),
                            recipe=recipe,
                            width=exp.get("width"),
                            role=role,
                        )
                        if grid and not lr_is_axis:
                            tuned.append(TunedGroup.of(job, grid, exp_seeds, extend))
                        else:
                            jobs += [replace(job, seed=seed) for seed in exp_seeds]
                    if task_entry.get("measure_throughput", exp.get("measure_throughput", False)):
                        jobs += [
                            Job(
                                kind="throughput",
                                experiment=exp_name,
                                task=cls.name,
                                model=model,
                                seed=0,
                                task_params=params,
                                model_options=exp.get("model_options", {}).get(model, {}),
                                param_budget=budget,
                                layers=exp.get("layers"),
                                recipe={"batch_size": cfg.batch_size},
                                role="throughput",
                            )
                            for model in models_here
                        ]
    jobs += _measure_jobs(data.get("measure", {}), registry, wanted_models, experiments)
    if not jobs and not tuned:
        raise ConfigError(
            f"profile {profile.name!r} with these filters selects no job; check --task/--model/--experiment"
        )
    return Plan(jobs, tuned)


def _role(exp: dict, name: str) -> str:
    role = exp.get("role", "main")
    if role not in ROLES:
        raise ConfigError(f"experiment {name!r}: unknown role {role!r}; use one of {', '.join(ROLES)}")
    return role


def _grid(value, where: str) -> tuple[float, ...] | None:
    """A tuning grid: {lr = [..]} with positive numbers, or false/absent for none."""
    if value is None or value is False:
        return None
    lrs = value.get("lr") if isinstance(value, dict) else None
    if not (
        isinstance(lrs, list)
        and lrs
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in lrs)
    ):
        raise ConfigError(f"{where}: tune takes lr = [a list of positive learning rates], got {value!r}")
    return tuple(sorted(float(v) for v in lrs))


def _extend(value) -> int:
    """[tune] extend = N: points a grid may grow by in each direction while its best point is at an end."""
    n = value.get("extend", 0) if isinstance(value, dict) else 0
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= 5:
        raise ConfigError(f"[tune]: extend takes a whole number of grid points from 0 to 5, got {n!r}")
    return n


def _experiment_grid(exp: dict, role: str, base: tuple[float, ...] | None) -> tuple[float, ...] | None:
    if role == "lr-sweep":  # the learning rate is that experiment's axis
        return None
    return _grid(exp["tune"], f"experiment {exp.get('name')!r}") if "tune" in exp else base


def _measure_jobs(measure: dict, registry: Registry, wanted_models, experiments) -> list[Job]:
    """[measure.scaling] and [measure.latency]: experiments named "scaling" and "latency" for --experiment."""
    jobs = []
    for kind, axis in (("scaling", "seq_lens"), ("latency", "contexts")):
        table = measure.get(kind)
        if not table or (experiments and kind not in experiments):
            continue
        for model in table.get("models", []):
            registry.model(model)
            if wanted_models and model not in wanted_models:
                continue
            for point in table.get(axis, []):
                if not isinstance(point, int) or point < 1:
                    raise ConfigError(f"[measure.{kind}] {axis} must be positive integers, got {point!r}")
                jobs.append(
                    Job(
                        kind=kind,
                        experiment=kind,
                        task="synthetic",
                        model=model,
                        seed=0,
                        param_budget=int(table.get("param_budget", 100_000)),
                        recipe={"batch_size": int(table.get("batch_size", 8))},
                        extra={axis[:-1]: point},
                        role=kind,
                    )
                )
    return jobs


def _names(value, check) -> set[str] | None:
    if not value:
        return None
    names = {n.strip() for item in value for n in item.split(",") if n.strip()}
    for n in names:
        check(n)
    return names


def check_device(device: str) -> str:
    if device not in DEVICES:
        raise ConfigError(f"unknown device {device!r}; use one of {', '.join(DEVICES)}")
    return device


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return dtype
