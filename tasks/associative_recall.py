"""Multi-query associative recall (MQAR, Arora et al. 2023 "Zoology"): key-value pairs, noise,
then queries (keys seen before); at each query the model must output the key's value.
Accuracy over the queries; a guess scores 1/n_values."""

import math

import torch

from suite.interfaces import Batch, Task, TaskSpec, check_positive


class AssociativeRecall(Task):
    name = "associative_recall"
    description = "multi-query associative recall: recall the value bound to each queried key (MQAR)"
    family = "long-dependency"
    primary_metric = "accuracy"
    higher_is_better = True
    success_threshold = 0.9

    param_help = {
        "seq_len": "sequence length (pairs, noise, queries)",
        "n_pairs": "key-value pairs shown before the queries",
        "n_queries": "keys queried at the end (each scored)",
        "n_keys": "distinct keys",
        "n_values": "distinct values (a guess scores 1/n_values)",
    }

    def __init__(
        self,
        seq_len: int = 64,
        n_pairs: int = 8,
        n_queries: int = 8,
        n_keys: int = 16,
        n_values: int = 16,
        seed: int = 0,
    ):
        super().__init__(seed)
        for name, value in (
            ("seq_len", seq_len),
            ("n_pairs", n_pairs),
            ("n_queries", n_queries),
            ("n_keys", n_keys),
            ("n_values", n_values),
        ):
            check_positive(f"associative_recall {name}", value)
        if seq_len < 2 * n_pairs + n_queries or n_pairs > n_keys:
            raise ValueError(
                "associative_recall needs seq_len >= 2*n_pairs + n_queries and n_pairs <= n_keys"
            )
        self.n_pairs, self.n_queries, self.n_keys, self.n_values = n_pairs, n_queries, n_keys, n_values
        vocab = 1 + n_keys + n_values  # 0 is noise; keys 1..K; values K+1..K+V
        self.spec = TaskSpec(seq_len=int(seq_len), input_vocab=vocab, output_dim=vocab)

    def sample(self, n, generator):
        T, P, Q = self.spec.seq_len, self.n_pairs, self.n_queries
        keys = torch.rand(n, self.n_keys, generator=generator).argsort(1)[:, :P] + 1
        values = torch.randint(0, self.n_values, (n, P), generator=generator) + 1 + self.n_keys
        x = torch.zeros(n, T, dtype=torch.long)
        x[:, 0 : 2 * P : 2], x[:, 1 : 2 * P : 2] = keys, values
        which = torch.randint(0, P, (n, Q), generator=generator)
        x[:, T - Q :] = keys.gather(1, which)
        y = torch.zeros_like(x)
        y[:, T - Q :] = values.gather(1, which)
        mask = torch.zeros_like(x, dtype=torch.bool)
        mask[:, T - Q :] = True
        return Batch(x, y, mask)

    def baseline(self):
        return {"loss": math.log(self.n_values), "accuracy": 1 / self.n_values}

    def baseline_name(self):
        return "uniform guess over the values"
