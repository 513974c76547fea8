"""The length-generalization family (Delétang et al. 2023): each task's label against its definition on
hand-made examples and against an independent Python reference on random strings; the protocol's
layout (inputs, then query tokens), training lengths, test lengths beyond training; the per-group
evaluation; a plugin doing the same through the same interface; and models at unseen lengths."""

import json
import random

import pandas as pd
import pytest
import torch
from conftest import FIXTURES, suite

from suite.errors import ConfigError
from suite.interfaces import Batch, Task, TaskSpec
from suite.models.sizing import build_model
from tasks._length_generalization import IGNORE
from tasks.binary_addition import binary_sum
from tasks.cycle_navigation import final_state
from tasks.even_pairs import odd_unequal_pairs
from tasks.modular_arithmetic import encode, evaluate
from tasks.parity_check import parity
from tasks.stack_manipulation import final_stack

FAMILY = [
    "parity_check",
    "even_pairs",
    "cycle_navigation",
    "modular_arithmetic",
    "reverse_string",
    "duplicate_string",
    "stack_manipulation",
    "binary_addition",
]


def _bits(text: str) -> torch.Tensor:
    return torch.tensor([[int(c) for c in text.replace(" ", "")]])


# ---- each label against its definition, on the paper's and the reference's own examples ----------


def test_parity_even_pairs_and_cycle_on_written_examples():
    assert parity(_bits("1010100")).item() == 1 and parity(_bits("01111")).item() == 0
    assert odd_unequal_pairs(_bits("001110")).item() == 0  # one 01, one 10
    assert odd_unequal_pairs(_bits("0101001")).item() == 1  # three 01, two 10
    # moves +1 −1 0 −1 −1 (actions 2 0 1 0 0) end at −2 ≡ 3; +1 +1 +1 −1 at 2
    assert final_state(_bits("20100")).item() == 3 and final_state(_bits("2220")).item() == 2


@pytest.mark.parametrize(
    "expression, value", [("1+2*3", 2), ("1-1-1", 4), ("0*1+4*3-2", 0), ("4", 4), ("2*3*4-1", 3)]
)
def test_modular_arithmetic_on_written_expressions(expression, value):
    assert evaluate(encode(expression)).item() == value


def test_modular_arithmetic_matches_python_on_random_expressions():
    """Python's own precedence (× before + and −) and modulo are the independent reference."""
    rng = random.Random(0)
    for _ in range(300):
        terms = [str(rng.randrange(5)) for _ in range(rng.randrange(1, 12))]
        text = terms[0] + "".join(rng.choice("+-*") + t for t in terms[1:])
        assert evaluate(encode(text)).item() == eval(text) % 5, text


def _stack_reference(tokens: list[int]) -> list[int]:
    stack, i = [], 0
    while i < len(tokens) and tokens[i] < 2:
        stack.append(tokens[i])
        i += 1
    for a in tokens[i:]:
        if a == 2:
            stack = stack[:-1]
        else:
            stack.append(a - 3)
    out = stack[::-1] + [2]
    return out + [0] * (len(tokens) + 1 - len(out))


def test_stack_manipulation_on_the_reference_examples_and_a_python_stack():
    targets, scored = final_stack(torch.tensor([[0, 1, 1, 0, 4, 2, 2]]))  # 0 1 1 0 PUSH1 POP POP
    assert targets.tolist() == [[1, 1, 0, 2, 0, 0, 0, 0]] and scored.sum().item() == 4
    targets, scored = final_stack(torch.tensor([[1, 1, 0, 2, 2, 2]]))  # 1 1 0 POP POP POP
    assert targets.tolist() == [[2, 0, 0, 0, 0, 0, 0]] and scored.sum().item() == 1
    task = _task("stack_manipulation")
    g = torch.Generator().manual_seed(1)
    for length in (1, 2, 7, 30):
        tokens, targets, _ = task.strings(64, length, g)
        for row, want in zip(tokens.tolist(), targets.tolist()):
            assert _stack_reference(row) == want, row
            assert row[0] < 2  # the initial stack holds at least one bit (1..L−1 of them)


def _from_bits(bits: list[int]) -> int:
    return sum(b << i for i, b in enumerate(bits))


def test_binary_addition_on_the_reference_examples_and_python_integers():
    # 001 + 01101 (little-endian: 4 + 22) = 26 = 01011, then END, then 0s up to L + 1 = 10
    targets, scored = binary_sum(_bits("001 2 01101"))
    assert targets.tolist() == [[0, 1, 0, 1, 1, 2, 0, 0, 0, 0]] and scored.sum().item() == 6
    targets, _ = binary_sum(_bits("1001 2 000001"))  # 9 + 32 = 41
    assert _from_bits(targets[0, :6].tolist()) == 41 and targets[0, 6].item() == 2
    task = _task("binary_addition")
    g = torch.Generator().manual_seed(2)
    for length in (1, 2, 3, 9, 40):
        tokens, targets, scored = task.strings(64, length, g)
        for row, out, mask in zip(tokens.tolist(), targets.tolist(), scored.tolist()):
            parts = [row] if 2 not in row else [row[: row.index(2)], row[row.index(2) + 1 :]]
            if length >= 3:
                assert len(parts) == 2 and all(_from_bits(p) >= 1 for p in parts)
            total = sum(_from_bits(p) for p in parts)
            end = out.index(2)
            assert _from_bits(out[:end]) == total and (end == 1 or out[end - 1] == 1)  # no trailing 0s
            assert sum(mask) == end + 1 and len(out) == length + 1


def test_reverse_and_duplicate():
    g = torch.Generator().manual_seed(3)
    tokens, targets, _ = _task("reverse_string").strings(4, 6, g)
    assert torch.equal(targets, tokens.flip(1))
    tokens, targets, _ = _task("duplicate_string").strings(4, 6, g)
    assert torch.equal(targets, torch.cat([tokens, tokens], 1))


# ---- the protocol ---------------------------------------------------------------------------------


def _task(name, **params):
    from suite.registry import load_registry

    return load_registry().make_task(name, params, seed=0)


@pytest.mark.parametrize("name", FAMILY)
def test_batches_hold_the_input_then_query_tokens_with_targets_only_there(name):
    task = _task(name)
    g = torch.Generator().manual_seed(0)
    lengths = set()
    for _ in range(40):
        b = task.train_batch(8, g)
        lengths.add(b.group)
        L, T = task.input_len(b.group), task.total_len(b.group)
        assert b.x.shape == (8, T)
        assert task.total_len(b.group) <= task.spec.seq_len
        assert (b.x[:, L:] == task.symbols).all() and (b.x[:, :L] < task.symbols).all()
        assert (b.y[:, :L] == IGNORE).all() and (b.y[:, L:] >= 0).all() and (b.y[:, L:] < task.classes).all()
        assert not b.mask[:, :L].any() and b.mask[:, L].all()  # the first output always counts
    assert min(lengths) >= 1 and max(lengths) <= 40 and len(lengths) > 15  # one length per batch, varied
    assert task.spec.eval_seq_len == task.total_len(500) and task.spec.causal is False


def test_modular_arithmetic_strings_have_odd_length():
    task, g = _task("modular_arithmetic"), torch.Generator().manual_seed(0)
    assert [task.strings(2, L, g)[0].shape[1] for L in (1, 2, 3, 40, 41)] == [1, 1, 3, 39, 41]


def test_splits_validation_on_training_lengths_test_on_every_longer_length():
    task = _task("parity_check", test_max_len=60, test_per_length=5, val_per_length=3)
    val = list(task.eval_batches("val", 256))
    test = list(task.eval_batches("test", 2))
    assert [b.group for b in val] == list(range(1, 41)) and all(len(b.x) == 3 for b in val)
    assert sorted({b.group for b in test}) == list(range(41, 61))
    assert sum(len(b.x) for b in test) == 20 * 5
    again = list(task.eval_batches("test", 2))
    assert all(torch.equal(a.x, b.x) for a, b in zip(test, again))  # fixed, the same for every model
    step = _task("parity_check", test_max_len=100, test_len_step=10)
    assert list(step.lengths("test")) == list(range(41, 101, 10))


def test_test_lengths_must_lie_beyond_training():
    with pytest.raises(ConfigError):
        _task("parity_check", train_max_len=40, test_min_len=30)
    with pytest.raises(ConfigError):
        _task("modular_arithmetic", operators="+/")


class _TwoGroups(Task):
    """Group "a": 3 batches of 10, every answer right; group "b": 1 batch of 2, every answer wrong."""

    name = "two_groups"
    primary_metric = "accuracy"

    def __init__(self, grouped=True, seed=0):
        super().__init__(seed)
        self.grouped = grouped
        self.spec = TaskSpec(seq_len=1, input_vocab=2, output_dim=2, readout="last")

    def eval_batches(self, split, batch_size):
        for group, n, label in (("a", 10, 1), ("a", 10, 1), ("a", 10, 1), ("b", 2, 0)):
            x = torch.ones(n, 1, dtype=torch.long)
            yield Batch(x, torch.full((n,), label), group=group if self.grouped or group == "a" else None)


def test_evaluate_by_group_weighs_each_group_once():
    predict = lambda x: torch.tensor([[0.0, 1.0]]).repeat(len(x), 1)  # always class 1
    overall, groups = _TwoGroups().evaluate_by_group(predict, "test")
    assert groups["a"]["accuracy"] == 1.0 and groups["b"]["accuracy"] == 0.0
    assert overall["accuracy"] == 0.5  # not 30/32: each group counts once
    assert _TwoGroups().evaluate(predict, "test")["accuracy"] == 0.5
    with pytest.raises(ConfigError, match="some test batches carry a group"):
        _TwoGroups(grouped=False).evaluate_by_group(predict, "test")


def test_fit_evaluates_beyond_the_training_maximum_and_records_each_length(registry):
    from suite import harness
    from suite.jobs import Recipe

    task = _task("parity_check", train_max_len=6, test_max_len=30, test_len_step=4, test_per_length=8)
    model, _ = build_model(registry.model("nn-lstm"), task.spec, width=16)
    seen = []
    forward = model.forward
    model.forward = lambda x: (seen.append(x.shape[1]), forward(x))[1]
    cfg = Recipe(steps=4, batch_size=4, eval_every=2, warmup=1)
    fit = harness.fit(cfg, 0, task, model, torch.device("cpu"), torch.float32, {"val": 0.9, "test": 0.9})
    assert sorted(map(int, fit.test_by_group)) == list(range(7, 31, 4))
    assert max(seen) == task.total_len(27) > task.spec.seq_len  # the model really ran past training
    mean = sum(g["accuracy"] for g in fit.test_by_group.values()) / len(fit.test_by_group)
    assert fit.test is not None and fit.test["accuracy"] == pytest.approx(mean)


# ---- models at unseen lengths ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["transformer-rope", "transformer-nope", "transformer-alibi", "nn-lstm"])
def test_models_run_longer_than_they_trained(registry, name):
    task = _task("parity_check", test_max_len=120)
    model, _ = build_model(registry.model(name), task.spec, budget=3000)
    b = task.batch(2, 120, torch.Generator().manual_seed(0))
    assert model(b.x).shape == (2, 121, 2)


@pytest.mark.parametrize("name", ["transformer", "hf-gpt2"])
def test_a_learned_position_table_refuses_unseen_lengths(registry, name):
    task = _task("parity_check")
    with pytest.raises(ConfigError, match="learned position table of 41 rows"):
        build_model(registry.model(name), task.spec, budget=3000)
    build_model(registry.model(name), TaskSpec(seq_len=41, input_vocab=3, output_dim=2), budget=3000)


def test_nope_encoder_ignores_order_alibi_does_not(registry):
    """Without positions a bidirectional encoder sees a bag of tokens: a permuted input gives the same
    output at the (unmoved) query position; ALiBi's distance biases break that symmetry."""
    spec = TaskSpec(seq_len=9, input_vocab=3, output_dim=2, causal=False)
    x = torch.tensor([[0, 1, 1, 0, 0, 1, 0, 1, 2]])
    y = torch.tensor([[1, 1, 0, 0, 1, 0, 1, 0, 2]])
    outs = {}
    for name in ("transformer-nope", "transformer-alibi"):
        model, _ = build_model(registry.model(name), spec, budget=3000, dtype=torch.float64)
        with torch.no_grad():
            outs[name] = (model(x)[0, -1], model(y)[0, -1])
    assert torch.allclose(*outs["transformer-nope"])
    assert not torch.allclose(*outs["transformer-alibi"])


# ---- through the command line: the plugin and the refusal -----------------------------------------


@pytest.mark.slow
def test_a_plugin_task_trains_short_tests_long_and_records_each_length(tmp_path):
    profile = tmp_path / "p.toml"
    profile.write_text(
        "seeds = 1\n[train]\nsteps = 6\nbatch_size = 8\neval_every = 3\nwarmup = 1\n"
        '[[experiment]]\nrole = "length-generalization"\nmodels = ["nn-lstm", "transformer-nope"]\n'
        'param_budget = 2000\n[[experiment.task]]\nname = "count_mod3"\n'
    )
    run = suite(
        "--plugin", FIXTURES / "length_plugin.py", "run", "--profile", profile, "--out", tmp_path / "r",
        "--no-progress", "--threads", "1",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-1500:]
    df = pd.read_json(tmp_path / "r" / "records.jsonl", lines=True)
    assert set(df["status"]) == {"ok"} and set(df["role"]) == {"length-generalization"}
    for groups, test in zip(df["test_by_group"], df["test"]):
        assert sorted(map(int, groups)) == [12, 16, 20]  # every test length beyond the training maximum
        assert test["accuracy"] == pytest.approx(sum(g["accuracy"] for g in groups.values()) / 3)
    records = [json.loads(line) for line in (tmp_path / "r" / "records.jsonl").read_text().splitlines()]
    assert {r["model"]: r["positions"] for r in records} == {"nn-lstm": None, "transformer-nope": "none"}


def test_a_learned_position_model_stops_the_run_before_anything_is_written(tmp_path):
    profile = tmp_path / "p.toml"
    profile.write_text(
        '[train]\nsteps = 2\n[[experiment]]\nmodels = ["transformer"]\nparam_budget = 2000\n'
        '[[experiment.task]]\nname = "parity_check"\n'
    )
    run = suite("run", "--profile", profile, "--out", tmp_path / "r", "--no-progress")
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "learned position table" in run.stderr, run.stderr
    assert not (tmp_path / "r").exists()
