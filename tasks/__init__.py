"""Built-in tasks. Each module defines one Task and is registered through the same entry-point
group ("lstm_bench.tasks") a third-party plugin uses. Modules starting with _ are shared helpers."""
