"""Your own data: a text file, a Hugging Face dataset folder, a CSV, WikiText-2's split logic, the
ETT preset, parameters a user can discover, and bad input (one line naming the file, exit 2, nothing
written). Every file here is of our own writing, made in the test."""

import re
import tomllib

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ROOT, data_dir

from suite.cli import main
from suite.environment import environment
from suite.errors import ConfigError, DataError, PluginError
from suite.executor import RunContext, run_job
from suite.interfaces import Batch, Task, TaskSpec
from suite.jobs import Job
from tasks._lm import UNK
from tasks.csv_forecast import load_csv, ratio_borders

PROSE = (
    "A lamp burned in the window of the old mill, and the miller counted his sacks by its light. "
    "The river went on past the wheel, slow and brown, carrying leaves toward the town.\n"
)


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """`datasets` writes its Arrow cache here, not in the user's ~/.cache."""
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def _train(registry, task, params, model="nn-lstm", steps=12):
    run = RunContext(registry, torch.device("cpu"), "float32", environment(torch.device("cpu"), "float32"))
    recipe = {
        "steps": steps,
        "batch_size": 8,
        "eval_every": 6,
        "lr": 3e-3,
        "warmup": 0,
        "eval_batch_size": 64,
    }
    return run_job(
        Job(
            kind="train",
            experiment="t",
            task=task,
            model=model,
            seed=0,
            task_params=params,
            model_options={},
            param_budget=3000,
            layers=None,
            recipe=recipe,
        ),
        run,
    )


def _scored_targets(task, split):
    """The target ids the evaluation scores (masks applied)."""
    batches = task.eval_batches(split, 7)
    return torch.cat([b.y[b.mask] if b.mask is not None else b.y.reshape(-1) for b in batches])


# ---- text of your own ------------------------------------------------------------------------


def test_char_lm_on_a_text_file_vocabulary_from_the_training_split_only(tmp_path, registry):
    text = PROSE * 40 + "Quay. " * 12  # 'Q' and 'y.' only in the last 5%: the test split
    (tmp_path / "mill.txt").write_text(text, encoding="utf-8")
    params = {"path": str(tmp_path / "mill.txt"), "seq_len": 16, "eval_windows": 0}
    task = registry.make_task("char_lm", params)
    cut = int(len(text) * 0.9)
    mid = cut + (len(text) - cut) // 2
    assert task.describe()["split_sizes"] == {"train": cut, "val": mid - cut, "test": len(text) - mid}
    assert "Q" not in text[:cut] and "Q" in text[mid:]
    assert task.vocab[:-1] == sorted(set(text[:cut])) and task.vocab[-1] == UNK and "Q" not in task.vocab
    unk = task.vocab.index(UNK)
    assert task.describe()["unknown"] == {"train": 0, "val": 0, "test": text[mid:].count("Q")}
    scored = _scored_targets(task, "test")  # every test character after the first, the unknown ones too
    assert len(scored) == len(text) - mid - 1 and int((scored == unk).sum()) == text[mid + 1 :].count("Q")
    assert task.baseline()["bpc"] > 0
    rec = _train(registry, "char_lm", params)
    assert rec["status"] == "ok", rec.get("error")
    assert np.isfinite(rec["test"]["bpc"]) and rec["task_info"]["unknown"]["test"] == text[mid:].count("Q")


def test_every_token_is_scored_once_and_the_partial_window_weighs_what_it_scores(tmp_path, registry):
    (tmp_path / "t.txt").write_text(PROSE * 30)
    task = registry.make_task("char_lm", {"path": str(tmp_path / "t.txt"), "seq_len": 16, "eval_windows": 0})
    test = task.splits["test"]
    assert torch.equal(_scored_targets(task, "test"), test[1:])
    # a predictor that knows the answer on even positions only: the exact mean over tokens, any batching
    V = len(task.vocab)

    def predict(x):
        logits = torch.zeros(*x.shape, V)
        logits[:, ::2].scatter_(-1, torch.roll(x, -1, 1)[:, ::2, None], 5.0)
        return logits

    a, b = task.evaluate(predict, "test", batch_size=3), task.evaluate(predict, "test", batch_size=1000)
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)


def test_char_lm_on_a_dataset_folder_keeps_its_own_splits(tmp_path, registry, hf_cache):
    folder = tmp_path / "letters"
    folder.mkdir()
    (folder / "train.txt").write_text(PROSE * 20)
    (folder / "validation.txt").write_text(PROSE * 2)
    (folder / "test.txt").write_text(PROSE + "Xylophone.\n")
    task = registry.make_task("char_lm", {"dataset": str(folder), "seq_len": 16})
    sizes = task.describe()["split_sizes"]
    assert sizes == {"train": len(PROSE) * 20, "val": len(PROSE) * 2, "test": len(PROSE) + 11}
    assert "X" not in task.vocab and task.describe()["unknown"]["test"] == 1  # X alone is new
    whole = registry.make_task("char_lm", {"dataset": str(folder), "split": "train", "seq_len": 16})
    assert whole.describe()["split_sizes"]["train"] == int(len(PROSE) * 20 * 0.9)
    with pytest.raises(ConfigError, match="no column 'body'"):
        registry.make_task("char_lm", {"dataset": str(folder), "column": "body"})


# ---- WikiText-2 by the book ------------------------------------------------------------------


def _wikitext_folder(folder):
    """Three parquet files in WikiText-2's layout (one row per line, blank rows, <unk>), our own words."""
    folder.mkdir()
    lines = {
        "train": [
            "",
            " = The Mill = \n",
            "",
            " the miller counted his sacks . \n",
            " the river went on . \n",
            " a <unk> sang . \n",
        ],
        "validation": ["", " the river sang . \n"],
        "test": ["", " the heron counted . \n", " the river . \n"],
    }
    for split, rows in lines.items():
        pd.DataFrame({"text": rows}).to_parquet(folder / f"{split}-00000-of-00001.parquet")
    return lines


def test_wikitext2_keeps_the_official_splits_apart(tmp_path, registry, hf_cache):
    lines = _wikitext_folder(tmp_path / "wikitext-2-v1")
    task = registry.make_task("wikitext2", {"path": str(tmp_path / "wikitext-2-v1"), "seq_len": 4})
    words = {s: [w for line in rows for w in line.split() + ["<eos>"]] for s, rows in lines.items()}
    assert set(task.vocab) == set(words["train"])  # -v1: the training words, <unk> among them
    decoded = {s: [task.vocab[i] for i in task.splits[s].tolist()] for s in ("train", "val", "test")}
    assert decoded["train"] == words["train"]
    assert decoded["val"] == words["validation"]  # every validation word was seen in training
    assert decoded["test"] == [w if w in words["train"] else UNK for w in words["test"]]  # heron -> <unk>
    assert torch.equal(_scored_targets(task, "test"), task.splits["test"][1:])  # the full test split
    raw = registry.make_task(
        "wikitext2",
        {
            "path": str(tmp_path / "wikitext-2-v1"),
            "seq_len": 4,
            "min_count": 2,
            "config": "wikitext-2-raw-v1",
        },
    )
    assert set(raw.vocab) == {UNK, "<eos>", "the", ".", "="}  # the training words seen twice or more


def test_wikitext2_names_its_bits_per_word_bpw(tmp_path, registry, hf_cache):
    """One name, one meaning: bpc is bits per character (char_lm), bpw bits per word (wikitext2)."""
    _wikitext_folder(tmp_path / "wikitext-2-v1")
    task = registry.make_task("wikitext2", {"path": str(tmp_path / "wikitext-2-v1"), "seq_len": 4})
    scores = task.evaluate(lambda x: torch.zeros(*x.shape, len(task.vocab)), "test", 8, torch.device("cpu"))
    assert task.primary_metric == "bpw" and "bpw" in scores and "bpc" not in scores
    assert {"bpw", "unigram_bpw", "trigram_bpw"} <= set(task.baseline()) and "bpc" not in task.baseline()
    assert registry.task("char_lm").primary_metric == "bpc"


def test_wikitext2_offline_without_the_data_is_one_clear_error(registry, hf_cache):
    with pytest.raises(DataError, match=r"not in the local datasets cache.*LSTM_BENCH_ONLINE=1.*path="):
        registry.make_task("wikitext2", {})


# ---- series of your own ----------------------------------------------------------------------


def _sensor_csv(path, rows=400, seed=0):
    """Hourly rows; the series jump by +100 after the training rows, so a scaler fit on all rows differs."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    shift = np.where(t < int(rows * 0.7), 0.0, 100.0)
    frame = pd.DataFrame(
        {
            "stamp": pd.date_range("2024-01-01", periods=rows, freq="h").astype(str),
            "a": np.sin(t / 4) + shift,
            "b": rng.normal(size=rows),
            "c": np.cos(t / 6) + 0.5 * shift,
        }
    )
    frame.to_csv(path, index=False)
    return frame


def test_csv_forecast_with_a_chosen_target_trains_and_scales_on_training_rows(tmp_path, registry):
    frame = _sensor_csv(tmp_path / "s.csv")
    params = {"path": str(tmp_path / "s.csv"), "target": "c", "lookback": 24, "horizon": 8}
    task = registry.make_task("csv_forecast", params)
    raw = frame[["a", "b", "c"]].to_numpy()
    assert task.borders == {"train": (0, 280), "val": (256, 320), "test": (296, 400)}
    assert task.mean == pytest.approx(raw[:280].mean(0)) and task.std == pytest.approx(raw[:280].std(0))
    assert task.mean != pytest.approx(raw.mean(0))
    windows = {s: task.window_count(s) for s in ("train", "val", "test")}
    assert windows == {"train": 249, "val": 33, "test": 73}
    assert task.spec.input_dim == 3 and task.spec.output_dim == 8  # three inputs, one predicted column
    batch = next(iter(task.eval_batches("test", 4)))
    first_target_row = (raw[296 + 24 : 296 + 32, 2] - task.mean[2]) / task.std[2]
    assert batch.y[0].numpy() == pytest.approx(first_target_row, rel=1e-5)
    only = registry.make_task("csv_forecast", {**params, "columns": "c"})  # "S": the target's own past
    assert only.spec.input_dim == 1  # the linear baseline reads the target's own past either way:
    assert only.baseline()["linear_mse"] == pytest.approx(task.baseline()["linear_mse"])
    rec = _train(registry, "csv_forecast", params)
    assert rec["status"] == "ok", rec.get("error")
    assert np.isfinite(rec["test"]["mse"]) and len(rec["forecast_example"]["truth"]) == 8


def test_ratio_borders_follow_time_series_library():
    # Dataset_Custom: num_train = int(n*0.7), num_test = int(n*0.2), validation the rest; lookback L early
    assert ratio_borders(17420, (0.7, 0.1, 0.2), 96) == {
        "train": (0, 12194),
        "val": (12098, 13936),
        "test": (13840, 17420),
    }
    assert ratio_borders(720, (0.7, 0.1, 0.2), 48)["train"] == (0, 503)  # int(720*0.7) is 503 in floats


@pytest.mark.skipif(data_dir() is None, reason="reference data (../shared/data) not present")
def test_ett_preset_predicts_a_chosen_target_with_the_published_borders(registry):
    task = registry.make_task("ett", {"target": "OT"})
    assert task.borders == {"train": (0, 8640), "val": (8544, 11520), "test": (11424, 14400)}
    assert task.spec.input_dim == 7 and task.spec.output_dim == 96 and task.describe()["target"] == ["OT"]


# ---- parameters you can discover -------------------------------------------------------------


def test_describe_lists_every_parameter_with_default_and_meaning(capsys):
    assert main(["describe", "csv_forecast"]) == 0
    out = capsys.readouterr().out
    shown = (("path", "(required)"), ("target", "(unset)"), ("split", '"0.7/0.1/0.2"'), ("season", "0"))
    for name, default in shown:
        assert re.search(rf"^\s+{name}\s+{re.escape(default)}\s+\S", out, re.M), name
    plugin = str(ROOT / "tests" / "fixtures" / "example_plugin" / "parity_task.py")
    assert main(["--plugin", plugin, "list", "tasks", "--params"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^\s+seq_len\s+16\s+bits per string", out, re.M)  # a plugin's, read the same way
    assert "no description" not in out  # every built-in parameter has its line
    assert main(["describe", "nope"]) == 2


def test_param_help_naming_no_parameter_is_a_plugin_error(registry):
    class Typo(Task):
        name = "typo"
        param_help = {"seqlen": "misspelt"}

        def __init__(self, seq_len: int = 4, seed: int = 0):
            super().__init__(seed)
            self.spec = TaskSpec(seq_len=seq_len, input_vocab=2, output_dim=2)

        def sample(self, n, generator):
            return Batch(torch.zeros(n, 4, dtype=torch.long), torch.zeros(n, 4, dtype=torch.long))

        def baseline(self):
            return {"loss": 1.0}

    with pytest.raises(PluginError, match="seqlen is no parameter"):
        registry.add_task(Typo, "test")


# ---- bad input: one line naming the file, exit 2, nothing written --------------------------------


def _bad_files(tmp):
    short = tmp / "short.csv"
    _sensor_csv(short, rows=60)
    frame = _sensor_csv(tmp / "ok.csv", rows=200)
    frame.assign(b=frame["b"].astype(object).where(frame.index != 37, "n/a?")).to_csv(
        tmp / "text.csv", index=False
    )
    frame.assign(c=frame["c"].where(frame.index != 150)).to_csv(tmp / "hole.csv", index=False)
    (tmp / "blob.bin").write_bytes(bytes(range(256)) * 8)
    (tmp / "latin.txt").write_bytes(("caf\xe9 au lait. " * 200).encode("latin-1"))
    (tmp / "empty.txt").write_text("")
    return [
        ("char_lm", {"path": "blob.bin"}, "binary"),
        ("char_lm", {"path": "latin.txt"}, "not UTF-8"),
        ("char_lm", {"path": "empty.txt"}, "is empty"),
        ("csv_forecast", {"path": "empty.txt"}, "is empty"),
        ("csv_forecast", {"path": "ok.csv", "target": "OT"}, "no column 'OT'"),
        (
            "csv_forecast",
            {"path": "text.csv", "lookback": 8, "horizon": 2},
            "non-numeric value 'n/a?' at data row 38",
        ),
        (
            "csv_forecast",
            {"path": "hole.csv", "lookback": 8, "horizon": 2},
            "'c' has a missing value at data row 151",
        ),
        ("csv_forecast", {"path": "short.csv", "lookback": 24, "horizon": 8}, "val split"),
    ]


def test_bad_data_files_are_one_line_errors_naming_the_file_and_nothing_is_written(tmp_path, capsys):
    for i, (task, params, message) in enumerate(_bad_files(tmp_path)):
        params = {**params, "path": str(tmp_path / params["path"])}
        shown = ", ".join(f"{k} = {v!r}".replace("'", '"') for k, v in params.items())
        profile = tmp_path / f"bad{i}.toml"
        profile.write_text(
            f'[[experiment]]\nmodels = ["nn-lstm"]\n[[experiment.task]]\nname = "{task}"\n'
            f"params = {{ {shown} }}\n"
        )
        out = tmp_path / f"out{i}"
        assert main(["run", "--profile", str(profile), "--out", str(out)]) == 2, message
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0] and params["path"] in err[0], (message, err)
        assert not out.exists()


def test_missing_values_in_two_columns_are_counted_in_both(tmp_path):
    """18 holes in b, 12 in c (6 rows with both): the count covers the file, not the first column's."""
    frame = _sensor_csv(tmp_path / "ok.csv", rows=100)
    frame.loc[20:37, "b"] = np.nan
    frame.loc[32:43, "c"] = np.nan
    frame.to_csv(tmp_path / "holes.csv", index=False)
    with pytest.raises(DataError) as err:
        load_csv(tmp_path / "holes.csv")
    assert "column 'b' has a missing value at data row 21" in str(err.value)
    assert "24 bad rows, 30 bad cells in all ('b' 18, 'c' 12)" in str(err.value)


# ---- the README's example profiles -------------------------------------------------------------


def test_example_profiles_run_as_shipped(tmp_path, monkeypatch):
    """examples/*.toml as a user runs them from the repository root, with fewer steps and one model."""
    monkeypatch.chdir(ROOT)  # their paths are relative to the repository root
    for name in ("own_text", "own_csv"):
        text = (ROOT / "examples" / f"{name}.toml").read_text()
        task = tomllib.loads(text)["experiment"][0]["task"][0]["name"]
        text = re.sub(r"^steps = \d+", "steps = 8", text, flags=re.M)
        text = text.replace("eval_every = 50", "eval_every = 4")
        profile = tmp_path / f"{name}.toml"
        profile.write_text(text)
        out = tmp_path / name
        args = ["--out", str(out), "--model", "nn-lstm", "--seeds", "1", "--no-progress"]
        assert main(["run", "--profile", str(profile), *args]) == 0
        df = pd.read_json(out / "records.jsonl", lines=True)
        assert set(df["status"]) == {"ok"} and set(df["task"]) == {task}
