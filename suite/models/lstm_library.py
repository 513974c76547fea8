"""torch.nn.LSTM (cuDNN on CUDA, oneDNN/mkldnn or native ATen on the CPU) in the suite's interface,
and the detection of which of those kernels really ran."""

from __future__ import annotations

from functools import cache

import torch
import torch.nn as nn

from suite.models.lstm import ReferenceLSTM
from suite.profiler import quiet_profiler

# operator names (as the profiler shows them) -> backend label
_KERNELS = (("cudnn_rnn", "cudnn"), ("mkldnn_rnn", "onednn (mkldnn)"), ("miopen_rnn", "miopen"))


def detect_backend(device_type: str, dtype: torch.dtype, grad: bool = True) -> str:
    """Run a tiny nn.LSTM once under the profiler and read which RNN kernel was dispatched. On CUDA the
    label names cuDNN's version and whether its float32 math may use TF32 (set_tf32 in environment)."""
    label = _dispatched(device_type, dtype, grad, torch.backends.cudnn.enabled)
    if label == "cudnn":
        from suite.environment import cudnn_version

        tf32 = "on" if torch.backends.cudnn.allow_tf32 else "off"
        return f"cudnn {cudnn_version()} ({device_type}: aten::_cudnn_rnn ran; TF32 {tf32})"
    return label


@cache
def _dispatched(device_type: str, dtype: torch.dtype, grad: bool, cudnn_enabled: bool) -> str:
    """The RNN kernel dispatched (cached per device, dtype, grad and torch.backends.cudnn.enabled)."""
    lstm = nn.LSTM(4, 8, batch_first=True).to(device_type, dtype)
    x = torch.randn(2, 3, 4, device=device_type, dtype=dtype, requires_grad=grad)
    with torch.set_grad_enabled(grad), quiet_profiler() as prof:
        lstm(x)
    names = {e.key for e in prof.key_averages()}
    for needle, label in _KERNELS:
        if any(needle in n for n in names):
            return label
    return "aten-native (lstm cells)"


class LibraryLSTM(nn.LSTM):
    """nn.LSTM, batch-first, with the optional members of a backbone (capabilities.BackboneCapabilities)."""

    def __init__(self, input_size, hidden_size, num_layers=1, dropout=0.0):
        super().__init__(
            input_size, hidden_size, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0
        )

    def backend(self, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> str:
        device = device or next(self.parameters()).device
        return detect_backend(device.type, dtype)

    def flop_twin(self) -> nn.Module:
        twin = ReferenceLSTM(self.input_size, self.hidden_size, self.num_layers, "vanilla")
        twin.load_state_dict(self.state_dict())
        return twin

    def init_step_state(self, batch_size, like):
        z = like.new_zeros(self.num_layers, batch_size, self.hidden_size)
        return z, z.clone()

    def step(self, x_t, state):
        out, state = self.forward(x_t.unsqueeze(1), state)
        return out[:, 0], state
