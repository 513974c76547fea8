"""Measurements: stability.py (gradient and loss statistics, seed statistics), flops.py (FLOPs per
token), memory.py (peak memory), throughput.py (tokens/s, per-token latency, length scaling)."""
