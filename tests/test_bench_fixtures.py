"""Tiny real models and artifacts for the bench tests (imported by the other test_bench files).

The models are made here with the real tools: a small CNN exported by torch.onnx, an int8 and a
float TFLite converted by TensorFlow's TFLiteConverter in a subprocess, a large ONNX MatMul for
the memory ordering test. They are cached in pytest's cache dir, keyed by this file's content.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edgexray.export.bundle import seal_artifact
from edgexray.runtime.preprocess import Preprocess

REPO = Path(__file__).resolve().parents[1]
XRAYS = REPO.parent / "shared" / "data" / "chest-xray-pneumonia" / "train"
SIZE = 32
CLASSES = ["NORMAL", "PNEUMONIA"]
PRE = Preprocess(size=SIZE, channels=1, mean=(0.5,), std=(0.25,))

TFLITE_SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np, tensorflow as tf
    out_dir, size = sys.argv[1], int(sys.argv[2])
    rng = np.random.default_rng(0)

    class Net(tf.Module):
        def __init__(self):
            self.k = tf.constant(rng.normal(0, 0.5, (3, 3, 1, 8)).astype("float32"))
            self.b = tf.constant(rng.normal(0, 0.1, (8,)).astype("float32"))
            self.w = tf.constant(rng.normal(0, 0.5, (8, 2)).astype("float32"))

        @tf.function(input_signature=[tf.TensorSpec([1, size, size, 1], tf.float32)])
        def __call__(self, x):
            h = tf.nn.relu(tf.nn.conv2d(x, self.k, 1, "SAME") + self.b)
            return tf.matmul(tf.reduce_mean(h, axis=[1, 2]), self.w)

    net = Net()
    calib = [rng.normal(0, 1, (1, size, size, 1)).astype("float32") for _ in range(16)]

    def convert(int8):
        conv = tf.lite.TFLiteConverter.from_concrete_functions([net.__call__.get_concrete_function()], net)
        if int8:
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = lambda: ([c] for c in calib)
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
        return conv.convert()

    open(os.path.join(out_dir, "tiny_int8.tflite"), "wb").write(convert(True))
    open(os.path.join(out_dir, "tiny_fp32.tflite"), "wb").write(convert(False))
""")


def tiny_torch_model(width: int = 4, seed: int = 0):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, 2),
    ).eval()


def make_onnx(path: Path, width: int = 4) -> Path:
    import torch

    model = tiny_torch_model(width)
    torch.onnx.export(
        model,
        (torch.zeros(1, 1, SIZE, SIZE),),
        str(path),
        dynamo=False,
        input_names=["input"],
        output_names=["logits"],
        opset_version=17,
    )
    return path


def make_big_onnx(path: Path, hidden: int = 2048) -> Path:
    """input (1,1,S,S) -> flatten -> MatMul with a (S*S, hidden) weight -> ... -> 2 logits."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(0, 0.01, (SIZE * SIZE, hidden)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.01, (hidden, hidden)).astype(np.float32), "w2")
    w3 = numpy_helper.from_array(rng.normal(0, 0.01, (hidden, 2)).astype(np.float32), "w3")
    shape = numpy_helper.from_array(np.array([1, SIZE * SIZE], np.int64), "flat")
    nodes = [
        helper.make_node("Reshape", ["input", "flat"], ["f"]),
        helper.make_node("MatMul", ["f", "w1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["r1"]),
        helper.make_node("MatMul", ["r1", "w2"], ["h2"]),
        helper.make_node("Relu", ["h2"], ["r2"]),
        helper.make_node("MatMul", ["r2", "w3"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "big",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2])],
        initializer=[w1, w2, w3, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.save(model, str(path))
    return path


def _builder_key() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]


@pytest.fixture(scope="session")
def tiny_models(pytestconfig) -> dict:
    """{"onnx", "onnx_wide", "big_onnx", "tflite_int8", "tflite_fp32"} -> paths (built once)."""
    root = Path(pytestconfig.cache.mkdir("edgexray-bench-models")) / _builder_key()
    done = root / "DONE"
    if not done.exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        make_onnx(root / "tiny.onnx", width=4)
        make_onnx(root / "tiny_wide.onnx", width=16)
        make_big_onnx(root / "big.onnx")
        proc = subprocess.run(
            [sys.executable, "-c", TFLITE_SCRIPT, str(root), str(SIZE)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        done.write_text("ok")
    return {
        "onnx": root / "tiny.onnx",
        "onnx_wide": root / "tiny_wide.onnx",
        "big_onnx": root / "big.onnx",
        "tflite_int8": root / "tiny_int8.tflite",
        "tflite_fp32": root / "tiny_fp32.tflite",
    }


def tensor_entry(spec) -> dict:
    """A manifest input/output entry from a runner's TensorSpec."""
    d = spec.to_dict()
    return {
        "shape": d["shape"],
        "layout": d["layout"],
        "dtype": d["dtype"],
        "quantization": d["quantization"],
    }


def make_artifact(folder: Path, model: Path, *, precision: str, threads: int = 1) -> Path:
    """An artifact folder sealed the way the bundle seals one: model, labels.txt, manifest.json,
    run.py, checksums.sha256."""
    from edgexray.bench.runtimes import runner_for_file
    from edgexray.runtime.registry import get_runtime

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(model, folder / model.name)
    (folder / "labels.txt").write_text("".join(f"{c}\n" for c in CLASSES), encoding="utf-8")
    runner = runner_for_file(folder / model.name, threads=1)
    runtime = get_runtime(runner.kind).manifest_runtime
    output = tensor_entry(runner.output_spec)
    output.pop("layout")
    output["kind"] = "logits"
    manifest = {
        "schema": "edgexray.artifact/1",
        "model": {"file": model.name, "runtime": runtime, "precision": precision},
        "input": tensor_entry(runner.input_spec),
        "output": output,
        "preprocess": PRE.to_dict(),
        "class_names": CLASSES,
        "threads": threads,
    }
    seal_artifact(folder, manifest)
    return folder


def make_eval_set(root: Path, per_class: int = 3) -> Path:
    """A few real chest X-rays per class, symlinked (never copied into the repo)."""
    if not XRAYS.is_dir():
        pytest.skip(f"real chest X-rays not found at {XRAYS}")
    for name in CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
        for src in sorted((XRAYS / name).glob("*.jp*g"))[:per_class]:
            (root / name / src.name).symlink_to(src)
    return root


@pytest.fixture(scope="session")
def clean_venv(pytestconfig):
    """A venv with nothing but numpy and ai-edge-litert, built once and cached."""
    root = Path(pytestconfig.cache.mkdir("edgexray-bench-venv"))
    python = root / "bin" / "python"
    if not (root / "READY").exists():
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=300)
        proc = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "numpy==1.26.4", "ai-edge-litert==2.1.0"],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if proc.returncode != 0:
            pytest.fail(f"cannot install numpy + ai-edge-litert into a clean venv: {proc.stderr[-2000:]}")
        (root / "READY").write_text("ok")
    return python


def png_eval_set(root: Path, per_class: int = 2, size=(64, 48)) -> Path:
    """Real X-rays re-saved as small PNGs: readable on a device without Pillow."""
    from PIL import Image

    if not XRAYS.is_dir():
        pytest.skip(f"real chest X-rays not found at {XRAYS}")
    for name in CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
        for src in sorted((XRAYS / name).glob("*.jp*g"))[:per_class]:
            Image.open(src).convert("L").resize(size).save(root / name / f"{src.stem}.png")
    return root
