"""torch.profiler without its noise: kineto writes start/stop lines straight to file descriptor 2.
Used by the memory instrument (suite/measure/memory.py) and by nn.LSTM's backend detection
(suite/models/lstm_library.py), so it sits below both."""

from __future__ import annotations

import contextlib
import os
import sys

from torch.profiler import ProfilerActivity, profile


@contextlib.contextmanager
def quiet_profiler(**options):
    """Profile with kineto's start/stop lines (written straight to fd 2) kept off the terminal."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        with profile(activities=[ProfilerActivity.CPU], **options) as prof:
            yield prof
    finally:
        os.dup2(saved, 2)
        os.close(saved)
