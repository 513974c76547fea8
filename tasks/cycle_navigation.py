"""Cycle navigation (Delétang et al. 2023, regular): walk on a cycle of 5 states from state 0; each
action is 0 = one step left, 1 = stay, 2 = one step right (the reference's actions − 1); the output
is the final state.

    2 0 1 0 0 -> +1 −1 0 −1 −1 = −2 -> state 3        2 2 2 0 -> 2 -> state 2

One output after the string (see tasks/_length_generalization.py for the protocol)."""

from __future__ import annotations

import torch

from tasks._length_generalization import LengthGeneralizationTask, random_bits

CYCLE = 5


def final_state(actions: torch.Tensor, cycle: int = CYCLE) -> torch.Tensor:
    """(n, L) actions in {0, 1, 2} -> (n,) final state in [0, cycle)."""
    return (actions - 1).sum(1) % cycle


class CycleNavigation(LengthGeneralizationTask):
    name = "cycle_navigation"
    description = "final state of a walk on a 5-cycle (regular; train lengths 1-40, test 41-500)"
    chomsky_level = "regular"
    symbols, classes, chance = 3, CYCLE, 1 / CYCLE

    def strings(self, n, length, generator):
        actions = random_bits(n, length, generator, vocab=3)
        return actions, final_state(actions)[:, None], None
