"""Copy memory (Hochreiter & Schmidhuber 1997; protocol of Arjovsky et al. 2016 and the TCN paper).

Input (length T+20): 10 symbols from an alphabet of 8, T−1 blanks, a delimiter, 10 blanks.
Target: blanks for T+10 steps, then the 10 symbols. Cross-entropy over all positions; accuracy
per symbol over the 10 answer positions. A memoryless model that outputs blanks and then guesses
uniformly scores 10·ln 8 / (T+20) and accuracy 1/8.
"""

import math

import torch
import torch.nn.functional as F

from suite.interfaces import Batch, Task, TaskSpec, check_positive

BLANK, DELIM, N_SYMBOLS, N_COPY = 0, 9, 8, 10


class CopyMemory(Task):
    name = "copy_memory"
    description = "copy 10 symbols (alphabet 8) after a blank delay of T steps; accuracy over the answer"
    family = "long-dependency"
    primary_metric = "accuracy"
    higher_is_better = True
    success_threshold = 0.99

    param_help = {"delay": "blank steps between the symbols and the delimiter (sequence length delay + 20)"}

    def __init__(self, delay: int = 50, seed: int = 0):
        super().__init__(seed)
        check_positive("copy_memory delay", delay)
        self.delay = int(delay)
        self.spec = TaskSpec(seq_len=self.delay + 2 * N_COPY, input_vocab=10, output_dim=N_SYMBOLS + 1)

    def sample(self, n, generator):
        T = self.delay
        symbols = torch.randint(1, N_SYMBOLS + 1, (n, N_COPY), generator=generator)
        x = torch.zeros(n, T + 2 * N_COPY, dtype=torch.long)
        y = torch.zeros_like(x)
        x[:, :N_COPY] = symbols
        x[:, T + N_COPY - 1] = DELIM
        y[:, -N_COPY:] = symbols
        answer = torch.zeros_like(x, dtype=torch.bool)
        answer[:, -N_COPY:] = True
        return Batch(x, y, answer)

    def loss(self, out, batch):  # over every position, as in the protocol
        return F.cross_entropy(out.reshape(-1, out.shape[-1]).float(), batch.y.reshape(-1))

    def batch_metrics(self, out, batch):
        acc = (out[batch.mask].argmax(-1) == batch.y[batch.mask]).float().mean().item()
        return {"loss": self.loss(out, batch).item(), "accuracy": acc}

    def baseline(self):
        return {"loss": N_COPY * math.log(N_SYMBOLS) / (self.delay + 2 * N_COPY), "accuracy": 1 / N_SYMBOLS}

    def baseline_name(self):
        return "memoryless (blanks, then a uniform guess)"
