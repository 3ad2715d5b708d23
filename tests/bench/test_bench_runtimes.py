"""Runner registry: every CPU runner on a tiny real model, bad files, missing runtimes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from model_factories import CLASSES, SIZE, untrained_cbam

from edgexray.bench.runtimes import list_runtimes, load_runner, runner_for_file
from edgexray.runtime.errors import EdgeXrayError

X = np.random.default_rng(3).normal(size=(3, 1, SIZE, SIZE)).astype(np.float32)


@pytest.fixture(scope="module")
def untrained_model():
    """The torch model saved as `untrained_checkpoint` (conftest.py), rebuilt from the same seed."""
    return untrained_cbam()


@pytest.mark.parametrize(
    "key, kind, layout, dtype",
    [
        ("onnx", "onnxruntime-cpu", "NCHW", "float32"),
        ("tflite_fp32", "litert", "NHWC", "float32"),
        ("tflite_int8", "litert", "NHWC", "int8"),
    ],
)
def test_cpu_runner_on_tiny_model(tiny_models, key, kind, layout, dtype):
    runner = runner_for_file(tiny_models[key], threads=1)
    assert runner.kind == kind and runner.device == "cpu" and runner.threads == 1
    spec = runner.input_spec
    assert (spec.layout, spec.dtype) == (layout, dtype)
    assert spec.quantized == (dtype == "int8")
    out = runner.predict(X)
    assert out.shape == (3, 2) and out.dtype == np.float32 and np.isfinite(out).all()
    # repeated runs give the same outputs; a batch equals its images run one by one
    np.testing.assert_array_equal(out, runner.predict(X))
    np.testing.assert_allclose(
        np.concatenate([runner.predict(X[i : i + 1]) for i in range(3)]), out, rtol=1e-5, atol=1e-6
    )
    raw = runner.run_raw(runner.prepare(X[:1]))
    assert raw.dtype == np.dtype(dtype)
    ops = runner.ops()
    assert ops and (("DELEGATE" in ops) if kind == "litert" else ("Conv" in ops))


def test_int8_tflite_tracks_float_tflite(tiny_models):
    """Quantize/dequantize in the runner are right: int8 and float outputs of the same net agree."""
    fp32 = runner_for_file(tiny_models["tflite_fp32"], threads=1).predict(X)
    int8_runner = runner_for_file(tiny_models["tflite_int8"], threads=1)
    int8 = int8_runner.predict(X)
    step = int8_runner.output_spec.scale
    assert np.abs(int8 - fp32).max() < 6 * step, (int8, fp32, step)
    assert (int8.argmax(1) == fp32.argmax(1)).all()


def test_torch_runner_matches_pytorch_and_onnx_export(untrained_checkpoint, untrained_model, tmp_path):
    import torch

    path, model = untrained_checkpoint, untrained_model
    runner = load_runner("torch-cpu", path, threads=1)
    assert runner.input_spec.shape == (1, 1, SIZE, SIZE) and runner.metadata["class_names"] == CLASSES
    with torch.no_grad():
        expected = model(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(runner.predict(X), expected, rtol=1e-5, atol=1e-5)
    onnx_path = tmp_path / "m.onnx"
    torch.onnx.export(
        model,
        (torch.zeros(1, 1, SIZE, SIZE),),
        str(onnx_path),
        dynamo=False,
        input_names=["input"],
        opset_version=17,
    )
    ort = load_runner("onnxruntime-cpu", onnx_path, threads=1)
    np.testing.assert_allclose(ort.predict(X), expected, rtol=1e-4, atol=1e-4)


def test_registry_errors(tiny_models, tmp_path):
    assert {
        "torch-cpu",
        "torch-cuda",
        "onnxruntime-cpu",
        "onnxruntime-cuda",
        "onnxruntime-tensorrt",
        "litert",
    } <= set(list_runtimes())
    with pytest.raises(EdgeXrayError, match="did you mean 'litert'"):
        load_runner("litrt", tiny_models["tflite_int8"])
    with pytest.raises(EdgeXrayError, match="loads .onnx files.*pick a runtime for .tflite \\(litert\\)"):
        load_runner("onnxruntime-cpu", tiny_models["tflite_int8"])
    with pytest.raises(EdgeXrayError, match="cannot tell the runtime"):
        runner_for_file(tmp_path / "model.bin")
    with pytest.raises(EdgeXrayError, match="does not exist"):
        load_runner("litert", tmp_path / "absent.tflite")
    # no GPU on this machine: the CUDA execution provider is reported as missing, with a fix
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(EdgeXrayError, match="CUDAExecutionProvider.*onnxruntime-gpu"):
            load_runner("onnxruntime-cuda", tiny_models["onnx"])


@pytest.mark.parametrize("key", ["onnx", "tflite_int8"])
def test_corrupt_model_file_is_a_clear_error(tiny_models, tmp_path, key):
    src = tiny_models[key]
    bad = tmp_path / src.name
    data = src.read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # truncated, as an interrupted copy leaves it
    with pytest.raises(EdgeXrayError, match="could not load model .*corrupt, truncated"):
        runner_for_file(bad, threads=1)
    bad.write_bytes(b"this is not a model at all" * 10)
    with pytest.raises(EdgeXrayError, match="could not load model"):
        runner_for_file(bad, threads=1)


MISSING_RUNTIME = """
import sys, json
sys.modules[{module!r}] = None  # the package is not installed
from edgexray.bench.runtimes import load_runner
from edgexray.runtime.errors import EdgeXrayError
try:
    load_runner({kind!r}, {path!r})
except EdgeXrayError as e:
    print(json.dumps(str(e)))
"""


@pytest.mark.parametrize(
    "kind, module, key, pip",
    [
        ("litert", "ai_edge_litert", "tflite_int8", "pip install ai-edge-litert"),
        ("onnxruntime-cpu", "onnxruntime", "onnx", "pip install onnxruntime"),
    ],
)
def test_missing_runtime_names_the_package(tiny_models, kind, module, key, pip):
    code = MISSING_RUNTIME.format(module=module, kind=kind, path=str(tiny_models[key]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    message = json.loads(proc.stdout.strip().splitlines()[-1])
    assert pip in message and kind in message


def test_bench_modules_do_not_import_torch_or_tensorflow():
    code = (
        "import sys; import edgexray.bench.runtimes, edgexray.bench.local, edgexray.bench.compare, "
        "edgexray.bench.remote, edgexray.bench.results, edgexray.bench.cli, "
        "edgexray.runtime.run_py; "
        "print([m for m in ('torch', 'tensorflow', 'matplotlib') if m in sys.modules])"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.gpu
def test_cuda_runners_and_device_memory(untrained_checkpoint, tiny_models):
    import onnxruntime
    import torch

    from edgexray.bench.memory import measure_memory

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (torch.cuda.is_available() is False)")
    path = untrained_checkpoint
    cpu = load_runner("torch-cpu", path, threads=1).predict(X)
    gpu = load_runner("torch-cuda", path)
    assert gpu.device == "cuda"
    np.testing.assert_allclose(gpu.predict(X), cpu, rtol=1e-3, atol=1e-3)
    mem = measure_memory("torch-cuda", path, runs=3)
    assert mem["device_peak"] is not None and mem["device_peak"] > 0
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        ort_gpu = load_runner("onnxruntime-cuda", tiny_models["onnx"])
        ort_cpu = load_runner("onnxruntime-cpu", tiny_models["onnx"], threads=1)
        np.testing.assert_allclose(ort_gpu.predict(X), ort_cpu.predict(X), rtol=1e-3, atol=1e-3)
