"""Every built-in model of the suite, as ModelSpec entries (the runner registry, in the spirit of
PyTorch's benchmarks/fastrnns). Registered through the "lstm_bench.models" entry point, like any
third-party model. One name per implementation x variant."""

from __future__ import annotations

import math
from functools import partial

from suite.errors import ConfigError
from suite.interfaces import ModelSpec, TaskSpec
from suite.models.gru_minlstm import MinLSTM
from suite.models.lstm import VARIANTS, ReferenceLSTM
from suite.models.lstm_fast import FastGRU, FastLSTM
from suite.models.lstm_library import LibraryLSTM
from suite.models.lstm_manual_bptt import ManualBPTTLSTM
from suite.models.lstm_triton import TritonLSTM
from suite.models.sequence_model import SequenceModel
from suite.models.transformer import Transformer
from suite.models.xlstm import XLSTMStack


def _rnn(cls, spec: TaskSpec, width: int, layers: int, dropout: float = 0.0, **kw) -> SequenceModel:
    return SequenceModel(spec, cls(width, width, layers, dropout=dropout, **kw), width)


def _lstm_variant(
    variant: str, spec: TaskSpec, width: int, layers: int, dropout: float = 0.0, forget_bias: float = 0.0
):
    return SequenceModel(spec, ReferenceLSTM(width, width, layers, variant, dropout, forget_bias), width)


def _fast_lstm_variant(
    variant: str, spec: TaskSpec, width: int, layers: int, dropout: float = 0.0, forget_bias: float = 0.0
):
    return SequenceModel(spec, FastLSTM(width, width, layers, dropout, forget_bias, variant), width)


def refuse_unseen_positions(spec: TaskSpec, what: str) -> None:
    """A learned position table has one trained row per training position: positions past seq_len
    would be untrained rows. Such a model refuses a task that evaluates longer (TaskSpec.eval_seq_len),
    in one line, when it is built (the run's probe builds every model before anything starts)."""
    if spec.eval_seq_len is not None and spec.eval_seq_len > spec.seq_len:
        raise ConfigError(
            f"{what} has a learned position table of {spec.seq_len} rows (the training length) and this "
            f"task evaluates sequences of up to {spec.eval_seq_len}: it cannot run there; use "
            "transformer-rope, transformer-alibi or transformer-nope"
        )


def _transformer(
    spec: TaskSpec,
    width: int,
    layers: int,
    heads: int = 4,
    positions: str = "learned",
    dropout: float = 0.0,
    tie_weights: bool = False,
) -> SequenceModel:
    if positions == "learned":
        refuse_unseen_positions(spec, "this Transformer (positions = 'learned')")
    backbone = Transformer(
        width, layers, heads, max_len=spec.longest, positions=positions, dropout=dropout, causal=spec.causal
    )
    return SequenceModel(spec, backbone, width, tie_weights=tie_weights, embed_std=0.02)


def _xlstm(pattern: str, spec: TaskSpec, width: int, layers: int, dropout: float = 0.0) -> SequenceModel:
    # the official code's small init for the token embedding and the head: N(0, √(2 / 5 width))
    backbone = XLSTMStack(width, layers, pattern, dropout=dropout)
    return SequenceModel(spec, backbone, width, embed_std=math.sqrt(2 / (5 * width)))


def _hf(
    factory: str, spec: TaskSpec, width: int, layers: int, heads: int = 4, dropout: float = 0.0
) -> SequenceModel:
    from suite.models import hf_transformers

    if factory == "gpt2":
        refuse_unseen_positions(spec, "hf-gpt2")
    backbone = getattr(hf_transformers, factory)(width, layers, heads, spec.longest, dropout)
    return SequenceModel(spec, backbone, width, embed_std=backbone.model.config.initializer_range)


_VARIANT_TEXT = {
    "peephole": "peephole LSTM (Gers & Schmidhuber 2000), Greff's 'V'",
    "nig": "no input gate (i = 1)",
    "nfg": "no forget gate (f = 1, the 1997 LSTM)",
    "nog": "no output gate (o = 1)",
    "niaf": "no input activation (g(z) = z)",
    "noaf": "no output activation (h(c) = c)",
    "np": "no peepholes (= vanilla)",
    "cifg": "coupled input-forget gate (f = 1 - i)",
    "fgr": "full gate recurrence (gates see previous gates)",
}

VANILLA = "vanilla LSTM"  # one function, one initialisation: nn.LSTM's (see suite/models/weights.py)
GPT2_STYLE = "GPT-2-style Transformer"  # pre-LN, learned positions, GELU MLP: ours and Hugging Face's

MODELS: list[ModelSpec] = [
    ModelSpec(
        "lstm-reference",
        "lstm",
        partial(_lstm_variant, "vanilla"),
        "our LSTM from the gate equations, autograd through a Python time loop",
        "reference",
        architecture=VANILLA,
    ),
    ModelSpec(
        "lstm-manual",
        "lstm",
        partial(_rnn, ManualBPTTLSTM),
        "vanilla LSTM with hand-derived BPTT (torch.autograd.Function)",
        "manual-bptt",
        architecture=VANILLA,
    ),
    ModelSpec(
        "lstm-fast",
        "lstm",
        partial(_rnn, FastLSTM),
        "our fastest vanilla LSTM: C++ time loop, fused gates, hand-derived BPTT",
        "fast",
        architecture=VANILLA,
    ),
    ModelSpec(
        "lstm-triton",
        "lstm",
        partial(_rnn, TritonLSTM),
        "our GPU LSTM: Triton time loop (persistent kernel), fused gates, hand-derived BPTT",
        "triton",
        architecture=VANILLA,
    ),
    ModelSpec(
        "nn-lstm",
        "lstm",
        partial(_rnn, LibraryLSTM),
        "torch.nn.LSTM (cuDNN on CUDA, oneDNN or native ATen on the CPU)",
        "library",
        architecture=VANILLA,
    ),
    # the variants and GRU run the fast path's compiled loop; lstm.py and gru_minlstm.py define them
    *[
        ModelSpec(
            f"lstm-{v}",
            "lstm-variant",
            partial(_fast_lstm_variant, v),
            f"LSTM variant: {_VARIANT_TEXT[v]}",
            "fast",
            architecture=VANILLA if v == "np" else "",
        )
        for v in VARIANTS
        if v != "vanilla"
    ],
    ModelSpec("gru", "gru", partial(_rnn, FastGRU), "GRU (Cho et al. 2014), nn.GRU's function", "fast"),
    ModelSpec(
        "minlstm",
        "minlstm",
        partial(_rnn, MinLSTM),
        "minLSTM (Feng et al. 2024), trained with a log-space parallel scan",
        "parallel-scan",
    ),
    # xLSTM (Beck et al. 2024): residual stacks of sLSTM / mLSTM blocks, 4 heads (sLSTM widths in steps of 4)
    ModelSpec(
        "slstm",
        "xlstm",
        partial(_xlstm, "s"),
        "xLSTM sLSTM blocks: exponential gating, normaliser, stabiliser; C++ time loop, hand-derived BPTT",
        "fast",
        default_layers=2,
        width_step=4,
    ),
    ModelSpec(
        "mlstm",
        "xlstm",
        partial(_xlstm, "m"),
        "xLSTM mLSTM blocks: matrix memory, no hidden-to-hidden weights, chunkwise-parallel training",
        "chunkwise",
        default_layers=2,
        width_step=2,  # the inner width 2·width splits into 4 heads and blocks of 4
    ),
    ModelSpec(
        "xlstm",
        "xlstm",
        partial(_xlstm, "ms"),
        "xLSTM[1:1]: mLSTM and sLSTM blocks alternating",
        "fast",
        default_layers=2,
        width_step=4,
    ),
    ModelSpec(
        "transformer",
        "transformer",
        _transformer,
        "our pre-LN causal Transformer (learned positions; own attention, LayerNorm, MLP kernels on a CPU)",
        "ours",
        default_layers=2,
        width_step=4,
        architecture=GPT2_STYLE,
    ),
    # RoPE needs an even head size: 2 heads and widths in steps of 4 keep the 10% parameter match
    # at small sizes
    ModelSpec(
        "transformer-rope",
        "transformer",
        partial(_transformer, positions="rope", heads=2),
        "our pre-LN Transformer with rotary positions (2 heads)",
        "ours",
        default_layers=2,
        width_step=4,
    ),
    # length generalization (Delétang et al. 2023 try five position schemes on their encoder): no
    # positions at all, and ALiBi's distance penalty; both run at any length
    ModelSpec(
        "transformer-nope",
        "transformer",
        partial(_transformer, positions="none", heads=2),
        "our pre-LN Transformer without position information (NoPE; 2 heads)",
        "ours",
        default_layers=2,
        width_step=4,
    ),
    ModelSpec(
        "transformer-alibi",
        "transformer",
        partial(_transformer, positions="alibi", heads=2),
        "our pre-LN Transformer with ALiBi distance biases (Press et al. 2022; 2 heads)",
        "ours",
        default_layers=2,
        width_step=4,
    ),
    ModelSpec(
        "hf-gpt2",
        "transformer-hf",
        partial(_hf, "gpt2"),
        "Hugging Face GPT-2 built from GPT2Config, random init",
        "huggingface",
        default_layers=2,
        width_step=4,
        architecture=GPT2_STYLE,
    ),
    ModelSpec(
        "hf-llama",
        "transformer-hf",
        partial(_hf, "llama", heads=2),
        "Hugging Face Llama (RoPE, RMSNorm, SwiGLU) from LlamaConfig, random init (2 heads)",
        "huggingface",
        default_layers=2,
        width_step=4,
    ),
]
