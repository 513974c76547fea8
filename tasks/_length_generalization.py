"""The shared base of the length-generalization tasks (Delétang et al., "Neural Networks and the Chomsky
Hierarchy", ICLR 2023; reference code google-deepmind/neural_networks_chomsky_hierarchy).

The protocol, which every task of the family follows:

  * a task maps an input string of nominal length L to an output string of output_len(L) symbols;
  * the model sees the whole input, then output_len(L) blank query tokens (one extra input symbol);
    the outputs are read at those query positions ("the output positions appended after the input",
    as the reference's make_model_with_empty_targets does). The input positions carry no target;
  * training: every batch has one length, drawn uniformly from 1..train_max_len (40 in the paper);
  * validation: every training length 1..train_max_len, val_per_length strings each (so no choice,
    neither the checkpoint nor a tuned learning rate, ever sees a length longer than training);
  * test: every length of test_min_len..test_max_len (41..500 in the paper; test_len_step > 1 keeps
    every k-th), test_per_length strings each (512 in the paper). Each batch carries its length as
    Batch.group, so the score (the record's test `accuracy`) is the mean over test lengths of the
    per-token accuracy at that length, and the record keeps the per-length accuracies
    (`test_by_group`) for the accuracy-against-length plot;
  * solved at >= 90% (the paper's threshold).

Loss: cross-entropy over every output position (as the reference's loss over the whole output);
accuracy over the scored ones (all of them, except after the end-of-output symbol where a task has one).
The Transformer sees the input bidirectionally (TaskSpec.causal False: the paper's Transformer is an
encoder); a recurrent model reads left to right and answers after the whole input, at the query tokens.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import ClassVar

import torch
import torch.nn.functional as F

from suite.errors import ConfigError
from suite.interfaces import Batch, Task, TaskSpec, check_positive, split_seed

IGNORE = -100  # target of an input position: no loss, no score


class LengthGeneralizationTask(Task):
    """A task of the family: subclasses set the class attributes and implement `strings`."""

    family = "length-generalization"
    primary_metric = "accuracy"
    higher_is_better = True
    success_threshold = 0.9  # Delétang et al.: a task counts as solved at >= 90% accuracy
    eval_size = 0  # unused: the splits are sized per length (val_per_length, test_per_length)

    chomsky_level: ClassVar[str] = ""  # "regular", "deterministic context-free", "context-sensitive"
    symbols: int = 2  # the input alphabet; the blank query token is one more (id = symbols)
    classes: int = 2  # output symbols
    chance: float = 0.5  # per-token accuracy of a uniform guess over the outputs that occur

    param_help = {
        "train_max_len": "training strings have length 1..train_max_len, uniform, one length per batch",
        "test_min_len": "shortest test length (default train_max_len + 1)",
        "test_max_len": "longest test length (the paper: 500)",
        "test_len_step": "test every k-th length of test_min_len..test_max_len (1: every length, the paper)",
        "test_per_length": "test strings per length (the paper: 512)",
        "val_per_length": "validation strings per training length (validation uses the training lengths)",
    }

    def __init__(
        self,
        train_max_len: int = 40,
        test_min_len: int | None = None,
        test_max_len: int = 500,
        test_len_step: int = 1,
        test_per_length: int = 512,
        val_per_length: int = 32,
        seed: int = 0,
    ):
        super().__init__(seed)
        for name, value in (
            ("train_max_len", train_max_len),
            ("test_max_len", test_max_len),
            ("test_len_step", test_len_step),
            ("test_per_length", test_per_length),
            ("val_per_length", val_per_length),
        ):
            check_positive(f"{self.name} {name}", value)
        self.train_max_len, self.test_max_len = int(train_max_len), int(test_max_len)
        self.test_min_len = int(test_min_len) if test_min_len is not None else self.train_max_len + 1
        self.test_len_step = int(test_len_step)
        self.test_per_length, self.val_per_length = int(test_per_length), int(val_per_length)
        if not self.train_max_len < self.test_min_len <= self.test_max_len:
            raise ConfigError(
                f"{self.name}: test lengths must lie beyond training: train_max_len < test_min_len <= "
                f"test_max_len, got {self.train_max_len}, {self.test_min_len}, {self.test_max_len}"
            )
        train_longest = max(self.total_len(n) for n in range(1, self.train_max_len + 1))
        test_longest = max(self.total_len(n) for n in self.lengths("test"))
        self.spec = TaskSpec(
            seq_len=train_longest,
            eval_seq_len=max(train_longest, test_longest),
            input_vocab=self.symbols + 1,
            output_dim=self.classes,
            readout="all",
            causal=False,
        )

    # ---- what a task defines -------------------------------------------------------------------
    def strings(
        self, n: int, length: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """n random input strings of nominal length `length`: (inputs (n, input_len) int64 in
        [0, symbols), targets (n, output_len) int64 in [0, classes), scored (n, output_len) bool or
        None for all)."""
        raise NotImplementedError

    def input_len(self, length: int) -> int:
        return length

    def output_len(self, length: int) -> int:
        return 1

    # ---- the protocol ------------------------------------------------------------------------
    def total_len(self, length: int) -> int:
        return self.input_len(length) + self.output_len(length)

    def lengths(self, split: str) -> range:
        if split == "val":
            return range(1, self.train_max_len + 1)
        return range(self.test_min_len, self.test_max_len + 1, self.test_len_step)

    def batch(self, n: int, length: int, generator: torch.Generator) -> Batch:
        """Inputs, then one blank query token per output symbol; targets and scores on the queries only."""
        inputs, targets, scored = self.strings(n, length, generator)
        L, O = inputs.shape[1], targets.shape[1]
        x = torch.cat([inputs, torch.full((n, O), self.symbols, dtype=torch.long)], 1)
        y = torch.cat([torch.full((n, L), IGNORE, dtype=torch.long), targets], 1)
        mask = torch.zeros(n, L + O, dtype=torch.bool)
        mask[:, L:] = True if scored is None else scored
        return Batch(x, y, mask, group=length)

    def train_batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        length = int(torch.randint(1, self.train_max_len + 1, (1,), generator=generator))
        return self.batch(batch_size, length, generator)

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        """Every length of the split, `per_length` strings each, from the split's own seed."""
        g = torch.Generator().manual_seed(split_seed(self.seed, split))
        per_length = self.val_per_length if split == "val" else self.test_per_length
        for length in self.lengths(split):
            left = per_length
            while left > 0:
                n = min(batch_size, left)
                yield self.batch(n, length, g)
                left -= n

    # ---- scoring -----------------------------------------------------------------------------
    def loss(self, out: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Mean cross-entropy over every output position (the inputs' targets are IGNORE)."""
        return F.cross_entropy(
            out.reshape(-1, out.shape[-1]).float(), batch.y.reshape(-1), ignore_index=IGNORE
        )

    def batch_metrics(self, out: torch.Tensor, batch: Batch) -> dict[str, float]:
        assert batch.mask is not None
        correct = out[batch.mask].argmax(-1) == batch.y[batch.mask]
        return {"loss": self.loss(out, batch).item(), "accuracy": correct.float().mean().item()}

    def baseline(self) -> dict[str, float]:
        return {"accuracy": self.chance, "loss": math.log(self.classes)}

    def baseline_name(self) -> str:
        return "chance (a uniform guess)"

    def describe(self) -> dict:
        step = f" every {self.test_len_step}" if self.test_len_step > 1 else ""
        return {
            "chomsky_level": self.chomsky_level,
            "train_lengths": f"1..{self.train_max_len}",
            "test_lengths": f"{self.test_min_len}..{self.test_max_len}{step}, "
            f"{self.test_per_length} per length",
            "protocol": "training: one length per batch, uniform over the training lengths; validation: "
            f"every training length, {self.val_per_length} strings each; score: mean over the test lengths "
            "of the per-token accuracy, solved at >= 90%; input: the string, then one blank query token per "
            "output symbol (outputs read there); Transformers attend bidirectionally (an encoder, as in "
            "Delétang et al.)",
        }


def random_bits(n: int, length: int, generator: torch.Generator, vocab: int = 2) -> torch.Tensor:
    return torch.randint(0, vocab, (n, length), generator=generator)
