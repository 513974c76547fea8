"""The GPU path, checked where no GPU is: TF32 set alike for every model and recorded, nn-lstm's cuDNN
label, the gpu profile's size, a report without plotly, and benchmarks/gpu_check.sh (its stages skip
cleanly, at most 8 files come back, and its summary reads constructed results correctly)."""

import json
import logging
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

from suite import environment
from suite.models import lstm_library


@pytest.fixture
def tf32_restored():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@pytest.mark.parametrize("on", [True, False])
def test_tf32_is_set_alike_for_cublas_and_cudnn_and_recorded(tf32_restored, on):
    torch.backends.cudnn.allow_tf32 = not on  # PyTorch's defaults differ (cuDNN on, matmul off)
    environment.set_tf32(on)
    env = environment.environment(torch.device("cpu"), "float32")
    assert env["tf32"] is on and env["tf32_matmul"] is on and env["tf32_cudnn"] is on
    assert env["float32_matmul_precision"] == ("high" if on else "highest")
    assert "cudnn_enabled" in env and "triton" in env


def test_run_takes_tf32_and_defaults_to_full_float32():
    from suite.cli import _parser

    assert _parser().parse_args(["run"]).tf32 is False
    assert _parser().parse_args(["run", "--tf32"]).tf32 is True


@pytest.mark.parametrize("raw,text", [(90100, "9.1.0"), (91002, "9.10.2"), (8902, "8.9.2")])
def test_cudnn_version_reads_torchs_integer(monkeypatch, raw, text):
    monkeypatch.setattr(torch.backends.cudnn, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: raw)
    assert environment.cudnn_version() == text


def test_nn_lstm_on_cuda_names_cudnn_its_version_and_tf32(monkeypatch, tf32_restored):
    """What the profiler saw decides the label: cuDNN with its version and TF32 setting, or not cuDNN."""
    monkeypatch.setattr(lstm_library, "_dispatched", lambda *a: "cudnn")
    monkeypatch.setattr(environment, "cudnn_version", lambda: "9.10.2")
    environment.set_tf32(False)
    label = lstm_library.detect_backend("cuda", torch.float32)
    assert label.startswith("cudnn 9.10.2") and "_cudnn_rnn ran" in label and "TF32 off" in label
    environment.set_tf32(True)
    assert "TF32 on" in lstm_library.detect_backend("cuda", torch.float32)
    monkeypatch.setattr(lstm_library, "_dispatched", lambda *a: "aten-native (lstm cells)")
    assert lstm_library.detect_backend("cuda", torch.float32) == "aten-native (lstm cells)"


def test_lstm_fast_builds_nothing_off_the_cpu():
    from suite.models.lstm_fast import FastLSTM

    assert FastLSTM(3, 4).to("meta").prepare() is None


def test_report_without_plotly_says_so_and_embeds_nothing(monkeypatch, caplog):
    from suite.report import render

    monkeypatch.setitem(sys.modules, "plotly.offline", None)  # import fails as if not installed
    with caplog.at_level(logging.WARNING, logger="lstm_bench"):
        assert render.plotly_js() == ""
    assert "plotly is not installed" in caplog.text


def test_gpu_profile_has_the_comparison_and_fits_minutes(registry):
    from suite.profiles import expand, load_profile

    plan = expand(load_profile("gpu"), registry)
    models = {j.model for j in plan.jobs}
    assert {"lstm-triton", "nn-lstm", "lstm-fast", "transformer", "hf-gpt2"} <= models
    assert not plan.tuned and len(plan.jobs) <= 50  # a few minutes on one GPU: no tuning grid
    assert {j.kind for j in plan.jobs} >= {"train", "throughput", "scaling"}


def _script(*args, env=None):
    return subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, **(env or {})},
    )


def test_gpu_check_script_needs_a_folder_and_skips_stages_cleanly(tmp_path):
    assert _script().returncode == 2
    proc = _script(tmp_path / "out", env={"STAGES": "none"})
    assert proc.returncode == 0, proc.stderr
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(files) <= 8 and "summary.txt" in files and "gpu_results.tar.gz" in files
    summary = (tmp_path / "out" / "summary.txt").read_text()
    for stage in ("a", "b", "c", "d-run"):
        assert f"stage {stage}: skipped" in summary


def test_gpu_check_summary_reads_constructed_results(tmp_path):
    out = tmp_path / "out"
    (out / "work").mkdir(parents=True)
    (out / "env.txt").write_text("device: NVIDIA H200, 132 SMs, 140 GiB, capability 9.0\n")
    (out / "work" / "parity.xml").write_text(
        '<testsuites><testsuite tests="5" failures="1" errors="0" skipped="1">'
        '<testcase name="test_a"><failure message="boom"/></testcase></testsuite></testsuites>'
    )
    rows = [
        {
            "precision": "ieee",
            "B": 8,
            "T": 128,
            "H": 128,
            "mode": m,
            "impl": "triton-auto",
            "ratio_vs_cudnn": r,
        }
        for m, r in (("fwd+bwd", 0.5), ("inference", 0.75))
    ]
    bench = {"gpu": "NVIDIA H200", "sm_count": 132, "nn_lstm_backend": "cudnn 9.10.2", "summary": ["s"]}
    (out / "lstm_gpu_bench.json").write_text(json.dumps(bench | {"rows": rows}))
    results = out / "work" / "results" / "gpu"
    results.mkdir(parents=True)
    record = {"kind": "throughput", "status": "ok", "model": "nn-lstm", "task": "char_lm"}
    record |= {"backend": "cudnn 9.10.2 (cuda)", "train_tokens_per_s": 1e6, "inference_tokens_per_s": 4e6}
    record |= {"env": {"device_name": "NVIDIA H200", "cudnn_version": "9.10.2", "tf32": False}}
    (results / "records.jsonl").write_text(json.dumps(record) + "\n")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check_summary.py"), str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    text = proc.stdout
    assert proc.returncode == 0, proc.stderr
    assert "GPU: NVIDIA H200" in text and "3 passed, 1 failed, 0 errors, 1 skipped" in text
    assert "FAILED test_a: boom" in text
    assert "B=8    T=128   H=128     0.50x |   0.75x" in text
    assert "backend nn-lstm: cudnn 9.10.2 (cuda)" in text and "train 1,000,000 tok/s" in text
    assert "cuDNN 9.10.2" in text and "TF32 False" in text
