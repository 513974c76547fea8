"""Even pairs (Delétang et al. 2023, regular): is the number of "01" and "10" pairs in a binary string
even? Output 0 when even, 1 when odd (the same as: do the first and the last bit differ?).

    001110 -> one 01, one 10 -> 0        0101001 -> "10" twice, "01" three times -> 1

One output after the string (see tasks/_length_generalization.py for the protocol)."""

from __future__ import annotations

import torch

from tasks._length_generalization import LengthGeneralizationTask, random_bits


def odd_unequal_pairs(bits: torch.Tensor) -> torch.Tensor:
    """(n, L) bits -> (n,) 1 when the count of unequal neighbours (01 or 10) is odd."""
    return (bits[:, 1:] != bits[:, :-1]).sum(1) % 2


class EvenPairs(LengthGeneralizationTask):
    name = "even_pairs"
    description = "is the number of 01 and 10 pairs even? (regular; train lengths 1-40, test 41-500)"
    chomsky_level = "regular"

    def strings(self, n, length, generator):
        bits = random_bits(n, length, generator)
        return bits, odd_unequal_pairs(bits)[:, None], None
