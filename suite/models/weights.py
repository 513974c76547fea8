"""Copy weights between torch.nn.LSTM and our LSTMs, in both directions.

Every vanilla LSTM of the suite (ReferenceLSTM("vanilla"), ManualBPTTLSTM, FastLSTM, LibraryLSTM)
uses nn.LSTM's parameter names (weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k}),
shapes (4H x in, 4H x H, 4H, 4H) and gate order (i, f, g, o). So:

    copy_lstm_weights(src=torch_lstm, dst=our_lstm)   # nn.LSTM -> ours
    copy_lstm_weights(src=our_lstm, dst=torch_lstm)   # ours -> nn.LSTM
"""

from __future__ import annotations

import torch
import torch.nn as nn


def lstm_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {
        k: v
        for k, v in module.state_dict().items()
        if k.split("_l")[0] in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    }


def copy_lstm_weights(src: nn.Module, dst: nn.Module) -> None:
    """Copy LSTM weights from src to dst (either may be torch.nn.LSTM or one of ours).
    Raises ValueError naming the first mismatch (a variant without some gate, other sizes)."""
    source, target = lstm_state(src), lstm_state(dst)
    if set(source) != set(target):
        raise ValueError(
            f"parameter names differ: {sorted(set(source) ^ set(target))[:4]} (layers or bias settings "
            "differ)"
        )
    for name, value in source.items():
        if value.shape != target[name].shape:
            raise ValueError(
                f"{name}: shape {tuple(value.shape)} vs {tuple(target[name].shape)} (sizes or gate sets "
                "differ)"
            )
    with torch.no_grad():
        params = dict(dst.named_parameters())
        for name, value in source.items():
            params[name].copy_(value)
