"""Duplicate string (Delétang et al. 2023, context-sensitive): output the input string twice.

    101 -> 101101

Binary strings as in the paper; the output has 2L symbols, read at 2L query tokens after the string
(see tasks/_length_generalization.py for the protocol)."""

from __future__ import annotations

import torch

from tasks.reverse_string import ReverseString


class DuplicateString(ReverseString):
    name = "duplicate_string"
    description = "output the string twice (context-sensitive; train lengths 1-40, test 41-500)"
    chomsky_level = "context-sensitive"

    def output_len(self, length):
        return 2 * length

    def target(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.cat([inputs, inputs], 1)
