"""The fast path's plan cache (suite/models/kernel_plan.py): which GEMM kernel each product runs, measured
once per (CPU, build, layer shape). Timings are injected, so these tests measure nothing and run in
milliseconds; the last ones use the real extension with a tiny measuring budget."""

import json
import logging
import time

import pytest
import torch

from suite.errors import ConfigError
from suite.models import lstm_fast
from suite.models.gru_minlstm import ReferenceGRU
from suite.models.kernel_plan import MARGIN, ROLES, LayerShape, PlanCache, measuring_seconds
from suite.models.lstm import ReferenceLSTM
from suite.models.lstm_fast import FastGRU, FastLSTM, extension

NAMES = {False: ["default", "wide", "blas"], True: ["default", "blas"]}
SHAPE = LayerShape(code=31, gates=4, rows=16, steps=16, input_size=64, hidden=128)
KEY = SHAPE.key(False)


class Timer:
    """An injected measure(): kernel `fastest` takes 1 s per call, the others 2 s (or `seconds`)."""

    def __init__(self, fastest=1, seconds=None):
        self.calls, self.fastest, self.seconds = [], fastest, seconds

    def __call__(self, float64, shape, role, which, plan, budget):
        self.calls.append((shape, role, list(plan)))
        if self.seconds is not None:
            return list(self.seconds)
        return [1.0 if i == self.fastest else 2.0 for i in which]


def _cache(path, timer, identity="CPU A", build="build 1", **kw):
    return PlanCache(path, build, NAMES, timer, budget=0.01, identity=identity, **kw)


def _file(path, identity, build, kernels):
    path.write_text(
        json.dumps({"format": 2, "cpus": {identity: {"build": build, "layers": {KEY: {"kernels": kernels}}}}})
    )


def test_a_plan_is_measured_once_and_then_read_from_the_cache(tmp_path):
    path, timer = tmp_path / "plans.json", Timer(fastest=1)
    plan = _cache(path, timer).plan(False, SHAPE)
    assert plan.kernels == ("wide",) * len(ROLES) and plan.source == "measured on this CPU"
    assert [role for _, role, _ in timer.calls] == list(range(len(ROLES)))  # one role at a time
    assert timer.calls[-1][2] == [1, 1, 1, 1, 0]  # the roles before it at their choice, the rest default
    again = Timer(fastest=2)  # a new process: reads the plan, measures nothing
    assert _cache(path, again).plan(False, SHAPE).kernels == ("wide",) * len(ROLES)
    assert again.calls == []


def test_a_cached_plan_from_another_cpu_model_is_not_used(tmp_path):
    path = tmp_path / "plans.json"
    _file(path, "CPU B", "build 1", ["blas"] * len(ROLES))
    timer = Timer(fastest=1)
    plan = _cache(path, timer, identity="CPU A").plan(False, SHAPE)
    assert timer.calls, "a plan measured on another CPU was used instead of measuring here"
    assert plan.kernels == ("wide",) * len(ROLES)
    sections = json.loads(path.read_text())["cpus"]
    assert sections["CPU B"]["layers"][KEY]["kernels"] == ["blas"] * len(ROLES)  # the other CPU's kept
    assert sections["CPU A"]["layers"][KEY]["kernels"] == ["wide"] * len(ROLES)


def test_a_plan_from_another_build_of_the_kernels_is_measured_again(tmp_path):
    path = tmp_path / "plans.json"
    _file(path, "CPU A", "build 0", ["blas"] * len(ROLES))
    timer = Timer(fastest=1)
    assert _cache(path, timer, build="build 1").plan(False, SHAPE).kernels == ("wide",) * len(ROLES)
    assert timer.calls


@pytest.mark.parametrize("content", ["{not json", '{"format": 2, "cpus": []}', "[1, 2]", ""])
def test_a_corrupt_plan_cache_falls_back_to_the_default_with_one_warning(tmp_path, caplog, content):
    path, timer = tmp_path / "plans.json", Timer(fastest=1)
    path.write_text(content)
    cache = _cache(path, timer)
    with caplog.at_level(logging.WARNING, logger="lstm_bench"):
        plans = [cache.plan(False, SHAPE), cache.plan(True, SHAPE), cache.plan(False, SHAPE)]
        plans.append(cache.plan(False, LayerShape(31, 4, 8, 32, 64, 256)))
    assert all(p.kernels == ("default",) * len(ROLES) for p in plans)
    assert all(p.source == "default: plan cache unreadable" for p in plans)
    warnings = [r.getMessage() for r in caplog.records if r.name == "lstm_bench"]
    assert len(warnings) == 1 and "unreadable" in warnings[0] and "\n" not in warnings[0], warnings
    assert timer.calls == [] and path.read_text() == content  # nothing measured, the file left as it was


def test_a_kernel_must_beat_the_default_by_the_margin(tmp_path):
    close = Timer(seconds=[1.0, 1.0 - MARGIN / 2, 1.5])  # "wide" is faster, but within the margin
    assert _cache(tmp_path / "a.json", close).plan(False, SHAPE).kernels == ("default",) * len(ROLES)
    clear = Timer(seconds=[1.0, 1.0 - 2 * MARGIN, 1.5])
    assert _cache(tmp_path / "b.json", clear).plan(False, SHAPE).kernels == ("wide",) * len(ROLES)


def test_small_layers_and_a_zero_budget_take_the_default_without_measuring(tmp_path):
    timer = Timer()
    tiny = LayerShape(code=31, gates=4, rows=5, steps=6, input_size=5, hidden=7)
    assert _cache(tmp_path / "p.json", timer).plan(False, tiny).source == "default: too small to measure"
    off = PlanCache(tmp_path / "p.json", "build 1", NAMES, timer, budget=0, identity="CPU A")
    assert off.plan(False, SHAPE).source == "default: LSTM_BENCH_PLAN_BUDGET=0"
    assert timer.calls == [] and not (tmp_path / "p.json").exists()


def test_a_forced_kernel_is_checked_and_used_everywhere(tmp_path):
    timer = Timer()
    plan = _cache(tmp_path / "p.json", timer, forced="blas").plan(False, SHAPE)
    assert plan.kernels == ("blas",) * len(ROLES) and plan.indices == (2,) * len(ROLES) and timer.calls == []
    with pytest.raises(ConfigError, match="not a kernel of this build"):
        _cache(tmp_path / "p.json", timer, forced="zmm 99x9")


def test_the_seconds_spent_measuring_are_counted(tmp_path):
    """The counter the dry run's calibration subtracts: every measurement's time, and nothing for a shape
    already measured."""

    def slow(float64, shape, role, which, plan, budget):
        time.sleep(0.02)
        return [2.0] * len(which)

    cache = _cache(tmp_path / "p.json", slow)
    before = measuring_seconds()
    cache.plan(False, SHAPE)
    counted = measuring_seconds() - before
    assert 0.02 * len(ROLES) <= counted < 0.02 * len(ROLES) + 0.5
    cache.plan(False, SHAPE)
    _cache(tmp_path / "p.json", slow).plan(False, SHAPE)  # another process's cache: read from the file
    assert measuring_seconds() - before == counted


# ---- the real extension ------------------------------------------------------------------------------


@pytest.fixture
def plan_env(tmp_path, monkeypatch):
    monkeypatch.setenv("LSTM_BENCH_PLAN_CACHE", str(tmp_path / "plans.json"))
    monkeypatch.setenv("LSTM_BENCH_PLAN_BUDGET", "0.002")
    monkeypatch.delenv("LSTM_BENCH_KERNEL", raising=False)
    return tmp_path / "plans.json"


def test_the_plans_choice_is_in_the_backend_string(plan_env):
    torch.manual_seed(0)
    model = FastLSTM(32, 64)
    assert "chosen per shape at the first call" in model.backend()
    model(torch.randn(8, 16, 32))[0].sum().backward()  # measures this shape (a few ms), then runs it
    backend = model.backend()
    layers = json.loads(plan_env.read_text())["cpus"]
    (section,) = layers.values()
    (entry,) = section["layers"].values()
    assert section["build"] == extension().__name__ and set(entry["us_per_call"]) == set(ROLES)
    assert "measured on this CPU" in backend and "B8 T16 I32 H64" in backend
    for role, kernel in zip(ROLES, entry["kernels"]):
        assert kernel in backend, (role, kernel, backend)


@pytest.mark.parametrize("cell", ["vanilla", "fgr", "gru"])
def test_every_kernel_of_the_build_computes_the_same_function(cell, monkeypatch, plan_env):
    """Each kernel forced for every product (H = 33 and B = 9: partial panels and row blocks, two slices)
    against the reference cell, forward and backward, as the default's parity tests do."""
    torch.manual_seed(0)
    I, H, B = 5, 33, 9
    ref = ReferenceGRU(I, H, 1) if cell == "gru" else ReferenceLSTM(I, H, 1, cell)
    fast = FastGRU(I, H, 1) if cell == "gru" else FastLSTM(I, H, 1, variant=cell)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(B, 12, I)
    expected_out = ref(x)[0]
    expected_out.square().sum().backward()
    expected = [expected_out] + [p.grad for p in ref.parameters()]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for name in extension().kernel_names(False):
            monkeypatch.setenv("LSTM_BENCH_KERNEL", name)
            fast.zero_grad()
            out = fast(x)[0]
            out.square().sum().backward()
            assert name in fast.backend()
            for a, b in zip(expected, [out] + [p.grad for p in fast.parameters()]):
                assert torch.allclose(a, b, atol=1e-5, rtol=1e-5), (name, (a - b).abs().max())
            with torch.no_grad():
                assert torch.allclose(fast(x)[0], expected_out, atol=1e-5, rtol=0), name
    finally:
        torch.set_num_threads(threads)


def test_a_bad_budget_is_one_clear_error(monkeypatch, plan_env):
    monkeypatch.setenv("LSTM_BENCH_PLAN_BUDGET", "fast")
    with pytest.raises(ConfigError, match="LSTM_BENCH_PLAN_BUDGET"):
        lstm_fast.plan_cache()


def test_a_cold_plan_cache_is_no_cost_of_the_calibrated_steps(registry, plan_env, monkeypatch):
    """parity_check trains on a random length at every step, and each length under 16 is a layer shape of
    its own: with a cold cache every calibration step measured a plan (48x the steady step, once wrongly
    extrapolated to a 1h40m job). A shape is measured once per machine: a call that measured is timed
    again."""
    from suite.environment import environment
    from suite.estimate import Costs
    from suite.executor import RunContext
    from suite.jobs import Job

    monkeypatch.setenv("LSTM_BENCH_PLAN_BUDGET", "0.01")  # ~0.1 s per shape; a steady step ~8 ms
    dev = torch.device("cpu")
    run = RunContext(registry, dev, "float32", environment(dev, "float32"))
    job = Job(
        kind="train",
        experiment="t",
        task="parity_check",
        model="lstm-fast",
        seed=0,
        task_params={},
        param_budget=20000,
        recipe={"steps": 1000, "batch_size": 128, "eval_every": 500},
    )
    before = measuring_seconds()
    cost = Costs(run, [], 1)._calibrate_train(job)
    assert measuring_seconds() - before > 0.5, "the cache was not cold: this test shows nothing"
    assert cost.step < 0.06 and cost.per_eval < 0.5, cost  # counted, they were 0.18 and 1.1 s
