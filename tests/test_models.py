"""Every registered model: causality, incremental decoding, sizing, and the HF baselines offline."""

import logging
import warnings

import pytest
import torch

from suite.interfaces import TaskSpec, parameter_count
from suite.models.sizing import build_for_budget

LM = TaskSpec(seq_len=12, input_vocab=11, output_dim=11)
CAUSAL = ["lstm-reference", "lstm-manual", "lstm-fast", "nn-lstm", "lstm-peephole", "lstm-cifg", "lstm-fgr", "gru",
          "minlstm", "transformer", "transformer-rope", "hf-gpt2", "hf-llama"]


def _model(registry, name, spec=LM, dtype=torch.float32, budget=3000):
    torch.manual_seed(0)
    model, _ = build_for_budget(registry.model(name), spec, budget)
    return model.to(dtype).eval()


@pytest.mark.parametrize("name", CAUSAL)
def test_causal(registry, name):
    model = _model(registry, name, dtype=torch.float64)
    x = torch.randint(0, 11, (2, 12))
    t = 5
    y = x.clone()
    y[:, t + 1:] = (y[:, t + 1:] + 3) % 11
    with torch.no_grad():
        a, b = model(x), model(y)
    assert torch.equal(a[:, :t + 1], b[:, :t + 1]), "outputs up to t changed when inputs after t changed"
    assert not torch.equal(a[:, t + 1:], b[:, t + 1:])


@pytest.mark.parametrize("name", CAUSAL)
def test_incremental_decoding_matches_full_forward(registry, name):
    model = _model(registry, name)
    assert model.supports_step
    x = torch.randint(0, 11, (3, 12))
    with torch.no_grad():
        full = model(x)
        state = model.init_state(3)
        steps = []
        for t in range(12):
            out, state = model.step(x[:, t], state)
            steps.append(out)
    assert torch.allclose(full, torch.stack(steps, 1), atol=1e-5), (full - torch.stack(steps, 1)).abs().max()


def test_all_models_run_on_every_kind_of_task(registry):
    specs = [TaskSpec(seq_len=8, input_dim=3, output_dim=2, output="regression", readout="last", causal=False),
             TaskSpec(seq_len=8, input_vocab=5, output_dim=4)]
    for name in registry.models:
        for spec in specs:
            model = _model(registry, name, spec)
            x = torch.randn(2, 8, 3) if spec.input_vocab is None else torch.randint(0, 5, (2, 8))
            out = model(x)
            want = (2, 2) if spec.readout == "last" else (2, 8, 4)
            assert out.shape == want, (name, out.shape)


@pytest.mark.parametrize("budget", [20000, 50000, 100000, 500000])
def test_parameter_budgets_match_within_ten_percent(registry, budget):
    for name, spec in registry.models.items():
        model, _ = build_for_budget(spec, LM, budget)
        assert abs(parameter_count(model) / budget - 1) <= 0.10, (name, parameter_count(model))


def test_hf_baselines_train_offline_without_warnings(registry, monkeypatch, caplog):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        for name in ("hf-gpt2", "hf-llama"):
            model = _model(registry, name).train()
            x = torch.randint(0, 11, (2, 12))
            loss = model(x).logsumexp(-1).mean()
            loss.backward()
            assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    noisy = [str(w.message) for w in caught if "token" in str(w.message).lower() or "config" in str(w.message).lower()]
    assert not noisy, noisy
    assert not [r for r in caplog.records if r.name.startswith("transformers")], caplog.text
