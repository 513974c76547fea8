"""Profiles: named configs in TOML files (suite/profiles/*.toml; copy one, edit it, and pass its
path to --profile). A profile holds experiments; each experiment crosses tasks x models x seeds
(lists inside task params or train settings are sweep axes), and a [measure] table asks for
throughput, latency and sequence-length scaling jobs.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from suite.errors import ConfigError
from suite.jobs import Job, TrainConfig, sweep
from suite.registry import Registry

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
            raise ConfigError(f"unknown profile {name_or_path!r}; known profiles: {', '.join(known)} (or the path of a .toml file)")
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


def expand(profile: Profile, registry: Registry, *, seeds=None, tasks=None, models=None, experiments=None) -> list[Job]:
    """Profile -> validated list of jobs. Raises ConfigError before anything runs."""
    data = profile.data
    base_train = data.get("train", {})
    seed_list = resolve_seeds(seeds if seeds is not None else data.get("seeds", 1))
    wanted_tasks = _names(tasks, registry.task)
    wanted_models = _names(models, registry.model)
    jobs: list[Job] = []
    for exp in data.get("experiment", []):
        exp_name = exp.get("name") or "main"
        if experiments and exp_name not in experiments:
            continue
        exp_seeds = resolve_seeds(exp["seeds"]) if "seeds" in exp and seeds is None else seed_list
        for model in exp.get("models", []):
            registry.model(model)
        for task_entry in exp.get("task", []):
            task_name = task_entry.get("name")
            cls = registry.task(task_name)
            train_values = {**base_train, **exp.get("train", {}), **task_entry.get("train", {})}
            for params in sweep(task_entry.get("params", {})):
                for train in sweep(train_values):
                    TrainConfig.from_dict(train)
                    for model in exp.get("models", []):
                        if wanted_tasks and task_name not in wanted_tasks or wanted_models and model not in wanted_models:
                            continue
                        for seed in exp_seeds:
                            jobs.append(Job("train", exp_name, cls.name, model, seed, params,
                                            exp.get("model_options", {}).get(model, {}),
                                            int(task_entry.get("param_budget", exp.get("param_budget", 0))),
                                            exp.get("layers"), train, width=exp.get("width")))
                    if task_entry.get("measure_throughput", exp.get("measure_throughput", False)):
                        for model in exp.get("models", []):
                            if wanted_tasks and task_name not in wanted_tasks or wanted_models and model not in wanted_models:
                                continue
                            jobs.append(Job("throughput", exp_name, cls.name, model, 0, params,
                                            exp.get("model_options", {}).get(model, {}),
                                            int(task_entry.get("param_budget", exp.get("param_budget", 0))),
                                            exp.get("layers"), {"batch_size": TrainConfig.from_dict(train).batch_size}))
    jobs += _measure_jobs(data.get("measure", {}), registry, wanted_models)
    if not jobs:
        raise ConfigError(f"profile {profile.name!r} with these filters selects no job; check --task/--model/--experiment")
    return jobs


def _measure_jobs(measure: dict, registry: Registry, wanted_models) -> list[Job]:
    jobs = []
    for kind, axis in (("scaling", "seq_lens"), ("latency", "contexts")):
        table = measure.get(kind)
        if not table:
            continue
        for model in table.get("models", []):
            registry.model(model)
            if wanted_models and model not in wanted_models:
                continue
            for point in table.get(axis, []):
                if not isinstance(point, int) or point < 1:
                    raise ConfigError(f"[measure.{kind}] {axis} must be positive integers, got {point!r}")
                jobs.append(Job(kind, kind, "synthetic", model, 0, param_budget=int(table.get("param_budget", 100_000)),
                                train={"batch_size": int(table.get("batch_size", 8))}, extra={axis[:-1]: point}))
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
