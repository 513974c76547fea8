"""Modular arithmetic without brackets (Delétang et al. 2023, regular): reduce an expression of numbers
in {0..4} and operators + − × modulo 5, with the usual precedence (× before + and −), as the
reference code does.

    1 + 2 × 3 = 7 ≡ 2        1 − 1 − 1 = −1 ≡ 4        0 × 1 + 4 × 3 − 2 = 10 ≡ 0

Tokens: a number v is v, an operator is modulus + its index in "+-*". A string has an odd length
(number, operator, number, ...): an even nominal length L gives L − 1 tokens, as in the reference.
One output after the string (see tasks/_length_generalization.py for the protocol)."""

from __future__ import annotations

import torch

from suite.errors import ConfigError
from suite.interfaces import check_positive
from tasks._length_generalization import LengthGeneralizationTask

OPERATORS = "+-*"


def evaluate(tokens: torch.Tensor, modulus: int = 5) -> torch.Tensor:
    """(n, L) expressions (L odd: numbers at even positions, operator tokens at odd ones) -> (n,) value
    mod `modulus`. One left-to-right pass holding (sum of the finished terms, the open term): a finite
    state machine, which is why the task is regular."""
    numbers, ops = tokens[:, 0::2], tokens[:, 1::2] - modulus
    total = torch.zeros_like(numbers[:, 0])
    term = numbers[:, 0] % modulus
    for k in range(ops.shape[1]):
        op, a = ops[:, k], numbers[:, k + 1]
        times = op == OPERATORS.index("*")
        total = torch.where(times, total, (total + term) % modulus)  # + or −: the open term is finished
        signed = torch.where(op == OPERATORS.index("-"), -a, a)
        term = torch.where(times, term * a, signed) % modulus
    return (total + term) % modulus


class ModularArithmetic(LengthGeneralizationTask):
    name = "modular_arithmetic"
    description = "an expression in + − × reduced mod 5, no brackets (regular; train 1-40, test 41-500)"
    chomsky_level = "regular"
    param_help = {
        "modulus": "numbers are 0..modulus-1 and the result is reduced modulo it (the paper: 5)",
        "operators": 'the operators drawn, a subset of "+-*" (the paper: all three)',
    }

    def __init__(
        self,
        modulus: int = 5,
        operators: str = OPERATORS,
        train_max_len: int = 40,
        test_min_len: int | None = None,
        test_max_len: int = 500,
        test_len_step: int = 1,
        test_per_length: int = 512,
        val_per_length: int = 32,
        seed: int = 0,
    ):
        check_positive("modular_arithmetic modulus", modulus, 2)
        if not operators or set(operators) - set(OPERATORS) or len(set(operators)) != len(operators):
            raise ConfigError(
                f'modular_arithmetic operators must be a subset of "{OPERATORS}", got {operators!r}'
            )
        self.modulus, self.operators = int(modulus), operators
        self.symbols, self.classes, self.chance = (
            self.modulus + len(OPERATORS),
            self.modulus,
            1 / self.modulus,
        )
        super().__init__(
            train_max_len, test_min_len, test_max_len, test_len_step, test_per_length, val_per_length, seed
        )

    def input_len(self, length):
        return length if length % 2 else length - 1

    def strings(self, n, length, generator):
        L = self.input_len(length)
        numbers = torch.randint(0, self.modulus, (n, L // 2 + 1), generator=generator)
        choice = torch.randint(0, len(self.operators), (n, L // 2), generator=generator)
        op_tokens = torch.tensor([self.modulus + OPERATORS.index(o) for o in self.operators])
        tokens = torch.empty(n, L, dtype=torch.long)
        tokens[:, 0::2], tokens[:, 1::2] = numbers, op_tokens[choice]
        return tokens, evaluate(tokens, self.modulus)[:, None], None

    def describe(self):
        return {**super().describe(), "modulus": self.modulus, "operators": self.operators}


def encode(expression: str, modulus: int = 5) -> torch.Tensor:
    """A written expression ("1+2*3", spaces ignored) -> its tokens, shape (1, L) (for tests and examples)."""
    chars = [c for c in expression if not c.isspace()]
    return torch.tensor([[modulus + OPERATORS.index(c) if c in OPERATORS else int(c) for c in chars]])
