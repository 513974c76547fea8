"""The plugin model contract: its one declaration (suite.models.capabilities.ModelCapabilities) is what
the code looks up, and a plugin model written to it, read from the declaration itself, has every
capability honoured by every job kind."""

import ast
import inspect
import re
import sys

import torch
from conftest import FIXTURES, ROOT

from suite.environment import environment
from suite.executor import RunContext, run_job
from suite.interfaces import ModelSpec
from suite.jobs import Job
from suite.models import capabilities
from suite.models.capabilities import BackboneCapabilities, ModelCapabilities
from suite.registry import load_registry

WIDTH = 16


def _members(protocol) -> tuple[dict, set[str]]:
    """A Protocol's methods (name -> function) and its attributes, as declared."""
    methods = {n: v for n, v in vars(protocol).items() if inspect.isfunction(v) and not n.startswith("_")}
    return methods, set(protocol.__annotations__)


def _parameters(fn) -> list[tuple[str, object]]:
    return [(p.name, p.kind) for p in inspect.signature(fn).parameters.values()]


def _plugin():
    registry = load_registry([str(FIXTURES / "capable_model.py")])
    spec = registry.model("capable")
    module = sys.modules[spec.build.__module__]
    module._built.clear()  # prepare() reports a build on its first call in this process
    return registry, module


def test_the_plugin_implements_each_declared_capability_with_its_declared_signature():
    _, module = _plugin()
    methods, attributes = _members(ModelCapabilities)
    assert set(methods) == {"backend", "prepare", "flop_module", "init_state", "step", "lookup_parameters"}
    for name, declared in methods.items():
        assert _parameters(getattr(module.Capable, name)) == _parameters(declared), name
    assert attributes == {"supports_step", "positions"} and module.Capable.supports_step is True


def _looked_up(path, owner: str | None = None) -> set[str]:
    """Names a module reads by getattr/hasattr with a literal, and (owner given) as `owner.name`."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) in ("getattr", "hasattr")
            and isinstance(node.args[1], ast.Constant)
            and (owner is None or ast.unparse(node.args[0]) == owner)
        ):
            names.add(node.args[1].value)
        if owner and isinstance(node, ast.Attribute) and ast.unparse(node.value) == owner:
            names.add(node.attr)
    return names


def test_the_code_looks_up_only_what_the_contract_declares():
    model_methods, model_attributes = _members(ModelCapabilities)
    assert _looked_up(ROOT / "suite/models/capabilities.py") <= set(model_methods) | model_attributes
    backbone_methods, backbone_attributes = _members(BackboneCapabilities)
    read = _looked_up(ROOT / "suite/models/sequence_model.py", owner="self.backbone")
    assert read and read <= set(backbone_methods) | backbone_attributes
    # what the timing jobs call on the model, beyond nn.Module's own methods
    throughput = (ROOT / "suite/measure/throughput.py").read_text()
    called = set(re.findall(r"\bmodel\.(\w+)\(", throughput)) - set(dir(torch.nn.Module))
    assert called and called <= set(model_methods)
    # ModelSpec documents the build and points to the declaration, listing no method of its own
    doc = ModelSpec.__doc__ or ""
    assert "capabilities.ModelCapabilities" in doc
    assert set(re.findall(r"(\w+)\(", doc)) <= {"build", "forward"}


def test_a_plugin_model_written_to_the_contract_has_every_capability_honoured():
    registry, module = _plugin()
    dev = torch.device("cpu")
    run = RunContext(registry, dev, "float32", environment(dev, "float32"))
    common = dict(experiment="t", model="capable", seed=0, width=WIDTH)
    train = run_job(
        Job(
            kind="train",
            task="adding",
            task_params={"seq_len": 8},
            recipe={"steps": 4, "batch_size": 4, "eval_every": 2},
            **common,
        ),
        run,
    )
    scaling, latency = (
        run_job(
            Job(kind=kind, task="synthetic", recipe={"batch_size": 2}, extra=extra, role=kind, **common), run
        )
        for kind, extra in (("scaling", {"seq_len": 8}), ("latency", {"context": 20}))
    )
    for rec in (train, scaling, latency):
        assert rec["status"] == "ok", rec.get("error") or rec.get("skip_reason")
        assert rec["backend"] == "numpy recurrence (cpu, float32)"  # backend(device, dtype)
        assert rec["positions"] == "none"  # the positions attribute
    # prepare(): the first job paid the build, the later ones reused it
    assert (train["compile_seconds"], train["compile_reused"]) == (module.BUILD_SECONDS, False)
    assert (latency["compile_seconds"], latency["compile_reused"]) == (0.0, True)
    # lookup_parameters(): the feature projection and the head; the recurrent matrix is the backbone
    spec = registry.make_task("adding", {"seq_len": 8}).spec
    head = WIDTH * spec.output_dim + spec.output_dim
    assert train["lookup_params"] == spec.input_dim * WIDTH + WIDTH + head
    assert train["backbone_params"] == WIDTH * WIDTH
    # flop_module(): the recurrent product (numpy, unseen by the counter) is counted on the twin
    T = spec.seq_len
    per_token = 2 * spec.input_dim * WIDTH + 2 * WIDTH * WIDTH + 2 * WIDTH * spec.output_dim / T
    assert train["flops_per_token"] == per_token
    # supports_step, init_state, step: the latency job ran and timed the steps
    assert latency["latency_seconds"] > 0 and latency["latency_steps"] > 0
    assert capabilities.supports_step(module.Capable(spec, WIDTH))
