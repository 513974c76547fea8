"""Adding problem (Hochreiter & Schmidhuber 1997): two channels, values U(0,1) and a mask with two
ones (one in each half); the target is the sum of the two marked values. MSE; predicting 1
always scores Var(U1 + U2) = 1/6."""

import torch

from suite.interfaces import Batch, Task, TaskSpec, check_positive


class AddingProblem(Task):
    name = "adding"
    description = "sum the two marked values of a length-T sequence (regression, MSE)"
    family = "long-dependency"
    primary_metric = "mse"
    higher_is_better = False
    success_threshold = 0.01

    param_help = {"seq_len": "length T of the sequence holding the two marked values"}

    def __init__(self, seq_len: int = 100, seed: int = 0):
        super().__init__(seed)
        check_positive("adding seq_len", seq_len, 4)
        self.spec = TaskSpec(
            seq_len=int(seq_len), input_dim=2, output_dim=1, output="regression", readout="last"
        )

    def sample(self, n, generator):
        T = self.spec.seq_len
        values = torch.rand(n, T, generator=generator)
        first = torch.randint(0, T // 2, (n,), generator=generator)
        second = torch.randint(T // 2, T, (n,), generator=generator)
        mask = torch.zeros(n, T)
        rows = torch.arange(n)
        mask[rows, first] = 1.0
        mask[rows, second] = 1.0
        y = (values * mask).sum(1, keepdim=True)
        return Batch(torch.stack([values, mask], -1), y)

    def baseline(self):
        return {"loss": 1 / 6, "mse": 1 / 6, "mae": 1 / 3}

    def baseline_name(self):
        return "always predict 1"
