"""Reverse string (Delétang et al. 2023, deterministic context-free): output the input string reversed.

    011010 -> 010110

Binary strings as in the paper; the output has L symbols, read at L query tokens after the string
(see tasks/_length_generalization.py for the protocol)."""

from __future__ import annotations

import torch

from suite.interfaces import check_positive
from tasks._length_generalization import LengthGeneralizationTask, random_bits


class ReverseString(LengthGeneralizationTask):
    name = "reverse_string"
    description = "output the string reversed (deterministic context-free; train 1-40, test 41-500)"
    chomsky_level = "deterministic context-free"
    param_help = {"vocab": "alphabet size of the strings (the paper: 2)"}

    def __init__(
        self,
        vocab: int = 2,
        train_max_len: int = 40,
        test_min_len: int | None = None,
        test_max_len: int = 500,
        test_len_step: int = 1,
        test_per_length: int = 512,
        val_per_length: int = 32,
        seed: int = 0,
    ):
        check_positive(f"{self.name} vocab", vocab, 2)
        self.vocab = self.symbols = self.classes = int(vocab)
        self.chance = 1 / self.vocab
        super().__init__(
            train_max_len, test_min_len, test_max_len, test_len_step, test_per_length, val_per_length, seed
        )

    def output_len(self, length):
        return length

    def target(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs.flip(1)

    def strings(self, n, length, generator):
        inputs = random_bits(n, length, generator, self.vocab)
        return inputs, self.target(inputs), None
