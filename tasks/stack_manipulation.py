"""Stack manipulation (Delétang et al. 2023, deterministic context-free): a stack of bits (given bottom
to top), then actions POP / PUSH 0 / PUSH 1 (tokens 2 / 3 / 4; a POP on an empty stack does nothing);
output the final stack top to bottom, then the end symbol 2, then 0s up to L + 1 symbols. Accuracy
counts the outputs up to and including the end symbol (the reference's accuracy mask); the loss
covers all L + 1.

    0 1 1 0 PUSH1 POP POP   (tokens 0 1 1 0 4 2 2)  ->  1 1 0 END 0 0 0 0
    1 1 0 POP POP POP       (tokens 1 1 0 2 2 2)    ->  END 0 0 0 0 0 0

Sampling as the reference: a length-1 string is one bit (the stack itself); otherwise the initial
stack has 1..L−1 bits, uniform, and the rest are actions, uniform over the three."""

from __future__ import annotations

import torch

from tasks._length_generalization import LengthGeneralizationTask, random_bits

POP, PUSH0, PUSH1, END = 2, 3, 4, 2


def final_stack(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, L) strings -> (targets (n, L + 1), scored (n, L + 1)). The initial stack is the prefix of
    bits (tokens < 2); the actions follow. Runs the stack machine, vectorised over the strings."""
    n, L = tokens.shape
    rows = torch.arange(n)
    stack = torch.zeros(n, L + 1, dtype=torch.long)
    depth = torch.zeros(n, dtype=torch.long)
    for t in range(L):
        tok = tokens[:, t]
        push = (tok < 2) | (tok >= PUSH0)  # an initial bit is pushed like PUSH 0/1
        bit = torch.where(tok < 2, tok, tok - PUSH0)
        stack[rows[push], depth[push]] = bit[push]
        depth = torch.where(push, depth + 1, torch.where(tok == POP, (depth - 1).clamp(min=0), depth))
    j = torch.arange(L + 1)[None, :]
    top_first = stack.gather(1, (depth[:, None] - 1 - j).clamp(min=0))
    targets = torch.where(j < depth[:, None], top_first, 0)
    targets = torch.where(j == depth[:, None], END, targets)
    return targets, j <= depth[:, None]


class StackManipulation(LengthGeneralizationTask):
    name = "stack_manipulation"
    description = "run POP/PUSH actions on a stack, output it (deterministic context-free; train 1-40)"
    chomsky_level = "deterministic context-free"
    symbols, classes = 5, 3  # bits 0/1, POP, PUSH 0, PUSH 1 -> bits 0/1 and END
    chance = 0.5  # the stack's bits; the one END per string is neglected

    def output_len(self, length):
        return length + 1

    def strings(self, n, length, generator):
        if length == 1:
            tokens = random_bits(n, 1, generator)
        else:
            depth = torch.randint(1, length, (n, 1), generator=generator)
            bits = random_bits(n, length, generator)
            actions = torch.randint(POP, PUSH1 + 1, (n, length), generator=generator)
            tokens = torch.where(torch.arange(length)[None, :] < depth, bits, actions)
        targets, scored = final_stack(tokens)
        return tokens, targets, scored
