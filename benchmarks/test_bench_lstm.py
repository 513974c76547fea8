"""pytest-benchmark micro suite (run by `make bench` / `make microbench`, never by `make test`):
forward and forward+backward of every LSTM implementation and each Transformer, at the standard
size B=32, T=128, I=64, H=128, and a sweep of T and H for the fast path against nn.LSTM."""

import pytest
import torch

from suite.models.lstm import ReferenceLSTM
from suite.models.lstm_fast import FastLSTM, extension
from suite.models.lstm_manual_bptt import ManualBPTTLSTM
from suite.models.transformer import Transformer

B, T, I, H = 32, 128, 64, 128
LSTMS = {"nn-lstm": lambda i, h: torch.nn.LSTM(i, h, batch_first=True), "lstm-reference": ReferenceLSTM,
         "lstm-manual": ManualBPTTLSTM, "lstm-fast": FastLSTM}


def _transformer(i, h):
    return torch.nn.Sequential(torch.nn.Linear(i, h), _Drop(Transformer(h, 2, 4, max_len=2048)))


def _hf_gpt2(i, h):
    from suite.models.hf_transformers import gpt2

    return torch.nn.Sequential(torch.nn.Linear(i, h), _Drop(gpt2(h, 2, 4, 2048)))


class _Drop(torch.nn.Module):  # (output, state) -> output, like the LSTMs' [0]
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return (self.m(x)[0],)


MODELS = {**LSTMS, "transformer": _transformer, "hf-gpt2": _hf_gpt2}


@pytest.fixture(scope="session", autouse=True)
def _built():
    extension()  # build the C++ path before timing anything


def _run(benchmark, impl, mode, t, h):
    torch.manual_seed(0)
    model = MODELS[impl](I, h)
    x = torch.randn(B, t, I, requires_grad=(mode == "fwd+bwd"))
    # pytest times one benchmark at a time, and `make bench` starts them after the run's last job
    benchmark.extra_info.update(impl=impl, mode=mode, B=B, T=t, I=I, H=h, threads=torch.get_num_threads(),
                                ran_alone=True, concurrency=1)
    if mode == "forward":
        def fn():
            with torch.no_grad():
                model(x)
    else:
        def fn():
            model(x)[0].sum().backward()
    fn()  # warm-up
    benchmark.pedantic(fn, rounds=5 if impl == "lstm-reference" else 10, warmup_rounds=1)


@pytest.mark.parametrize("mode", ["forward", "fwd+bwd"])
@pytest.mark.parametrize("impl", list(MODELS))
def test_standard_size(benchmark, impl, mode):
    _run(benchmark, impl, mode, T, H)


@pytest.mark.parametrize("mode", ["forward", "fwd+bwd"])
@pytest.mark.parametrize("impl", ["nn-lstm", "lstm-fast"])
@pytest.mark.parametrize("t,h", [(32, 128), (512, 128), (128, 64), (128, 256)])
def test_sweep(benchmark, impl, mode, t, h):
    _run(benchmark, impl, mode, t, h)
