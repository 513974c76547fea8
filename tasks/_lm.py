"""Shared parts of the language-modelling tasks: a token stream split into train/val/test, random
training windows, fixed evaluation windows, bits per token, and n-gram baselines."""

from __future__ import annotations

import math
from collections import Counter

import torch

from suite.interfaces import Batch, Task, TaskSpec, check_positive

LN2 = math.log(2)


class TokenLMTask(Task):
    """Subclasses set self.ids (1-D LongTensor), self.vocab (list of symbols), self.source, then call _setup."""

    family = "language-modeling"
    primary_metric = "bpc"
    higher_is_better = False
    unit = "char"

    def _setup(self, seq_len: int, eval_windows: int, train_frac: float = 0.9):
        check_positive("seq_len", seq_len, 2)
        check_positive("eval_windows", eval_windows)
        n = len(self.ids)
        cut = int(n * train_frac)  # nanoGPT's split: first 90% train, last 10% held out
        mid = cut + (n - cut) // 2  # held-out half 1 = validation, half 2 = test
        self.splits = {"train": self.ids[:cut], "val": self.ids[cut:mid], "test": self.ids[mid:]}
        if len(self.splits["val"]) <= seq_len + 1:
            raise ValueError(f"corpus too small for seq_len={seq_len}")
        self.eval_windows = int(eval_windows)
        V = len(self.vocab)
        self.spec = TaskSpec(seq_len=int(seq_len), input_vocab=V, output_dim=V)

    def train_batch(self, batch_size, generator):
        data, T = self.splits["train"], self.spec.seq_len
        starts = torch.randint(0, len(data) - T - 1, (batch_size,), generator=generator)
        return self._windows(data, starts)

    def eval_batches(self, split, batch_size):
        data, T = self.splits[split], self.spec.seq_len
        count = min(self.eval_windows, (len(data) - 1) // T)
        starts = torch.arange(count) * T  # non-overlapping, in order: the same for every model
        for i in range(0, count, batch_size):
            yield self._windows(data, starts[i:i + batch_size])

    def _windows(self, data, starts):
        T = self.spec.seq_len
        idx = starts[:, None] + torch.arange(T + 1)
        chunk = data[idx]
        return Batch(chunk[:, :-1], chunk[:, 1:])

    def batch_metrics(self, out, batch):
        metrics = super().batch_metrics(out, batch)
        metrics["bpc"] = metrics["loss"] / LN2
        return metrics

    # ---- baselines on the same evaluation windows ----------------------------------------
    def baselines(self, split: str = "test") -> dict[str, dict]:
        return {name: self._ngram_bits(order, split) for order, name in ((1, "unigram"), (2, "bigram"), (3, "trigram"))}

    def baseline(self):
        """The strongest n-gram's scores under the metric keys, every order's bpc beside them."""
        scores = self.baselines("test")
        best = min(scores, key=lambda k: scores[k]["bpc"])
        return {**scores[best], **{f"{name}_bpc": s["bpc"] for name, s in scores.items()}, "strongest": best}

    def baseline_name(self):
        return "strongest of unigram (add-one), bigram and trigram (add-k) on the same windows"

    def threshold(self, split):
        return min(s["bpc"] for s in self.baselines(split).values())

    def _ngram_bits(self, order: int, split: str = "test", k: float = 0.1) -> dict:
        """Add-k smoothed n-gram fitted on train, scored on the evaluation windows of `split`."""
        train = self.splits["train"].tolist()
        V = len(self.vocab)
        counts, context = Counter(), Counter()
        for i in range(order - 1, len(train)):
            ctx = tuple(train[i - order + 1:i])
            counts[ctx + (train[i],)] += 1
            context[ctx] += 1
        add = 1.0 if order == 1 else k
        nats, n = 0.0, 0
        for batch in self.eval_batches(split, 256):
            for row_x, row_y in zip(batch.x.tolist(), batch.y.tolist()):
                seq = row_x + row_y[-1:]
                for i in range(len(row_y)):
                    ctx = tuple(seq[max(0, i + 1 - order + 1):i + 1]) if order > 1 else ()
                    if len(ctx) < order - 1:  # the window's first symbols: back off to what context exists
                        continue
                    p = (counts[ctx + (row_y[i],)] + add) / (context[ctx] + add * V)
                    nats -= math.log(p)
                    n += 1
        loss = nats / max(n, 1)
        return {"loss": loss, "bpc": loss / LN2, "accuracy": float("nan")}

    def describe(self):
        return {"corpus": self.source, "vocab_size": len(self.vocab), "unit": self.unit,
                "split_sizes": {k: len(v) for k, v in self.splits.items()}}
