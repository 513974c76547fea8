"""The few lines that matter from a benchmarks/gpu_check.sh folder: the GPU, the parity tests' outcome,
lstm-triton's time relative to cuDNN (micro-benchmarks), and from the suite's records which backend ran
for each model, with train and inference throughput and length scaling.

    python benchmarks/gpu_check_summary.py OUT_DIR [RESULTS_DIR]
"""

from __future__ import annotations

import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def parity(out: Path) -> list[str]:
    xml = out / "work" / "parity.xml"
    if not xml.is_file():
        return ["parity: no junit file (stage b did not run or died early; see parity.txt)"]
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    if suite is None:
        return ["parity: unreadable junit file"]
    n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    passed = n["tests"] - n["failures"] - n["errors"] - n["skipped"]
    lines = [
        f"parity (tests/test_lstm_triton.py on the device): {passed} passed, {n['failures']} failed, "
        f"{n['errors']} errors, {n['skipped']} skipped"
    ]
    for case in suite.iter("testcase"):
        for bad in (*case.findall("failure"), *case.findall("error")):
            lines.append(f"  FAILED {case.get('name')}: {(bad.get('message') or '')[:200]}")
    return lines


def bench(out: Path) -> list[str]:
    path = out / "lstm_gpu_bench.json"
    if not path.is_file():
        return ["micro-benchmarks: no lstm_gpu_bench.json (stage c did not finish; the CSV has its rows)"]
    data = json.loads(path.read_text())
    head = (
        f"micro-benchmarks on {data.get('gpu')} ({data.get('sm_count')} SMs), "
        f"nn.LSTM = {data.get('nn_lstm_backend')}"
    )
    lines = [head, *(f"  {line}" for line in data.get("summary", []))]
    rows = [r for r in data.get("rows", []) if r["impl"] == "triton-auto" and r["ratio_vs_cudnn"] is not None]
    if rows:
        lines.append("  lstm-triton (auto) / cuDNN, per shape (fwd+bwd | inference):")
        pairs: dict[tuple, dict] = {}
        for r in rows:
            pairs.setdefault((r["precision"], r["B"], r["T"], r["H"]), {})[r["mode"]] = r["ratio_vs_cudnn"]
        for (prec, B, T, H), got in pairs.items():
            lines.append(
                f"    {prec} B={B:<4d} T={T:<5d} H={H:<5d} {got.get('fwd+bwd', float('nan')):6.2f}x | "
                f"{got.get('inference', float('nan')):6.2f}x"
            )
    return lines


def records(results: Path) -> list[str]:
    path = results / "records.jsonl"
    if not path.is_file():
        return [f"suite: no records in {results} (stage d did not run)"]
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    lines = [f"suite run: {len(recs)} records, status {_counts(r.get('status') for r in recs)}"]
    env = next((r["env"] for r in recs if r.get("env")), {})
    lines.append(
        f"  env: {env.get('device_name')}, torch {env.get('torch')}, CUDA {env.get('torch_cuda')}, cuDNN "
        f"{env.get('cudnn_version')}, triton {env.get('triton')}, TF32 {env.get('tf32')}"
    )
    for model, backend in sorted({(r.get("model"), r.get("backend")) for r in recs if r.get("backend")}):
        lines.append(f"  backend {model}: {backend}")
    for r in recs:
        if r.get("kind") == "throughput" and r.get("status") == "ok":
            lines.append(
                f"  throughput {r['model']:12s} {r['task']}: train {r['train_tokens_per_s']:,.0f} tok/s, "
                f"inference {r['inference_tokens_per_s']:,.0f} tok/s"
            )
    for r in recs:
        if r.get("kind") == "scaling" and r.get("status") == "ok":
            lines.append(
                f"  scaling {r['model']:12s} T={r['seq_len']:<5d} forward {1e3 * r['forward_seconds']:8.2f} "
                f"ms, fwd+bwd {1e3 * r['train_seconds']:8.2f} ms (B={r['batch_size']})"
            )
    for r in recs:
        if r.get("status") == "failed":
            what = f"{r.get('kind')} {r.get('model')} {r.get('task')}"
            lines.append(f"  FAILED {what}: {str(r.get('error'))[:160]}")
    return lines


def _counts(values) -> str:
    seen: dict = {}
    for v in values:
        seen[v] = seen.get(v, 0) + 1
    return ", ".join(f"{k}: {v}" for k, v in sorted(seen.items(), key=lambda kv: str(kv[0])))


def gpu(out: Path) -> list[str]:
    env = out / "env.txt"
    if not env.is_file():
        return []
    text = env.read_text(errors="replace")
    found = re.search(r"^device: (.+)$", text, re.M)
    return [f"GPU: {found.group(1)}"] if found else []


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    results = Path(argv[1]) if len(argv) > 1 else out / "work" / "results" / "gpu"
    for line in [*gpu(out), *parity(out), *bench(out), *records(results)]:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
