# lstm-bench: `make bench` runs the main job, `make test` the tests. Both build .venv when it is
# missing or older than pyproject.toml. Without an NVIDIA GPU the CPU wheel of torch is installed
# first (a bare `torch` requirement would pull a multi-GB CUDA build); with one, pip's default CUDA torch.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= quick
RESULTS ?= results/$(PROFILE)
WORKERS ?= $(shell nproc 2>/dev/null || echo 1)
TORCH_CPU ?= torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
export PYTHONUNBUFFERED = 1

.PHONY: bench test test-all lint smoke microbench report clean-results install gpu-check

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
		echo "NVIDIA GPU found: installing CUDA torch"; $(PY) -m pip install -q torch; \
	else \
		echo "no NVIDIA GPU: installing the CPU build of torch"; \
		$(PY) -m pip install -q $(TORCH_CPU) || $(PY) -m pip install -q torch --index-url $(TORCH_CPU_INDEX); \
	fi
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

# `make test`: every test not marked slow (under 5 min on 2 cores); `make test-all`: all of them (CI).
test: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow" tests

test-all: $(VENV)/.installed
	$(PY) -m pytest -q tests

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

smoke: $(VENV)/.installed
	$(PY) -m suite run --profile smoke --out results/smoke
	$(PY) -m suite report results/smoke

# BENCH_SELECT: a pytest -k expression (make bench leaves out the variants' and xLSTM's sweeps, which
# `make microbench` runs: the report's kernel table and sweep need the rest)
BENCH_SELECT ?=
microbench: $(VENV)/.installed
	mkdir -p $(RESULTS)
	$(PY) -m pytest -q benchmarks --benchmark-enable --benchmark-only --benchmark-json=$(RESULTS)/microbench.json -p no:cacheprovider $(if $(BENCH_SELECT),-k "$(BENCH_SELECT)")

# The main job: the profile's runs (one worker per core; WORKERS=1 runs them in one process), the
# micro-benchmarks (after every job: nothing runs beside them), then the report (its path is printed last).
bench: $(VENV)/.installed
	@echo "make bench: $(WORKERS) worker(s), one per core of this machine (WORKERS=1: in one process); timing jobs run alone"
	$(PY) -m suite run --profile $(PROFILE) --out $(RESULTS) --workers $(WORKERS); status=$$?; \
	$(MAKE) --no-print-directory microbench RESULTS=$(RESULTS) \
		BENCH_SELECT="not test_variants and not test_slstm_sweep and not test_mlstm_forms" || status=1; \
	$(PY) -m suite report $(RESULTS) || exit 1; exit $$status

report: $(VENV)/.installed
	$(PY) -m suite report $(RESULTS)

# On a machine with an NVIDIA GPU: parity on the device, lstm-triton vs cuDNN, the gpu profile (~7 min).
# The script installs nothing; on a bare machine run it directly: bash benchmarks/gpu_check.sh OUT_DIR
GPU_OUT ?= results/gpu_check
gpu-check: $(VENV)/.installed
	PYTHON=$(PY) bash benchmarks/gpu_check.sh $(GPU_OUT)

clean-results:
	rm -rf results/*/ reports/*/ reports/index.html
