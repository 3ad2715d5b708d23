"""The one set of tiny real models and artifacts the tests share (fixtures wrapping them: conftest.py).

Made with the real tools: ONNX graphs written with onnx.helper, TFLite models converted by
TensorFlow's TFLiteConverter in a subprocess (TensorFlow and torch fight over threads in one
process), a large ONNX MatMul for the memory ordering test, an untrained resnet18_cbam checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pytest

from edgexray.runtime.preprocess import Preprocess

REPO = Path(__file__).resolve().parents[1]
XRAYS = REPO.parent / "shared" / "data" / "chest-xray-pneumonia" / "train"
SIZE = 32
CLASSES = ["NORMAL", "PNEUMONIA"]
PRE = Preprocess(size=SIZE, channels=1, mean=(0.5,), std=(0.25,))


@dataclass(frozen=True)
class TfliteSpec:
    """One network: 3x3 convs (channels, stride) with bias and ReLU, a global mean, a 2-logit
    MatMul; weights drawn from `seed`. Written as full-INT8 (int8 in/out, calibrated on noise)
    to `int8` and as float to `fp32`, whichever is set."""

    seed: int = 0
    size: int = SIZE
    convs: tuple[tuple[int, int], ...] = ((8, 1),)
    padding: str = "SAME"
    int8: str | None = None
    fp32: str | None = None


TFLITE_SCRIPT = textwrap.dedent("""
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np, tensorflow as tf

    def write(seed, size, convs, padding, int8, fp32):
        rng = np.random.default_rng(seed)

        class Net(tf.Module):
            def __init__(self):
                self.convs, c_in = [], 1
                for c_out, stride in convs:
                    k = tf.constant(rng.normal(0, 0.5, (3, 3, c_in, c_out)).astype("float32"))
                    b = tf.constant(rng.normal(0, 0.1, (c_out,)).astype("float32"))
                    self.convs.append((k, b, stride))
                    c_in = c_out
                self.w = tf.constant(rng.normal(0, 0.5, (c_in, 2)).astype("float32"))

            @tf.function(input_signature=[tf.TensorSpec([1, size, size, 1], tf.float32)])
            def __call__(self, x):
                for k, b, stride in self.convs:
                    x = tf.nn.relu(tf.nn.conv2d(x, k, stride, padding) + b)
                return tf.matmul(tf.reduce_mean(x, axis=[1, 2]), self.w)

        net = Net()
        calib = [rng.normal(0, 1, (1, size, size, 1)).astype("float32") for _ in range(16)]

        def convert(quantize):
            fn = net.__call__.get_concrete_function()
            conv = tf.lite.TFLiteConverter.from_concrete_functions([fn], net)
            if quantize:
                conv.optimizations = [tf.lite.Optimize.DEFAULT]
                conv.representative_dataset = lambda: ([c] for c in calib)
                conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                conv.inference_input_type = tf.int8
                conv.inference_output_type = tf.int8
            return conv.convert()

        if int8:
            open(int8, "wb").write(convert(True))
        if fp32:
            open(fp32, "wb").write(convert(False))

    for spec in json.loads(sys.argv[1]):
        write(**spec)
""")


def write_tflites(*specs: TfliteSpec) -> None:
    """Convert every spec in one TensorFlow subprocess."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, "-c", TFLITE_SCRIPT, json.dumps([asdict(s) for s in specs])],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def make_onnx(path: Path, size: int = SIZE, width: int = 4, classes: int = 2, seed: int = 0) -> Path:
    """A real ONNX classifier: Conv(1->width, 3x3) -> ReLU -> GlobalAveragePool -> Gemm(width->classes)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.5, (width, 1, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(0, 0.1, width).astype(np.float32), "b"),
        numpy_helper.from_array(rng.normal(0, 1, (classes, width)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(np.zeros(classes, np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
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


def tiny_model_paths(root: Path) -> dict:
    """Where make_tiny_models(root) writes: {"onnx", "onnx_wide", "big_onnx", "tflite_int8",
    "tflite_fp32" (the float twin of tflite_int8), "tflite_int8_seed1" (same shape, other
    weights)} -> paths."""
    names = {
        "onnx": "tiny.onnx",
        "onnx_wide": "tiny_wide.onnx",
        "big_onnx": "big.onnx",
        "tflite_int8": "tiny_int8.tflite",
        "tflite_fp32": "tiny_fp32.tflite",
        "tflite_int8_seed1": "tiny_int8_seed1.tflite",
    }
    return {key: root / name for key, name in names.items()}


def make_tiny_models(root: Path) -> dict:
    """The shared set of tiny models, written under root (see tiny_model_paths)."""
    paths = tiny_model_paths(root)
    make_onnx(paths["onnx"], width=4)
    make_onnx(paths["onnx_wide"], width=16)
    make_big_onnx(paths["big_onnx"])
    write_tflites(
        TfliteSpec(seed=0, int8=str(paths["tflite_int8"]), fp32=str(paths["tflite_fp32"])),
        TfliteSpec(seed=1, int8=str(paths["tflite_int8_seed1"])),
    )
    return paths


def factories_key() -> str:
    """Cached models are rebuilt whenever this file changes."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]


UNTRAINED_OPTIONS = {"num_classes": 2, "in_chans": 1, "width": 0.25}


def untrained_cbam():
    """An untrained resnet18_cbam (width 0.25, 1 channel, 2 classes), the same weights every call."""
    import torch

    from edgexray.models import create_model

    torch.manual_seed(0)
    return create_model("resnet18_cbam", **UNTRAINED_OPTIONS).eval()


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
    from edgexray.export.bundle import seal_artifact
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


# Kermany's file names carry the patient: person123_bacteria_456.jpeg, IM-0115-0001.jpeg
KERMANY = re.compile(r"((?:person\d+)|(?:NORMAL2-)?IM-\d+)[-_]")


def patient_of(name: str) -> str:
    return KERMANY.search(name.rsplit("/", 1)[-1]).group(1)


def carve_patients(chest_dir: Path, root: Path, per_class: dict, skip_patients=frozenset()) -> set:
    """Symlink whole patients' images into root/<class>/ until per_class images; their ids."""
    taken = set()
    for cls, want in per_class.items():
        (root / cls).mkdir(parents=True)
        names = sorted(os.listdir(chest_dir / cls))
        n = 0
        for name in names[::7]:  # spread over the folder
            pid = patient_of(name)
            if pid in skip_patients or pid in taken or n >= want:
                continue
            for other in (o for o in names if patient_of(o) == pid):
                (root / cls / other).symlink_to(chest_dir / cls / other)
                n += 1
            taken.add(pid)
    return taken
