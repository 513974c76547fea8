"""lstm-bench: LSTM implementations and variants benchmarked against small Transformers.

Data flows task -> batches -> model -> harness -> results store -> report:
  tasks/              built-in tasks (registered as plugins, like any third-party task)
  suite/interfaces.py the Task and Model interfaces every plugin implements
  suite/registry.py   name -> task/model, loaded from entry points and --plugin files
  suite/profiles.py   named configs (suite/profiles/*.toml) expanded into jobs
  suite/harness.py    the one training/evaluation loop
  suite/executor.py   runs jobs, skipping finished ones (resume)
  suite/store.py      append-only JSON Lines results store
  suite/measure/      throughput, memory, FLOPs, latency, seed/stability statistics
  suite/report/       HTML report, figures, verdicts on the claims, run comparison
"""

import os

__version__ = "0.1.0"

# The suite trains from scratch and needs no hub: unless told it may go online, a miss costs
# nothing instead of ~20 s of retries. LSTM_BENCH_ONLINE=1 allows hub access and data downloads.
if os.environ.get("LSTM_BENCH_ONLINE") != "1":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
