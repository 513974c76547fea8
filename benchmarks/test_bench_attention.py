"""pytest-benchmark: our small-head attention kernel (suite/models/transformer_fast.py) against SDPA, the
library op it replaces, in one run (conftest.py prints each row's time over SDPA's at the same sizes).
Forward + backward and inference, at the quick profile's Transformer sizes (d_model 28: 4 heads of 7, or 2
of 14 with rotary positions) and a longer sequence; q, k, v as views of one fused projection, as the model
has them."""

import pytest
import torch
from conftest import record_row

from suite.models import transformer_fast

SHAPES = [(32, 64, 4, 7), (32, 100, 4, 7), (32, 100, 2, 14), (32, 256, 4, 8), (16, 500, 2, 16)]  # B, T, H, D
IMPLS = {"sdpa": transformer_fast.sdpa, "kernel": transformer_fast.attention}


@pytest.mark.parametrize("mode", ["fwd+bwd", "inference"])
@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}-T{}-H{}-D{}".format(*s))
def test_attention(benchmark, shape, impl, mode):
    if transformer_fast.extension() is None:
        pytest.skip("the Transformer's kernels did not build here")
    B, T, H, D = shape
    qkv = torch.randn(
        B, T, 3, H, D, generator=torch.Generator().manual_seed(0), requires_grad=mode != "inference"
    )
    q, k, v = qkv.unbind(2)
    grad = torch.randn(B, T, H, D)
    fn = IMPLS[impl]
    causal_flops = 2 * 2 * B * H * T * (T + 1) / 2 * D  # q kᵀ and p v over the causal half
    flops = causal_flops * (3 if mode == "fwd+bwd" else 1)
    record_row(
        benchmark, impl, mode, B, T, H, D, "sdpa", flops, "2 products x causal half (x3 with backward)"
    )

    def run():
        if mode == "inference":
            with torch.no_grad():
                fn(q, k, v, True)
        else:
            fn(q, k, v, True).backward(grad)

    run()
    benchmark.pedantic(run, rounds=15, iterations=1, warmup_rounds=2)
