"""Binary addition (Delétang et al. 2023, context-sensitive): two numbers in little-endian binary
joined by "+" (token 2); output their sum in little-endian binary without trailing 0s, then the end
symbol 2, then 0s up to L + 1 symbols. Accuracy counts the outputs up to and including the end
symbol (the reference's accuracy mask); the loss covers all L + 1.

    0 0 1 + 0 1 1 0 1   (4 + 22)  ->  0 1 0 1 1 END 0 0 0 0   (26)

Sampling as the reference: for L <= 2 the string is one number in [0, 2^L − 1) (no "+") and the
output is that number; otherwise the first number takes 1..L−2 digits (uniform), the second the
rest, each uniform over [1, 2^digits − 1], written with leading 0s (trailing, little-endian)."""

from __future__ import annotations

import torch

from tasks._length_generalization import LengthGeneralizationTask, random_bits

PLUS, END = 2, 2


def _value_bits(tokens: torch.Tensor, start: torch.Tensor, stop: torch.Tensor, width: int) -> torch.Tensor:
    """The little-endian digits tokens[start:stop] of each row, zero-padded to `width`."""
    j = torch.arange(width)[None, :]
    idx = (start[:, None] + j).clamp(max=tokens.shape[1] - 1)
    return torch.where(j < (stop - start)[:, None], tokens.gather(1, idx), 0)


def binary_sum(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, L) strings -> (targets (n, L + 1), scored (n, L + 1)): ripple-carry addition of the numbers
    left and right of "+" (a string without "+" is one number plus 0), vectorised over the strings."""
    n, L = tokens.shape
    is_plus = tokens == PLUS
    plus = torch.where(is_plus.any(1), is_plus.int().argmax(1), torch.full((n,), L))
    zero = torch.zeros(n, dtype=torch.long)
    a = _value_bits(tokens, zero, plus, L + 1)
    b = _value_bits(tokens, plus + 1, torch.full((n,), L), L + 1)
    digits, carry = torch.zeros(n, L + 1, dtype=torch.long), zero
    for k in range(L + 1):
        s = a[:, k] + b[:, k] + carry
        digits[:, k], carry = s % 2, s // 2
    j = torch.arange(L + 1)[None, :]
    highest = torch.where(digits.bool(), j, -1).max(1).values
    length = highest.clamp(min=0) + 1  # the value 0 is written "0"
    targets = torch.where(j < length[:, None], digits, 0)
    targets = torch.where(j == length[:, None], END, targets)
    return targets, j <= length[:, None]


def _nonzero_bits(n: int, width: torch.Tensor, L: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform over [1, 2^width − 1] per row (width digits, little-endian, padded to L): rejection of 0."""
    j = torch.arange(L)[None, :]
    bits = torch.where(j < width[:, None], random_bits(n, L, generator), 0)
    while (zero := bits.sum(1) == 0).any():
        redo = torch.where(j < width[zero][:, None], random_bits(int(zero.sum()), L, generator), 0)
        bits[zero] = redo
    return bits


class BinaryAddition(LengthGeneralizationTask):
    name = "binary_addition"
    description = "add two little-endian binary numbers (context-sensitive; train lengths 1-40, test 41-500)"
    chomsky_level = "context-sensitive"
    symbols, classes = 3, 3  # digits and "+" -> digits and END
    chance = 0.5  # the digits; the one END per string is neglected

    def output_len(self, length):
        return length + 1

    def strings(self, n, length, generator):
        if length <= 2:
            values = torch.randint(0, 2**length - 1, (n, 1), generator=generator)
            tokens = (values >> torch.arange(length)[None, :]) & 1
        else:
            first = torch.randint(1, length - 1, (n,), generator=generator)
            a = _nonzero_bits(n, first, length, generator)
            b = _nonzero_bits(n, length - 1 - first, length, generator)
            j = torch.arange(length)[None, :]
            shifted = b.gather(1, (j - first[:, None] - 1).clamp(min=0))
            tokens = torch.where(j < first[:, None], a, torch.where(j == first[:, None], PLUS, shifted))
        targets, scored = binary_sum(tokens)
        return tokens, targets, scored
