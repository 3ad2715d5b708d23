"""run.py honours the manifest's ONNX Runtime execution provider: CUDA where onnxruntime-gpu and a
GPU are present; elsewhere a CPU fallback that says so (stderr and bench "provider") when the
manifest allows it (provider_fallback "cpu"), else one error line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from model_factories import make_artifact

from edgexray.export.bundle import seal_artifact


def _has_cuda_ep() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def _cuda_artifact(folder: Path, onnx: Path, fallback: str | None) -> Path:
    art = make_artifact(folder, onnx, precision="fp32")
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["model"]["execution_provider"] = "CUDAExecutionProvider"
    if fallback is not None:
        manifest["model"]["provider_fallback"] = fallback
    manifest.pop("files", None)
    seal_artifact(art, manifest)
    return art


def _run(art: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(art / "run.py"), *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.skipif("_has_cuda_ep()", reason="CUDA provider present: the fallback is not taken")
def test_cuda_manifest_falls_back_to_cpu_only_when_allowed(tiny_models, tmp_path):
    allowed = _cuda_artifact(tmp_path / "allowed", tiny_models["onnx"], "cpu")
    proc = _run(allowed, "bench", "--runs", "3", "--warmup", "1", "--no-memory")
    assert proc.returncode == 0, proc.stderr
    assert "onnxruntime-gpu/CUDA is missing here" in proc.stderr
    assert "running on the CPU instead" in proc.stderr
    entry = json.loads(proc.stdout)["results"][0]
    assert entry["provider"] == {
        "requested": "CUDAExecutionProvider",
        "used": "CPUExecutionProvider",
        "fallback": True,
    }
    assert entry["device"] == "cpu" and entry["latency_ms"]["runs"] == 3

    for fallback in ("none", None):  # absent = "none"
        refused = _cuda_artifact(tmp_path / f"refused-{fallback}", tiny_models["onnx"], fallback)
        for args in (("bench", "--runs", "3", "--no-memory"), ("ops",)):
            proc = _run(refused, *args)
            assert proc.returncode == 2, proc.stderr
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
            assert "CUDAExecutionProvider" in lines[0] and "onnxruntime-gpu/CUDA is missing" in lines[0]
            assert "provider_fallback is 'none'" in lines[0] and proc.stdout == ""


def test_bad_provider_fields_are_refused(tiny_models, tmp_path):
    art = _cuda_artifact(tmp_path / "bad", tiny_models["onnx"], "gpu-please")
    proc = _run(art, "verify")
    assert proc.returncode == 2
    assert "model.provider_fallback is 'gpu-please'; allowed: ['cpu', 'none']" in proc.stderr


def test_cpu_manifest_records_cpu_provider(tiny_models, tmp_path):
    art = make_artifact(tmp_path / "cpu", tiny_models["onnx"], precision="fp32")
    proc = _run(art, "bench", "--runs", "2", "--warmup", "0", "--no-memory")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    entry = json.loads(proc.stdout)["results"][0]
    assert entry["provider"] == {
        "requested": "CPUExecutionProvider",
        "used": "CPUExecutionProvider",
        "fallback": False,
    }


@pytest.mark.gpu
def test_cuda_manifest_runs_on_the_gpu(tiny_models, tmp_path):
    if not _has_cuda_ep():
        pytest.skip("a CUDA GPU is visible but onnxruntime-gpu is not installed in this venv")
    art = _cuda_artifact(tmp_path / "gpu", tiny_models["onnx"], "none")
    proc = _run(art, "bench", "--runs", "3", "--no-memory")
    assert proc.returncode == 0, proc.stderr
    entry = json.loads(proc.stdout)["results"][0]
    assert entry["provider"]["used"] == "CUDAExecutionProvider" and entry["device"] == "cuda"
