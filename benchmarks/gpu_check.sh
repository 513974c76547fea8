#!/usr/bin/env bash
# Everything lstm-bench measures on a machine with an NVIDIA GPU, into one folder:
#
#   bash benchmarks/gpu_check.sh OUT_DIR          (or: OUT=OUT_DIR bash benchmarks/gpu_check.sh)
#
# Stages, each with its own timeout; a stage that fails or times out is logged and the next one runs:
#   a  env     nvidia-smi, torch / CUDA / cuDNN / triton versions, the GPU, pip list      -> env.txt
#   b  parity  tests/test_lstm_triton.py on the GPU (compiled kernels, not the interpreter) -> parity.txt
#   c  bench   benchmarks/gpu_lstm_bench.py: lstm-triton vs nn.LSTM (cuDNN), fwd+bwd and
#              inference, B 8-256, T 128-1024, H 128-1024, interleaved  -> bench.txt, lstm_gpu_bench.{csv,json}
#   d  suite   python -m suite run --profile gpu --device cuda, then its report          -> suite.txt
# OUT_DIR ends with at most 8 files: summary.txt (stage times and outcomes, and the key figures), the four
# logs, the benchmark's CSV and JSON, and gpu_results.tar.gz (records, report, junit XML).
#
# Nothing is installed: it runs from this checkout (PYTHONPATH; the registry finds the built-in tasks
# without the package metadata) with the Python given by $PYTHON (default python3), which needs torch
# (CUDA), triton, transformers, pandas, scipy, statsmodels, jinja2, matplotlib, tqdm, pytest and
# pytest-benchmark; ray, plotly and datasets are not needed (without plotly the report's figures are PNGs).
# Stage subset: STAGES="b c" bash benchmarks/gpu_check.sh OUT. Timeouts (seconds): T_ENV (20), T_PARITY
# (90), T_BENCH (150; BENCH_BUDGET 110: no new shape after it), T_SUITE (130), T_REPORT (40): at most 7.2
# minutes in all, about 5-6 expected on an H200.
set -u

OUT="${1:-${OUT:-}}"
if [ -z "$OUT" ]; then
  echo "usage: bash benchmarks/gpu_check.sh OUT_DIR (or set OUT)" >&2
  exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)" || exit 2
PY="${PYTHON:-python3}"
STAGES="${STAGES:-a b c d}"
WORK="$OUT/work"
mkdir -p "$WORK"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export PYTHONDONTWRITEBYTECODE=1
export TRITON_DEFAULT_FP_FUSION="${TRITON_DEFAULT_FP_FUSION:-1}"  # Triton >= 3.9 warns when unset
unset TRITON_INTERPRET  # the compiled kernels, on the GPU
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
BEGIN=$(date +%s)

log() { echo "[$(date +%H:%M:%S) +$(($(date +%s) - BEGIN))s] $*" | tee -a "$SUMMARY"; }

# stage NAME TIMEOUT LOGFILE CMD...: run CMD under a timeout, its output to LOGFILE; log the outcome.
stage() {
  local name=$1 limit=$2 logfile=$3
  shift 3
  case " $STAGES " in *" ${name%%-*} "*) ;; *)
    log "stage $name: skipped (STAGES=$STAGES)"
    return 0
    ;;
  esac
  local start rc
  start=$(date +%s)
  log "stage $name: start (timeout ${limit}s) -> $(basename "$logfile")"
  timeout --kill-after=10 "$limit" "$@" >>"$logfile" 2>&1
  rc=$?
  local spent=$(($(date +%s) - start))
  if [ "$rc" -eq 0 ]; then
    log "stage $name: ok in ${spent}s"
  elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    log "stage $name: TIMED OUT after ${spent}s (rc $rc); what it wrote is kept"
  else
    log "stage $name: FAILED (rc $rc) in ${spent}s; last lines of $(basename "$logfile"):"
    tail -n 8 "$logfile" | sed 's/^/    /' | tee -a "$SUMMARY"
  fi
  return 0
}

env_facts() {
  echo "== date"; date -u
  echo "== nvidia-smi"; nvidia-smi || echo "nvidia-smi failed"
  echo "== nvidia-smi -q (clocks, power, MIG)"
  nvidia-smi -q -d CLOCK,POWER,PERFORMANCE 2>/dev/null | head -80
  nvidia-smi --query-gpu=mig.mode.current --format=csv 2>/dev/null
  echo "== python"
  "$PY" - <<'EOF'
import platform, torch
print("python", platform.python_version(), platform.platform())
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
try:
    import triton
    print("triton", triton.__version__)
except Exception as exc:
    print("triton: not importable:", exc)
print("cudnn", torch.backends.cudnn.version(), "enabled", torch.backends.cudnn.enabled)
print("tf32 defaults: matmul", torch.backends.cuda.matmul.allow_tf32, "cudnn", torch.backends.cudnn.allow_tf32)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"device: {p.name}, {p.multi_processor_count} SMs, {p.total_memory / 2**30:.0f} GiB, "
          f"capability {p.major}.{p.minor}")
import os
print("cpus", os.cpu_count())
EOF
  echo "== lstm-bench"
  "$PY" -m suite list models 2>&1 | grep -E "lstm-triton|nn-lstm" || echo "suite does not import"
  echo "== pip list"
  "$PY" -m pip list 2>/dev/null || echo "(no pip)"
}

suite_run() {  # seed 0 of every job first (throughput and scaling too), then the other seeds resume
  "$PY" -m suite run --profile gpu --device cuda --out "$WORK/results/gpu" --no-progress --seeds 1
  "$PY" -m suite run --profile gpu --device cuda --out "$WORK/results/gpu" --no-progress
}
suite_report() {
  "$PY" -m suite report "$WORK/results/gpu" --out "$WORK/reports/gpu"
}
export PY WORK OUT
export -f env_facts suite_run suite_report  # `timeout` runs commands, not functions: bash -c NAME

log "gpu_check: $ROOT -> $OUT, python $(command -v "$PY"), stages: $STAGES"

stage a "${T_ENV:-20}" "$OUT/env.txt" bash -c env_facts
grep -E "^device:|^torch |^triton |^cudnn " "$OUT/env.txt" 2>/dev/null | sed 's/^/    /' | tee -a "$SUMMARY"

stage b "${T_PARITY:-90}" "$OUT/parity.txt" \
  "$PY" -m pytest -q -rA -p no:cacheprovider -m "not slow" tests/test_lstm_triton.py --junitxml="$WORK/parity.xml"
tail -n 1 "$OUT/parity.txt" 2>/dev/null | sed 's/^/    /' | tee -a "$SUMMARY"

stage c "${T_BENCH:-150}" "$OUT/bench.txt" \
  "$PY" benchmarks/gpu_lstm_bench.py --out "$OUT" --budget-seconds "${BENCH_BUDGET:-110}" --tf32-grid

stage d-run "${T_SUITE:-130}" "$OUT/suite.txt" bash -c suite_run
if [ -f "$WORK/results/gpu/records.jsonl" ]; then
  stage d-report "${T_REPORT:-40}" "$OUT/suite.txt" bash -c suite_report
fi

log "summary:"
"$PY" benchmarks/gpu_check_summary.py "$OUT" 2>&1 | tee -a "$SUMMARY"

# at most 8 files come back: pack everything bulky into one archive
(cd "$WORK" && tar -czf "$OUT/gpu_results.tar.gz" . 2>/dev/null) && rm -rf "$WORK"
log "gpu_check: done in $(($(date +%s) - BEGIN))s; files:"
ls -la "$OUT" | tee -a "$SUMMARY"
exit 0
