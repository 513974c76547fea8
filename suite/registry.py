"""Task and model registry, filled from plugins.

Two ways in, for built-ins and third parties alike:
  * entry points: group "lstm_bench.tasks" -> a Task subclass (or a module of them),
    group "lstm_bench.models" -> a ModelSpec, a list of them, or a module holding them;
  * drop-in plugins: a .py file or an importable module named by `--plugin` or by the
    LSTM_BENCH_PLUGINS environment variable (os.pathsep-separated); every Task subclass and
    ModelSpec defined in it is registered.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import pkgutil
import sys
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, distribution, entry_points
from pathlib import Path
from types import ModuleType

import torch

from suite.errors import ConfigError, PluginError, one_line
from suite.interfaces import FAMILIES, Batch, ModelSpec, Task

TASK_GROUP = "lstm_bench.tasks"
MODEL_GROUP = "lstm_bench.models"
PLUGIN_ENV = "LSTM_BENCH_PLUGINS"


@dataclass
class Registry:
    tasks: dict[str, type[Task]] = field(default_factory=dict)
    models: dict[str, ModelSpec] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # name -> where it came from

    # ---- adding ---------------------------------------------------------------------
    def add_task(self, cls, source: str) -> None:
        check_task_class(cls, source)
        self._claim("task:" + cls.name, source)
        self.tasks[cls.name] = cls

    def add_model(self, spec, source: str) -> None:
        if not isinstance(spec, ModelSpec) or not spec.name or not callable(spec.build):
            raise PluginError(
                f"plugin {source}: model entries must be suite.interfaces.ModelSpec with a name and "
                f"build(); got {spec!r:.80}"
            )
        self._claim("model:" + spec.name, source)
        self.models[spec.name] = spec

    def _claim(self, key: str, source: str) -> None:
        if key in self.sources and self.sources[key] != source:
            raise PluginError(
                f"{key.replace(':', ' ')!s} is registered twice ({self.sources[key]} and {source}); rename "
                "one"
            )
        self.sources[key] = source

    # ---- looking up -----------------------------------------------------------------
    def task(self, name: str) -> type[Task]:
        if name not in self.tasks:
            raise ConfigError(
                f"unknown task {name!r}; known tasks: {', '.join(sorted(self.tasks))} (see `python -m suite "
                "list tasks`)"
            )
        return self.tasks[name]

    def model(self, name: str) -> ModelSpec:
        if name not in self.models:
            raise ConfigError(
                f"unknown model {name!r}; known models: {', '.join(sorted(self.models))} (see `python -m "
                "suite list models`)"
            )
        return self.models[name]

    def make_task(self, name: str, params: dict, seed: int = 0) -> Task:
        cls = self.task(name)
        try:
            task = cls(seed=seed, **params)
        except ValueError as exc:
            raise ConfigError(f"task {name!r}: bad parameter value ({one_line(exc)})") from None
        except TypeError as exc:
            allowed = [p.name for p in cls.parameters() if p.name != "seed"]
            raise ConfigError(
                f"task {name!r}: bad parameters {sorted(params)} ({one_line(exc)}); "
                f"it takes {allowed} (see `python -m suite describe {name}`)"
            ) from None
        if not hasattr(task, "spec"):
            raise PluginError(
                f"task {name!r} ({self.sources.get('task:' + name)}): __init__ must set self.spec (a "
                "TaskSpec)"
            )
        return task


def check_task_class(cls, source: str) -> None:
    where = f"plugin {source}"
    if not (inspect.isclass(cls) and issubclass(cls, Task)):
        raise PluginError(f"{where}: {cls!r:.60} is not a subclass of suite.interfaces.Task")
    if not cls.name or not isinstance(cls.name, str):
        raise PluginError(f"{where}: task class {cls.__name__} has no `name`")
    if cls.family not in FAMILIES:
        raise PluginError(f"{where}: task {cls.name!r} family {cls.family!r} is not one of {FAMILIES}")
    if cls.baseline is Task.baseline:
        raise PluginError(f"{where}: task {cls.name!r} is missing method baseline()")
    if cls.sample is Task.sample and (
        cls.train_batch is Task.train_batch or cls.eval_batches is Task.eval_batches
    ):
        raise PluginError(
            f"{where}: task {cls.name!r} is missing method sample() (or train_batch() and eval_batches())"
        )
    own_help = vars(cls).get("param_help", {})
    stray = sorted(set(own_help) - {p.name for p in cls.parameters()}) if isinstance(own_help, dict) else None
    if stray is None or stray:
        why = f"; {', '.join(stray)} is no parameter of __init__" if stray else ""
        raise PluginError(
            f"{where}: task {cls.name!r} param_help must be a dict from its __init__ "
            f"parameters to one-line meanings{why}"
        )


def check_task_instance(task: Task) -> None:
    """Probe a task once before a run writes anything: wrong return types fail here, in one line."""
    where = f"task {task.name!r}"
    try:
        batch = task.train_batch(2, torch.Generator().manual_seed(0))
        base = task.baseline()
    except Exception as exc:  # a plugin can raise anything
        raise PluginError(f"{where} failed when probed: {type(exc).__name__}: {one_line(exc)}") from None
    if not isinstance(batch, Batch) or not torch.is_tensor(batch.x) or not torch.is_tensor(batch.y):
        raise PluginError(
            f"{where}: train_batch()/sample() must return suite.interfaces.Batch of tensors, got "
            f"{type(batch).__name__}"
        )
    spec = task.spec
    # a training batch may be shorter than seq_len (tasks that vary the length per batch), never longer
    T = (
        int(batch.x.shape[1])
        if batch.x.dim() >= 2 and 1 <= batch.x.shape[1] <= spec.seq_len
        else spec.seq_len
    )
    want_x = (2, T) if spec.input_vocab else (2, T, spec.input_dim)
    if tuple(batch.x.shape) != want_x:
        raise PluginError(
            f"{where}: batch.x has shape {tuple(batch.x.shape)}, its TaskSpec says {want_x} "
            f"(T at most seq_len={spec.seq_len})"
        )
    if not isinstance(base, dict) or task.primary_metric not in base:
        raise PluginError(
            f"{where}: baseline() must return a dict holding its primary metric {task.primary_metric!r}, "
            f"got {base!r:.80}"
        )


# ---- loading -------------------------------------------------------------------------------


def _collect(obj, registry: Registry, source: str, kind: str) -> None:
    """Register what an entry point or plugin module offers."""
    if isinstance(obj, ModuleType):
        found = 0
        for value in list(vars(obj).values()):
            if (
                inspect.isclass(value)
                and issubclass(value, Task)
                and value is not Task
                and value.__module__ == obj.__name__
                and value.name
            ):
                registry.add_task(value, source)
                found += 1
            elif isinstance(value, ModelSpec) or (
                isinstance(value, (list, tuple)) and value and all(isinstance(v, ModelSpec) for v in value)
            ):
                _collect(value, registry, source, "model")
                found += 1
        if not found:
            raise PluginError(f"plugin {source} defines no Task subclass with a name and no ModelSpec")
    elif isinstance(obj, ModelSpec):
        registry.add_model(obj, source)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            _collect(item, registry, source, kind)
    elif kind == "task":
        registry.add_task(obj, source)
    else:
        registry.add_model(obj, source)


def _import_plugin(ref: str) -> ModuleType:
    path = Path(ref)
    try:
        if ref.endswith(".py") or path.exists():
            if not path.is_file():
                raise PluginError(
                    f"plugin file {ref!r} does not exist; pass a .py file or an importable module name"
                )
            name = "lstm_bench_plugin_" + path.stem
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise PluginError(f"plugin file {ref!r} cannot be imported; pass a .py file")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            return module
        return importlib.import_module(ref)
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(f"plugin {ref!r} failed to import: {type(exc).__name__}: {one_line(exc)}") from None


def load_plugin(ref: str, registry: Registry) -> None:
    module = _import_plugin(ref)
    _collect(module, registry, ref, "task")
    # a package: its submodules too (this is how the built-in `tasks` package loads without install)
    if hasattr(module, "__path__"):
        for info in pkgutil.iter_modules(module.__path__):
            if not info.name.startswith("_"):
                sub = _import_plugin(f"{module.__name__}.{info.name}")
                try:
                    _collect(sub, registry, sub.__name__, "task")
                except PluginError as exc:
                    if "defines no Task" not in str(exc):
                        raise


def _load_entry_points(registry: Registry) -> bool:
    found = False
    for group, kind in ((TASK_GROUP, "task"), (MODEL_GROUP, "model")):
        for ep in entry_points(group=group):
            found = True
            source = f"{ep.value} (entry point {group})"
            try:
                obj = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"plugin {ep.value!r} (entry point {ep.name!r} in {group}) failed to import: "
                    f"{type(exc).__name__}: {one_line(exc)}"
                ) from None
            _collect(obj, registry, source, kind)
    return found


def _builtins_installed() -> bool:
    try:
        distribution("lstm-bench")
        return True
    except PackageNotFoundError:
        return False


def load_registry(plugins: list[str] | tuple[str, ...] = ()) -> Registry:
    registry = Registry()
    _load_entry_points(registry)
    if (
        not _builtins_installed()
    ):  # running from a source tree without `pip install`: same modules, drop-in path
        load_plugin("tasks", registry)
        load_plugin("suite.models.catalog", registry)
    env = [p for p in os.environ.get(PLUGIN_ENV, "").split(os.pathsep) if p.strip()]
    for ref in [*env, *plugins]:
        load_plugin(ref, registry)
    return registry
