"""Selective copy (Gu & Dao 2023, the Mamba paper): n data tokens scattered at random positions
among noise, then n delimiter positions at which the data tokens must be reproduced in order.
Accuracy over the answer; a guess scores 1/vocab."""

import math

import torch

from suite.interfaces import Batch, Task, TaskSpec, check_positive

NOISE = 0


class SelectiveCopy(Task):
    name = "selective_copy"
    description = "reproduce, in order, the data tokens scattered among noise (Mamba's selective copy)"
    family = "long-dependency"
    primary_metric = "accuracy"
    higher_is_better = True
    success_threshold = 0.95

    param_help = {
        "seq_len": "sequence length (noise, data tokens and the answer positions)",
        "n_tokens": "data tokens to reproduce, in order",
        "vocab": "distinct data tokens (a guess scores 1/vocab)",
    }

    def __init__(self, seq_len: int = 64, n_tokens: int = 8, vocab: int = 8, seed: int = 0):
        super().__init__(seed)
        for name, value in (("seq_len", seq_len), ("n_tokens", n_tokens), ("vocab", vocab)):
            check_positive(f"selective_copy {name}", value)
        if seq_len < 2 * n_tokens:
            raise ValueError(f"selective_copy seq_len must be >= 2*n_tokens ({2 * n_tokens}), got {seq_len}")
        self.n_tokens, self.vocab = int(n_tokens), int(vocab)
        self.delim = self.vocab + 1
        self.spec = TaskSpec(seq_len=int(seq_len), input_vocab=self.vocab + 2, output_dim=self.vocab + 1)

    def sample(self, n, generator):
        T, k = self.spec.seq_len, self.n_tokens
        body = T - k
        tokens = torch.randint(1, self.vocab + 1, (n, k), generator=generator)
        positions = torch.rand(n, body, generator=generator).argsort(1)[:, :k].sort(1).values
        x = torch.full((n, T), NOISE, dtype=torch.long)
        x.scatter_(1, positions, tokens)
        x[:, body:] = self.delim
        y = torch.zeros_like(x)
        y[:, body:] = tokens
        mask = torch.zeros_like(x, dtype=torch.bool)
        mask[:, body:] = True
        return Batch(x, y, mask)

    def baseline(self):
        return {"loss": math.log(self.vocab), "accuracy": 1 / self.vocab}

    def baseline_name(self):
        return "uniform guess over the data tokens"
