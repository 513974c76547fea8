"""Parity check (Delétang et al. 2023, regular): is the number of 1s in a binary string odd?

    1010100 -> three 1s -> 1        01111 -> four 1s -> 0

One output after the string (see tasks/_length_generalization.py for the protocol)."""

from __future__ import annotations

import torch

from tasks._length_generalization import LengthGeneralizationTask, random_bits


def parity(bits: torch.Tensor) -> torch.Tensor:
    """(n, L) bits -> (n,) 1 when the count of 1s is odd."""
    return bits.sum(1) % 2


class ParityCheck(LengthGeneralizationTask):
    name = "parity_check"
    description = "is the number of 1s odd? (regular; train lengths 1-40, test 41-500)"
    chomsky_level = "regular"

    def strings(self, n, length, generator):
        bits = random_bits(n, length, generator)
        return bits, parity(bits)[:, None], None
