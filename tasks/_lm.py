"""Shared parts of the language-modelling tasks: token streams split into train/val/test, random
training windows, fixed evaluation windows, bits per token, and n-gram baselines.

A vocabulary comes from the training split only; a symbol of val/test never seen in training maps
to one unknown symbol (`UNK`), whose probability the models and n-grams must pay for like any other."""

from __future__ import annotations

import math

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from suite.errors import DataError
from suite.interfaces import Batch, Task, TaskSpec, check_positive

LN2 = math.log(2)
UNK = "<unk>"
SPLITS = ("train", "val", "test")


def split_points(n: int, train_frac: float = 0.9) -> tuple[int, int]:
    """nanoGPT's split of one stream of n tokens: the first 90% train; the held-out rest is halved,
    first half validation, second half test. Returns the two cut points."""
    cut = int(n * train_frac)
    return cut, cut + (n - cut) // 2


class TokenLMTask(Task):
    """Subclasses set self.source and call _setup with the token ids of each split and the
    vocabulary (built from the training split)."""

    source: str  # where the text came from, as errors and describe() name it
    family = "language-modeling"
    primary_metric = "bpc"  # bits per token, named for the unit: bpc (char), bpw (word)
    higher_is_better = False
    unit = "char"
    param_help = {
        "seq_len": "tokens per window: the context a model sees in training and evaluation",
        "eval_windows": "evaluation windows of seq_len tokens per split; 0 = every token of it",
    }

    def _setup(self, splits: dict[str, torch.Tensor], vocab: list[str], seq_len: int, eval_windows: int):
        check_positive("seq_len", seq_len, 2)
        check_positive("eval_windows", eval_windows, 0)
        self.splits, self.vocab = splits, vocab
        for split in SPLITS:
            if len(splits[split]) <= seq_len + 1:
                raise DataError(
                    f"{self.source}: the {split} split has {len(splits[split])} {self.unit}s, "
                    f"too few for seq_len={seq_len} (it needs more than {seq_len + 1}); use a "
                    f"longer text or a smaller seq_len"
                )
        self.eval_windows = int(eval_windows)
        V = len(self.vocab)
        self.spec = TaskSpec(seq_len=int(seq_len), input_vocab=V, output_dim=V)

    def train_batch(self, batch_size, generator):
        data, T = self.splits["train"], self.spec.seq_len
        starts = torch.randint(0, len(data) - T - 1, (batch_size,), generator=generator)
        return self._windows(data, starts)

    def eval_batches(self, split, batch_size):
        """Non-overlapping windows in order, the same for every model: the first eval_windows of
        them, or (eval_windows=0) all of them plus one last window, masked to the tokens not yet
        scored, so that every token after the split's first is predicted exactly once."""
        data, T = self.splits[split], self.spec.seq_len
        full = (len(data) - 1) // T
        count = min(self.eval_windows, full) if self.eval_windows else full
        starts = torch.arange(count) * T
        for i in range(0, count, batch_size):
            yield self._windows(data, starts[i : i + batch_size])
        rest = len(data) - 1 - full * T
        if not self.eval_windows and rest:
            tail = self._windows(data, torch.tensor([len(data) - 1 - T]))
            mask = torch.zeros(1, T, dtype=torch.bool)
            mask[:, T - rest :] = True
            yield Batch(tail.x, tail.y, mask)

    def _windows(self, data, starts):
        T = self.spec.seq_len
        idx = starts[:, None] + torch.arange(T + 1)
        chunk = data[idx]
        return Batch(chunk[:, :-1], chunk[:, 1:])

    def batch_metrics(self, out, batch):
        metrics = super().batch_metrics(out, batch)
        metrics[self.primary_metric] = metrics["loss"] / LN2
        return metrics

    # ---- baselines on the same evaluation windows ----------------------------------------
    def baselines(self, split: str = "test") -> dict[str, dict]:
        return {
            name: self._ngram_bits(order, split)
            for order, name in ((1, "unigram"), (2, "bigram"), (3, "trigram"))
        }

    def baseline(self):
        """The strongest n-gram's scores under the metric keys, every order's bits beside them."""
        scores, bits = self.baselines("test"), self.primary_metric
        best = min(scores, key=lambda k: scores[k][bits])
        return {
            **scores[best],
            **{f"{name}_{bits}": s[bits] for name, s in scores.items()},
            "strongest": best,
        }

    def baseline_name(self):
        return "strongest of unigram (add-one), bigram and trigram (add-k) on the same windows"

    def threshold(self, split):
        return min(s[self.primary_metric] for s in self.baselines(split).values())

    def _ngram_bits(self, order: int, split: str = "test", k: float = 0.1) -> dict:
        """Add-k smoothed n-gram fitted on train, scored on the evaluation windows of `split`; a
        window's first symbols back off to the context the window holds, as a model sees it."""
        V = len(self.vocab)
        weights = V ** np.arange(order - 1, -1, -1, dtype=np.int64)  # an n-gram as one integer code
        grams = sliding_window_view(self.splits["train"].numpy().astype(np.int64), order) @ weights
        gram_keys, gram_counts = np.unique(grams, return_counts=True)
        ctx_keys, ctx_counts = np.unique(grams // V, return_counts=True)  # contexts that were followed
        add = 1.0 if order == 1 else k
        nats, n = 0.0, 0
        for batch in self.eval_batches(split, 4096):
            chunk = torch.cat([batch.x, batch.y[:, -1:]], 1).numpy().astype(np.int64)  # (B, T+1)
            codes = sliding_window_view(chunk, order, axis=1) @ weights  # window s predicts y[:, s+order-2]
            first = max(0, 2 - order)
            codes = codes[:, first:]
            if batch.mask is not None:
                codes = codes[batch.mask[:, first + order - 2 :].numpy()]
            hits = _lookup(gram_keys, gram_counts, codes)
            p = (hits + add) / (_lookup(ctx_keys, ctx_counts, codes // V) + add * V)
            nats -= np.log(p).sum()
            n += codes.size
        loss = float(nats / max(n, 1))
        return {"loss": loss, self.primary_metric: loss / LN2, "accuracy": float("nan")}

    def describe(self):
        info = {
            "corpus": self.source,
            "vocab_size": len(self.vocab),
            "unit": self.unit,
            "split_sizes": {k: len(v) for k, v in self.splits.items()},
        }
        if UNK in self.vocab:  # how many held-out tokens the training vocabulary did not know
            unk = self.vocab.index(UNK)
            info["unknown"] = {k: int((v == unk).sum()) for k, v in self.splits.items()}
        return info


def _lookup(keys: np.ndarray, counts: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """counts[codes] for sorted unique keys, 0 where a code never occurred."""
    pos = np.searchsorted(keys, codes).clip(max=len(keys) - 1)
    return np.where(keys[pos] == codes, counts[pos], 0).astype(np.float64)
