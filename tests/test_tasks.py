"""The task library: determinism per seed, closed-form baselines, the ETT protocol, data errors."""

import math

import pytest
import torch
from conftest import data_dir, suite

GENERATED = [
    ("copy_memory", {"delay": 12}),
    ("adding", {"seq_len": 20}),
    ("selective_copy", {}),
    ("associative_recall", {}),
    ("mackey_glass", {"length": 800, "lookback": 16, "horizon": 4}),
]


@pytest.mark.parametrize("name,params", GENERATED)
def test_generators_deterministic_per_seed(registry, name, params):
    a, b, c = (registry.make_task(name, params, seed=s) for s in (0, 0, 1))
    ba, bb = (
        a.train_batch(8, torch.Generator().manual_seed(5)),
        b.train_batch(8, torch.Generator().manual_seed(5)),
    )
    assert torch.equal(ba.x, bb.x) and torch.equal(ba.y, bb.y)
    va, vc = next(iter(a.eval_batches("val", 64))), next(iter(c.eval_batches("val", 64)))
    assert not torch.equal(va.x, vc.x), "different seeds must give different data"
    assert not torch.equal(next(iter(a.eval_batches("val", 64))).x, next(iter(a.eval_batches("test", 64))).x)


def test_copy_memory_baseline_is_the_memoryless_closed_form(registry):
    task = registry.make_task("copy_memory", {"delay": 30})
    batch = task.train_batch(256, torch.Generator().manual_seed(0))
    # memoryless: blank (prob 1) before the answer, uniform over the 8 symbols on it
    logits = torch.full(batch.y.shape + (9,), -1e9)
    logits[..., 0] = 0.0
    logits[batch.mask] = torch.tensor([-1e9] + [0.0] * 8)
    metrics = task.batch_metrics(logits, batch)
    assert math.isclose(metrics["loss"], 10 * math.log(8) / 50, rel_tol=1e-5)
    assert math.isclose(task.baseline()["loss"], 10 * math.log(8) / 50)
    assert task.baseline()["accuracy"] == 1 / 8


def test_adding_baseline_is_one_sixth(registry):
    task = registry.make_task("adding", {"seq_len": 50})
    batch = task.train_batch(200_000, torch.Generator().manual_seed(0))
    assert abs(((batch.y - 1) ** 2).mean().item() - 1 / 6) < 2e-3
    assert task.baseline()["mse"] == pytest.approx(1 / 6)
    assert torch.all(batch.x[..., 1].sum(1) == 2)


def test_char_lm_embedded_corpus_offline(registry):
    task = registry.make_task("char_lm", {"seq_len": 32, "eval_windows": 16})
    base = task.baseline()
    assert base["unigram_bpc"] > base["bigram_bpc"] > base["trigram_bpc"] > 0
    assert (
        base["bpc"] == base["trigram_bpc"] and base["strongest"] == "trigram"
    )  # the headline is the strongest
    assert task.threshold("val") != task.threshold("test")  # thresholds are scored on the split they judge
    assert "embedded" in task.describe()["corpus"]


@pytest.mark.skipif(data_dir() is None, reason="reference data (../shared/data) not present")
def test_tinyshakespeare_split_as_nanogpt(registry):
    task = registry.make_task("char_lm", {"corpus": "tinyshakespeare"})
    sizes = task.describe()["split_sizes"]
    assert sizes["train"] == 1_003_854 and sizes["val"] + sizes["test"] == 111_540
    assert len(task.vocab) == 65


@pytest.mark.skipif(data_dir() is None, reason="reference data (../shared/data) not present")
def test_ett_protocol_split_sizes_and_train_only_scaler(registry):
    import pandas as pd

    task = registry.make_task("ett", {"dataset": "ETTh1", "lookback": 96, "horizon": 96})
    assert {s: task.window_count(s) for s in ("train", "val", "test")} == {
        "train": 8449,
        "val": 2785,
        "test": 2785,
    }
    raw = pd.read_csv(data_dir() / "ETT-small" / "ETTh1.csv").drop(columns=["date"]).to_numpy()
    assert task.mean == pytest.approx(raw[:8640].mean(0))
    assert task.std == pytest.approx(raw[:8640].std(0), rel=1e-6)
    assert task.mean != pytest.approx(raw.mean(0))
    base = task.baseline()
    # least-squares linear, DLinear's function class (published 0.386 at lookback 96); deterministic
    assert base["linear_mse"] == pytest.approx(0.3815, abs=1e-4)
    assert base["mse"] == base["linear_mse"] and base["strongest"] == "linear"
    assert base["naive_mse"] == pytest.approx(1.2944, abs=1e-4)
    assert task.threshold("val") != task.threshold("test")


def test_corrupt_and_missing_data_give_one_line_errors(tmp_path):
    bad = tmp_path / "tinyshakespeare"
    bad.mkdir()
    (bad / "input.txt").write_text("not the corpus")
    from suite.errors import DataError
    from suite.registry import load_registry

    reg = load_registry()
    import os

    os.environ["LSTM_BENCH_DATA_DIR"], saved = str(tmp_path), os.environ.get("LSTM_BENCH_DATA_DIR")
    try:
        assert reg.make_task("char_lm", {}).describe()  # the default is the embedded corpus: no file read
        with pytest.raises(DataError, match="corrupt"):
            reg.make_task("char_lm", {"corpus": "tinyshakespeare"})
        (bad / "input.txt").write_text("")
        with pytest.raises(DataError, match="empty"):
            reg.make_task("char_lm", {"corpus": "tinyshakespeare"})
        (bad / "input.txt").unlink()
        with pytest.raises(DataError, match="LSTM_BENCH_DATA_DIR"):
            reg.make_task("ett", {})
    finally:
        if saved is None:
            del os.environ["LSTM_BENCH_DATA_DIR"]
        else:
            os.environ["LSTM_BENCH_DATA_DIR"] = saved


def test_list_tasks_shows_every_task_with_a_description():
    proc = suite("list", "tasks")
    assert proc.returncode == 0
    for name in (
        "copy_memory",
        "adding",
        "selective_copy",
        "associative_recall",
        "char_lm",
        "wikitext2",
        "ett",
        "csv_forecast",
        "mackey_glass",
        "sunspots",
    ):
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith(name + " "))
        assert len(line.split()) > 3
