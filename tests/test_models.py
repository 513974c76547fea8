"""Every registered model: causality, incremental decoding, sizing, and the HF baselines offline."""

import logging
import warnings

import pytest
import torch

from suite.interfaces import TaskSpec
from suite.models.capabilities import parameter_split
from suite.models.sizing import build_model

LM = TaskSpec(seq_len=12, input_vocab=11, output_dim=11)
CAUSAL = [
    "lstm-reference",
    "lstm-manual",
    "lstm-fast",
    "lstm-triton",
    "nn-lstm",
    "lstm-peephole",
    "lstm-cifg",
    "lstm-fgr",
    "gru",
    "minlstm",
    "slstm",
    "mlstm",
    "xlstm",
    "transformer",
    "transformer-rope",
    "transformer-nope",
    "transformer-alibi",
    "hf-gpt2",
    "hf-llama",
]


def _model(registry, name, spec=LM, dtype=torch.float32, budget=3000):
    model, _ = build_model(registry.model(name), spec, budget=budget, dtype=dtype)
    return model.eval()


@pytest.mark.parametrize("name", CAUSAL)
def test_causal(registry, name):
    model = _model(registry, name, dtype=torch.float64)
    x = torch.randint(0, 11, (2, 12))
    t = 5
    y = x.clone()
    y[:, t + 1 :] = (y[:, t + 1 :] + 3) % 11
    with torch.no_grad():
        a, b = model(x), model(y)
    assert torch.equal(a[:, : t + 1], b[:, : t + 1]), "outputs up to t changed when inputs after t changed"
    assert not torch.equal(a[:, t + 1 :], b[:, t + 1 :])


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
    specs = [
        TaskSpec(seq_len=8, input_dim=3, output_dim=2, output="regression", readout="last", causal=False),
        TaskSpec(seq_len=8, input_vocab=5, output_dim=4),
    ]
    for name in registry.models:
        for spec in specs:
            model = _model(registry, name, spec)
            x = torch.randn(2, 8, 3) if spec.input_vocab is None else torch.randint(0, 5, (2, 8))
            out = model(x)
            want = (2, 2) if spec.readout == "last" else (2, 8, 4)
            assert out.shape == want, (name, out.shape)


@pytest.mark.parametrize("budget", [20000, 50000, 100000, 500000])
def test_backbone_budgets_match_within_ten_percent(registry, budget):
    for name, spec in registry.models.items():
        with torch.device("meta"):
            model, _ = build_model(spec, LM, budget=budget, device="meta")
        backbone = parameter_split(model)["backbone_params"]
        assert abs(backbone / budget - 1) <= 0.10, (name, backbone)


def test_length_sweep_keeps_every_backbone_fixed(registry):
    """The position table grows with T; the budget is matched on the backbone, so nothing shrinks."""
    for name, spec in registry.models.items():
        seen = set()
        for T in (64, 200, 1000):
            with torch.device("meta"):
                model, width = build_model(
                    spec, TaskSpec(seq_len=T, input_vocab=10, output_dim=9), budget=50000, device="meta"
                )
            split = parameter_split(model)
            assert split["params"] == split["backbone_params"] + split["lookup_params"]
            seen.add((width, split["backbone_params"]))
        assert len(seen) == 1, (name, seen)


def test_position_table_and_head_are_lookups_not_backbone(registry):
    spec = TaskSpec(seq_len=1000, input_vocab=10, output_dim=9)
    model, width = build_model(registry.model("transformer"), spec, budget=50000)
    split = parameter_split(model)
    assert split["lookup_params"] == 1000 * width + 10 * width + (width * 9 + 9)  # positions, embedding, head


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
    noisy = [
        str(w.message)
        for w in caught
        if "token" in str(w.message).lower() or "config" in str(w.message).lower()
    ]
    assert not noisy, noisy
    assert not [r for r in caplog.records if r.name.startswith("transformers")], caplog.text
