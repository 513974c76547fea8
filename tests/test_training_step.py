"""The one training step (suite/training_step.py): every caller that trains or times training runs it, it
clips, a compiled or fused step gives the plain step's metrics, and the records carry the whole step's
rate against the machine's GEMM rate."""

import pytest
import torch

from suite import training_step
from suite.environment import environment
from suite.executor import RunContext, run_job
from suite.interfaces import Batch
from suite.jobs import Job, Recipe
from suite.measure import roofline
from suite.measure.throughput import batch_throughput
from suite.training_step import FlatBuffers, TrainStep, adamw, clip_grad_norm, fused_adamw_step

# a compiled or fused run against the plain one: float summation order only, over a few dozen steps
TOLERANCE = 1e-3  # relative, on every metric; steps done and the stopping step are equal


def _context(registry):
    dev = torch.device("cpu")
    return RunContext(registry, dev, "float32", environment(dev, "float32"))


def _job(model="transformer", steps=30, lr=3e-3, **recipe):
    return Job(
        kind="train",
        experiment="t",
        task="adding",
        model=model,
        seed=0,
        task_params={"seq_len": 12},
        param_budget=3000,
        recipe={"steps": steps, "batch_size": 8, "eval_every": 10, "lr": lr, "warmup": 0, **recipe},
    )


def _tiny():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    batch = Batch(torch.randn(16, 4), torch.randn(16, 1))
    return model, batch


def _mse(out, batch):
    return ((out - batch.y) ** 2).mean()


def _counting_clip(monkeypatch) -> list:
    calls: list = []
    clip = training_step.clip_grad_norm

    def counted(*args, **kwargs):
        calls.append(1)
        return clip(*args, **kwargs)

    monkeypatch.setattr(training_step, "clip_grad_norm", counted)
    return calls


def test_the_timed_train_step_clips_like_training(monkeypatch):
    """The throughput jobs' step once skipped clipping: what is timed must be what trains."""
    calls = _counting_clip(monkeypatch)
    model, batch = _tiny()
    batch_throughput(model, batch, _mse, torch.device("cpu"), Recipe(), min_run_time=0.01)
    assert calls, "the timed training step does not clip the gradients"


def test_fit_and_the_dry_run_calibration_run_the_same_step(registry, monkeypatch):
    from suite.estimate import Costs

    seen = []
    gradients = TrainStep.gradients
    monkeypatch.setattr(TrainStep, "gradients", lambda self, b: seen.append(1) or gradients(self, b))
    run = _context(registry)
    record = run_job(_job("nn-lstm", steps=5), run)
    assert record["status"] == "ok" and len(seen) == 5
    Costs(run, [], 1)._calibrate_train(_job("nn-lstm"))
    assert len(seen) > 5


def test_clipping_bounds_the_update_and_reports_the_norm_before_it():
    model, batch = _tiny()
    step = TrainStep(model, lambda out, b: 1e6 * _mse(out, b), Recipe(clip=0.5))
    out = step.gradients(batch)
    after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert out.grad_norm > 1e3 and after == pytest.approx(0.5, rel=1e-4)


@pytest.mark.parametrize("scale", [1e-3, 1e3])  # below and above max_norm
def test_our_clipping_is_the_librarys_bit_for_bit(scale):
    def grads(dtypes):
        g = torch.Generator().manual_seed(0)
        params = [torch.nn.Parameter(torch.zeros(n, dtype=d)) for n, d in zip((7, 30, 1), dtypes)]
        for p in params:
            p.grad = scale * torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype)
        return params

    for dtypes in ([torch.float32] * 3, [torch.float32, torch.float64, torch.float32]):  # mixed: library
        ours, library = grads(dtypes), grads(dtypes)
        norm = clip_grad_norm(ours, 0.5)
        assert torch.equal(norm, torch.nn.utils.clip_grad_norm_(library, 0.5))
        assert all(torch.equal(a.grad, b.grad) for a, b in zip(ours, library))


def test_our_fused_adamw_step_is_the_optimizers_bit_for_bit():
    """Both groups (decayed matrices, undecayed vectors), a learning rate that changes every step, a few
    steps: the weights and every piece of optimizer state equal the optimizer's own step exactly."""

    def trained(ours: bool):
        model, batch = _tiny()
        opt = adamw(list(model.parameters()), Recipe(weight_decay=0.1))
        taken = []
        for i in range(5):
            model.zero_grad(set_to_none=True)
            _mse(model(batch.x), batch).backward()
            for group in opt.param_groups:
                group["lr"] = 1e-2 / (i + 1)
            taken.append(ours and fused_adamw_step(opt))
            if not taken[-1]:
                opt.step()
        return model, opt, taken

    (ours, ours_opt, taken), (theirs, theirs_opt, _) = trained(True), trained(False)
    assert taken == [False] + [True] * 4  # the first step creates the state
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters()))
    for a, b in zip(ours.parameters(), theirs.parameters()):
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(ours_opt.state[a][key], theirs_opt.state[b][key]), key


def test_our_fused_adamw_step_leaves_other_optimizers_to_their_own_step():
    model, batch = _tiny()
    params = list(model.parameters())
    for opt in (torch.optim.AdamW(params, foreach=True), torch.optim.AdamW(params, fused=True, amsgrad=True)):
        _mse(model(batch.x), batch).backward()
        opt.step()  # the state exists
        before = [p.detach().clone() for p in params]
        assert not fused_adamw_step(opt)
        assert all(torch.equal(a, b) for a, b in zip(before, params))
    opt = torch.optim.AdamW(params, fused=True)
    opt.step()
    params[0].grad = None  # a parameter without a gradient: the optimizer skips it, so must we
    assert not fused_adamw_step(opt)


def test_weight_decay_on_matrices_only_and_the_fused_kernel_on_the_cpu():
    model, _ = _tiny()
    opt = adamw(list(model.parameters()), Recipe(weight_decay=0.1))
    decay = {g["weight_decay"]: [p.dim() for p in g["params"]] for g in opt.param_groups}
    assert decay == {0.1: [2, 2], 0.0: [1, 1]} and opt.defaults["fused"]


def _same_run(a: dict, b: dict) -> None:
    assert a["status"] == b["status"] and a["steps_done"] == b["steps_done"]
    assert a["diverged_step"] == b["diverged_step"]
    assert [p["step"] for p in a["curve"]] == [p["step"] for p in b["curve"]]
    if a["status"] == "ok":
        for key, value in a["test"].items():
            assert b["test"][key] == pytest.approx(value, rel=TOLERANCE), key
        assert b["best_val"] == pytest.approx(a["best_val"], rel=TOLERANCE)
        for pa, pb in zip(a["curve"], b["curve"], strict=True):
            assert pb["train_loss"] == pytest.approx(pa["train_loss"], rel=TOLERANCE)


def _apart(monkeypatch) -> None:
    monkeypatch.setattr(FlatBuffers, "take_over", classmethod(lambda cls, opt, params: None))


def test_the_fused_optimizer_gives_the_for_loop_optimizers_run(registry, monkeypatch):
    """AdamW's fused kernel against torch's plain per-tensor loop (the textbook algorithm)."""
    run = _context(registry)
    fused = run_job(_job(), run)
    plain = lambda params, cfg: torch.optim.AdamW(
        [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.99),
        foreach=False,
    )
    monkeypatch.setattr("suite.training_step.adamw", plain)
    _apart(monkeypatch)
    loop = run_job(_job(), run)
    assert (
        fused["step_mode"] == "eager, AdamW fused, flat buffers"
        and loop["step_mode"] == "eager, AdamW for-loop"
    )
    _same_run(fused, loop)


def test_flat_buffers_step_as_the_tensors_apart():
    """The parameters and gradients as views of two buffers, one AdamW tensor per group: the same update
    within float rounding (the norm's summation order, the clipping factor in double), over steps that clip
    and steps that do not, both groups, a changing learning rate."""

    def trained(flat: bool):
        model, batch = _tiny()
        norms: list[float] = []
        scaled = lambda out, b: _mse(out, b) * (1e3 if len(norms) % 2 else 1.0)  # every other step clips
        with pytest.MonkeyPatch.context() as mp:
            if not flat:
                _apart(mp)
            step = TrainStep(model, scaled, Recipe(clip=2.0, weight_decay=0.1))
        assert (step.flat is not None) == flat
        for i in range(6):
            norms.append(step(batch, 1e-2 / (i + 1)).grad_norm)
        return model, norms

    (flat_model, flat_norms), (apart_model, apart_norms) = trained(True), trained(False)
    assert flat_norms == pytest.approx(apart_norms, rel=1e-5) and max(flat_norms) > 2.0 > min(flat_norms)
    for a, b in zip(flat_model.parameters(), apart_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_flat_buffers_survive_a_caller_clearing_the_gradients_and_refuse_a_replaced_tensor():
    model, batch = _tiny()
    step = TrainStep(model, _mse, Recipe())
    buffer = step.flat.whole[0]
    storage = lambda t: t.untyped_storage().data_ptr()
    assert all(storage(p) == storage(buffer) for p in model.parameters())
    step(batch, 1e-3)
    model.zero_grad(set_to_none=True)  # as the FLOP counter does
    before = [p.detach().clone() for p in model.parameters()]
    assert step(batch, 1e-3).grad_norm > 0
    assert all(storage(p.grad) == storage(buffer.grad) for p in model.parameters())
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    model[0].weight.data = torch.zeros_like(model[0].weight)  # no longer a view of the buffer
    with pytest.raises(RuntimeError, match="replaced"):
        step(batch, 1e-3)


def test_parameters_that_cannot_share_a_buffer_stay_apart():
    model, _ = _tiny()
    model.double()[0].float()  # two dtypes
    assert TrainStep(model, lambda out, b: _mse(out.float(), b), Recipe()).flat is None


@pytest.mark.parametrize("lr", [3e-3, 1e6], ids=["trains", "diverges"])
def test_the_transformers_kernels_give_the_library_ops_run(registry, monkeypatch, lr):
    """Our Transformer on its C++ kernels (attention, LayerNorm, MLP) against the same job on the library's
    ops: same steps, same stopping step, metrics within TOLERANCE; each record names what ran."""
    run = _context(registry)
    kernels = run_job(_job(lr=lr, steps=40), run)
    monkeypatch.setenv("LSTM_BENCH_TRANSFORMER_KERNELS", "off")
    library = run_job(_job(lr=lr, steps=40), run)
    assert "attention: small-head C++ kernel" in kernels["backend"] and "C++ LayerNorm" in kernels["backend"]
    assert "attention: SDPA" in library["backend"] and "C++" not in library["backend"]
    assert (kernels["status"] == "diverged") == (lr > 1)
    _same_run(kernels, library)


@pytest.mark.slow
@pytest.mark.parametrize("lr", [3e-3, 1e6], ids=["trains", "diverges"])
def test_a_compiled_run_gives_the_eager_runs_metrics(registry, lr):
    """torch.compile of the step: same steps, same stopping step, metrics within TOLERANCE."""
    run = _context(registry)
    eager = run_job(_job(lr=lr, steps=40), run)
    compiled = run_job(_job(lr=lr, steps=40, step_mode="compiled"), run)
    assert compiled["step_mode"].startswith("compiled") and compiled["step_compile_seconds"] > 0
    assert (eager["status"] == "diverged") == (lr > 1)
    _same_run(eager, compiled)


def test_a_model_that_does_not_compile_trains_eager_and_says_why(monkeypatch):
    import suite.training_step as ts

    model, batch = _tiny()

    def broken(module):
        def forward(x):
            raise RuntimeError("no graph for you")

        return forward

    monkeypatch.setattr(ts, "_compiled", lambda m: m)  # the constructor's compile
    step = TrainStep(model, _mse, Recipe(step_mode="compiled"))
    monkeypatch.setattr(ts, "_compiled", broken)  # the warm-up's
    step.warm_up(batch)
    assert step.mode == "eager" and step.forward is model and "no graph for you" in step.label
    step(batch, 1e-3)


def test_a_step_mode_that_does_not_exist_is_a_config_error():
    from suite.errors import ConfigError

    with pytest.raises(ConfigError, match="step_mode"):
        Recipe.from_dict({"step_mode": "turbo"})


# ---- the whole step against the GEMM rate -------------------------------------------------------------


def test_step_rate_on_a_constructed_case(monkeypatch):
    monkeypatch.setattr(roofline, "_gemm_rate", lambda device, dtype, threads: 1e11)
    rate = roofline.step_rate(2e4, 1e6, torch.device("cpu"), torch.float32, threads=3)
    assert rate.step_flops_per_s == 2e10 and rate.step_share_of_gemm == pytest.approx(0.2)
    assert rate.gemm_threads == 3
    none = roofline.step_rate(None, 1e6, torch.device("cpu"), torch.float32)
    assert none.step_flops_per_s is None and none.step_share_of_gemm is None


def test_the_gemm_rate_is_measured_once_per_thread_count():
    roofline._gemm_rate.cache_clear()
    first = roofline.gemm_flops_per_s(torch.device("cpu"), torch.float32, 1)
    again = roofline.gemm_flops_per_s(torch.device("cpu"), torch.float32, 1)
    assert first == again and 1e9 < first < 1e14  # the same measurement; a plausible CPU rate
    assert roofline._gemm_rate.cache_info().misses == 1


def test_training_records_carry_the_whole_step_rate(registry):
    rec = run_job(_job("nn-lstm", steps=10), _context(registry))
    expected = rec["train_flops_per_token"] * rec["train_tokens_per_s_in_loop"]
    assert rec["step_flops_per_s"] == pytest.approx(expected)
    assert rec["step_share_of_gemm"] == pytest.approx(expected / rec["gemm_flops_per_s"])
    assert (
        rec["gemm_threads"] == torch.get_num_threads()
        and rec["step_mode"] == "eager, AdamW fused, flat buffers"
    )


def test_the_report_tabulates_the_whole_step_rate_per_model_and_step_mode():
    import pandas as pd

    from suite.report import tables, views

    def run(model, mode, rate, gemm=1e11):
        return {
            "experiment": "main",
            "config": "adding(seq_len=50)",
            "model": model,
            "status": "ok",
            "step_mode": mode,
            "step_flops_per_s": rate,
            "gemm_flops_per_s": gemm,
            "gemm_threads": 1,
            "step_share_of_gemm": rate / gemm,
            "train_flops_per_token": 1e5,
            "train_tokens_per_s_in_loop": rate / 1e5,
        }

    train = pd.DataFrame(
        [run("lstm-fast", "eager, AdamW fused", r) for r in (1e10, 2e10, 3e10)]
        + [run("transformer", "eager, AdamW fused", 1e10), run("transformer", "compiled, AdamW fused", 4e10)]
        + [{**run("nn-lstm", "eager", 1e10), "status": "diverged"}]
    )
    rates = tables.step_rate_table(train)
    fast = rates[rates["model"] == "lstm-fast"].iloc[0]
    assert fast["runs"] == 3 and fast["step_gflops"] == pytest.approx(20) and fast["share_of_gemm"] == 0.2
    assert len(rates[rates["model"] == "transformer"]) == 2 and "nn-lstm" not in set(rates["model"])
    shown = views.step_rates(rates)
    assert list(shown["% of GEMM rate"].map(lambda c: c.sort)) == pytest.approx([20, 10, 40])
    assert tables.step_rate_table(train.drop(columns=["step_flops_per_s"])).empty  # records before it


@pytest.fixture
def flushing():
    """Denormals flushed on every compute thread for the test, as a run sets them; kept (the interpreter's
    default) after."""
    from suite.models import float_env

    float_env.set_flush_denormals(True)
    yield float_env
    float_env.set_flush_denormals(False)


def test_flushing_denormals_reaches_every_thread_of_the_pool(two_threads, flushing):
    """The constructed case: 1e-30 x 1e-10 is a float32 denormal. torch.set_flush_denormal alone set only the
    calling thread, and half of a two-thread product came back denormal."""
    tiny = torch.full((1 << 20,), 1e-30)
    assert int(((tiny * 1e-10) != 0).sum()) == 0
    assert flushing.denormals_flushed() is True
    assert environment(torch.device("cpu"), "float32")["flush_denormals"] is True
    flushing.set_flush_denormals(False)
    assert int(((tiny * 1e-10) != 0).sum()) == tiny.numel() and flushing.denormals_flushed() is False


@pytest.mark.parametrize("model", ["transformer", "nn-lstm"])
def test_a_run_with_denormals_flushed_gives_the_ieee_runs_metrics(registry, flushing, model):
    """At a learning rate high enough to make denormals (the case the flush is for): same steps, same stopping
    step, metrics within TOLERANCE."""
    run = _context(registry)
    flushed = run_job(_job(model, lr=0.1, steps=40), run)
    flushing.set_flush_denormals(False)
    ieee = run_job(_job(model, lr=0.1, steps=40), run)
    _same_run(flushed, ieee)
