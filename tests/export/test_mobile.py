"""The artifact in a mobile app: TFLite Model Metadata read back by MediaPipe's own extractor
(in a fresh virtualenv with only mediapipe), outputs unchanged by it, on real chest X-rays."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edgexray.devices import load_profile
from edgexray.export.bundle import write_artifact
from edgexray.export.tflite_metadata import (
    LABELS_FILE,
    MANIFEST_FILE,
    MIN_PARSER_VERSION,
    NOT_A_MEDICAL_DEVICE,
    read_tflite_metadata,
)
from edgexray.imageio import read_gray
from edgexray.runtime.preprocess import Preprocess, resize_square

SIZE = 64
CLASSES = ["NORMAL", "PNEUMONIA"]
PRE = Preprocess(size=SIZE, channels=1, mean=(0.5,), std=(0.25,))
N_IMAGES = 64
# 0.10.21: the last release whose Python metadata module imports (1.x ships it without the
# _pywrap_metadata_version extension it needs)
MEDIAPIPE = "mediapipe==0.10.21"
CACHE = Path(os.environ.get("EDGEXRAY_TEST_CACHE", Path.home() / ".cache" / "edgexray-tests"))


@pytest.fixture(scope="module")
def chest_images(chest_dir) -> list[Path]:
    """N_IMAGES real chest X-rays, both classes, a fixed choice."""
    per = N_IMAGES // 2
    return [p for c in CLASSES for p in sorted((chest_dir / c).glob("*.jpeg"))[:per]]


@pytest.fixture(scope="module")
def chest_nhwc(chest_images) -> np.ndarray:
    """The images as the model sees them: normalized float32 NHWC (1 channel)."""
    x = PRE.normalize(np.stack([resize_square(read_gray(p), SIZE) for p in chest_images]))
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


@pytest.fixture(scope="module")
def train_gray(chest_dir) -> tuple[np.ndarray, np.ndarray]:
    """40 + 40 other real chest X-rays (not among chest_images) at 64 px, in [0, 1], and labels."""
    paths = [p for c in CLASSES for p in sorted((chest_dir / c).glob("*.jpeg"))[100:140]]
    gray = np.stack([resize_square(read_gray(p), SIZE) for p in paths])
    return gray, np.repeat(np.arange(2), 40)


@pytest.fixture(scope="module")
def torch_model(train_gray):
    """A small CNN fitted briefly to real X-rays, so its decisions are not coin flips."""
    import torch

    gray, labels = train_gray
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, 2, 1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, 2, 1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(16, 2),
    )
    x, y = torch.from_numpy(PRE.normalize(gray)), torch.from_numpy(labels)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(40):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def calib(train_gray):
    from edgexray.export.calibration import CalibrationSet

    return CalibrationSet(gray=train_gray[0][::2], preprocess=PRE)


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory, torch_model, calib) -> Path:
    """The int8-I/O full-integer TFLite run.py ships, converted as edgexray export does."""
    from edgexray.export.onnx import torch2onnx
    from edgexray.export.tflite import onnx2tflite

    d = tmp_path_factory.mktemp("mobile-model")
    torch2onnx(torch_model, d / "model.onnx", input_shape=(1, 1, SIZE, SIZE))
    return onnx2tflite(d / "model.onnx", d, precisions=("int8",), calib=calib)["int8"]


@pytest.fixture(scope="module")
def tasks_model(tmp_path_factory, torch_model, calib) -> Path:
    from edgexray.export.tasks_variant import torch2tasks_tflite

    return torch2tasks_tflite(
        torch_model,
        tmp_path_factory.mktemp("tasks") / "model_tasks.tflite",
        preprocess=PRE,
        calib=calib,
        class_names=CLASSES,
    )


@pytest.fixture(scope="module")
def android_artifact(tmp_path_factory, int8_model, tasks_model) -> Path:
    fields = {
        "reduction": {"params": 0.896, "macs": 0.7},
        "accuracy": {"exported_int8": 0.9827},
        "config": {"data_dir": "/data/chest-xray"},
    }
    return write_artifact(
        tmp_path_factory.mktemp("mobile-artifact"),
        target=load_profile("android-arm64"),
        arch="tiny_cbam",
        precision="int8",
        model_files={"int8": int8_model},
        manifest_fields=fields,
        class_names=CLASSES,
        preprocess=PRE,
        tasks_model=tasks_model,
    )


@pytest.fixture(scope="session")
def mediapipe_python() -> Path:
    """python of a virtualenv holding only mediapipe (no torch, no tensorflow), made once per
    machine under the cache dir; skips with pip's reason where mediapipe cannot install."""
    venv = CACHE / f"venv-{MEDIAPIPE.replace('==', '-')}"
    python, stamp = venv / "bin" / "python", venv / ".installed"
    if not stamp.is_file():
        shutil.rmtree(venv, ignore_errors=True)  # a half-made one from a killed run
        venv.parent.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(
            [sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, timeout=300
        )
        if r.returncode == 0:
            r = subprocess.run(
                [str(python), "-m", "pip", "install", "-q", MEDIAPIPE],
                capture_output=True,
                text=True,
                timeout=900,
            )
        if r.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            pytest.skip(f"{MEDIAPIPE} cannot be installed here: {r.stderr.strip()[-400:]}")
        stamp.write_text(MEDIAPIPE + "\n")
    return python


def mediapipe_run(python: Path, script: str, *args) -> dict:
    r = subprocess.run(
        [str(python), "-c", textwrap.dedent(script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, GLOG_minloglevel="2", TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def litert_outputs(path: Path, inputs_q: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    outs = []
    for x in inputs_q:
        it.set_tensor(i, x[None])
        it.invoke()
        outs.append(it.get_tensor(o)[0].copy())
    return np.stack(outs)


# ------------------------------------------------------------------------ TFLite Model Metadata


def test_metadata_outputs_bit_identical(android_artifact, int8_model, chest_nhwc):
    """Metadata changes no value: same int8 outputs with and without it on 64 real X-rays."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(int8_model))
    scale, zero = it.get_input_details()[0]["quantization"]
    q = np.clip(np.round(chest_nhwc / scale) + zero, -128, 127).astype(np.int8)
    plain = litert_outputs(int8_model, q)
    shipped = android_artifact / "model.tflite"
    assert shipped.read_bytes() != int8_model.read_bytes()  # the metadata is there
    with_meta = litert_outputs(shipped, q)
    assert len(q) == N_IMAGES and with_meta.dtype == np.int8
    np.testing.assert_array_equal(with_meta, plain)
    assert np.ptp(plain.astype(int)) > 0  # outputs vary with the image: a real comparison


def test_metadata_roundtrip(android_artifact):
    """labels (TENSOR_AXIS_LABELS), normalization on the 0-255 scale and the manifest JSON."""
    manifest = json.loads((android_artifact / "manifest.json").read_text())
    md = read_tflite_metadata((android_artifact / "model.tflite").read_bytes())
    assert md["author"] == "edgexray" and md["name"] == manifest["name"]
    assert md["min_parser_version"] == MIN_PARSER_VERSION
    assert NOT_A_MEDICAL_DEVICE in md["description"] and "tiny_cbam" in md["description"]
    assert "90% fewer params" in md["description"] and "'chest-xray'" in md["description"]
    assert md["input"]["color_space"] == "GRAYSCALE" and md["input"]["size"] == [SIZE, SIZE]
    assert md["input"]["mean"] == [127.5] and md["input"]["std"] == [63.75]
    assert md["input"]["min"] == [-2.0] and md["input"]["max"] == [2.0]
    assert md["output"]["files"] == {LABELS_FILE: 2}  # AssociatedFileType.TENSOR_AXIS_LABELS
    assert md["files"][LABELS_FILE].decode().splitlines() == CLASSES
    sub = json.loads(md["files"][MANIFEST_FILE])
    assert sub["class_names"] == CLASSES and sub["input"] == manifest["input"]
    assert sub["preprocess"] == manifest["preprocess"] and sub["precision"] == "int8"
    # the artifact's own manifest and seal cover the file with its metadata
    assert manifest["files"]["model.tflite"]["bytes"] == (android_artifact / "model.tflite").stat().st_size
    assert manifest["variants"]["int8"]["bytes"] == manifest["files"]["model.tflite"]["bytes"]


def test_run_py_verify_with_metadata(android_artifact):
    r = subprocess.run(
        [sys.executable, "run.py", "verify"],
        cwd=android_artifact,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr


MP_READ_METADATA = """
    import json, sys
    from mediapipe.tasks.python.metadata import metadata
    from mediapipe.tasks.cc.metadata.python import _pywrap_metadata_version as v
    buf = open(sys.argv[1], "rb").read()
    d = metadata.MetadataDisplayer.with_model_buffer(buf)
    meta = json.loads(d.get_metadata_json())
    files = {n: d.get_associated_file_buffer(n).decode() for n in d.get_packed_associated_file_list()}
    print(json.dumps({"meta": meta, "files": files,
                      "needed": v.GetMinimumMetadataParserVersion(d.get_metadata_buffer()),
                      "torch_or_tf": [m for m in ("torch", "tensorflow") if m in sys.modules]}))
"""


def test_metadata_read_by_mediapipe(android_artifact, mediapipe_python):
    """MediaPipe's MetadataDisplayer (the C++ schema parser behind Tasks) reads what we wrote."""
    out = mediapipe_run(mediapipe_python, MP_READ_METADATA, android_artifact / "model.tflite")
    meta, files = out["meta"], out["files"]
    assert out["needed"] == MIN_PARSER_VERSION == meta["min_parser_version"]
    assert out["torch_or_tf"] == []
    assert meta["author"] == "edgexray" and "Not a medical device" in meta["description"]
    sub = meta["subgraph_metadata"][0]
    inp, outp = sub["input_tensor_metadata"][0], sub["output_tensor_metadata"][0]
    assert inp["content"]["content_properties"]["color_space"] == "GRAYSCALE"
    assert inp["process_units"][0]["options"] == {"mean": [127.5], "std": [63.75]}
    assert outp["associated_files"][0] == {
        "name": LABELS_FILE,
        "description": "Class names, one per line, in output order.",
        "type": "TENSOR_AXIS_LABELS",
    }
    assert files[LABELS_FILE].splitlines() == CLASSES
    manifest = json.loads((android_artifact / "manifest.json").read_text())
    assert json.loads(files[MANIFEST_FILE])["input"] == manifest["input"]


# ------------------------------------------------------------------------ ONNX Runtime Mobile


@pytest.fixture(scope="module")
def x86_artifact(tmp_path_factory) -> Path:
    from model_factories import make_onnx

    onnx_path = make_onnx(tmp_path_factory.mktemp("mobile-onnx") / "model_fp32.onnx", size=SIZE)
    return write_artifact(
        tmp_path_factory.mktemp("ort-artifact"),
        target=load_profile("x86-64"),
        arch="tiny_cbam",
        precision="fp32",
        model_files={"fp32": onnx_path},
        manifest_fields={},
        class_names=CLASSES,
        preprocess=PRE,
    )


def test_ort_format_written_and_loaded(x86_artifact, chest_nhwc):
    """model.ort beside model.onnx, loaded by onnxruntime, same outputs on 64 real X-rays."""
    import onnxruntime as ort

    from edgexray.export.ort_mobile import ORT_CONFIG

    manifest = json.loads((x86_artifact / "manifest.json").read_text())
    info = manifest["ort_mobile"]
    assert info["files"]["fp32"]["file"] == "model.ort" and info["target_platform"] == "amd64"
    assert {"model.ort", ORT_CONFIG} <= set(manifest["files"])  # sealed with the rest
    x = np.ascontiguousarray(chest_nhwc.transpose(0, 3, 1, 2))
    outs = {}
    for name in ("model.onnx", "model.ort"):
        sess = ort.InferenceSession(str(x86_artifact / name), providers=["CPUExecutionProvider"])
        outs[name] = np.concatenate([sess.run(None, {"input": xi[None]})[0] for xi in x])
    assert outs["model.ort"].shape == (N_IMAGES, 2)
    np.testing.assert_allclose(outs["model.ort"], outs["model.onnx"], rtol=1e-5, atol=1e-5)
    assert (outs["model.ort"].argmax(1) == outs["model.onnx"].argmax(1)).all()
    config = (x86_artifact / ORT_CONFIG).read_text()
    assert "# - model.ort\n" in config and "/tmp" not in config
    assert all(op in config for op in ("Conv", "GlobalAveragePool", "Flatten", "Gemm"))
    readme = (x86_artifact / "README.md").read_text()
    assert f"--include_ops_by_config {ORT_CONFIG}" in readme and "`model.ort`" in readme
    r = subprocess.run(
        [sys.executable, "run.py", "verify"], cwd=x86_artifact, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_ort_not_written_for_litert(android_artifact):
    manifest = json.loads((android_artifact / "manifest.json").read_text())
    assert "ort_mobile" not in manifest and not list(android_artifact.glob("*.ort"))


# ------------------------------------------------------------------------ Tasks-ready variant

MP_CLASSIFY = """
    import json, sys
    import numpy as np
    import mediapipe as mp
    from mediapipe.tasks import python as mp_tasks
    from mediapipe.tasks.python import vision
    options = vision.ImageClassifierOptions(
        base_options=mp_tasks.BaseOptions(model_asset_path=sys.argv[1]), max_results=-1)
    rows = []
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for rgb in np.load(sys.argv[2]):
            result = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB,
                                                  data=np.ascontiguousarray(rgb)))
            rows.append({c.category_name: c.score for c in result.classifications[0].categories})
    print(json.dumps({"rows": rows,
                      "torch_or_tf": [m for m in ("torch", "tensorflow") if m in sys.modules]}))
"""
SCORE_TOLERANCE = 0.05  # |MediaPipe probability - run.py probability|, two INT8 files


def clear_decisions(predictions: list) -> list[int]:
    """Indices whose top probability beats the runner-up by more than twice the tolerance:
    there the two files cannot disagree on top-1 while their scores are within tolerance."""
    out = []
    for i, p in enumerate(predictions):
        top, second = sorted(p["probabilities"].values(), reverse=True)[:2]
        if top - second > 2 * SCORE_TOLERANCE:
            out.append(i)
    return out


def test_tasks_variant_in_artifact(android_artifact):
    manifest = json.loads((android_artifact / "manifest.json").read_text())
    tv = manifest["tasks_variant"]
    assert tv["file"] == "model_tasks.tflite" and "model_tasks.tflite" in manifest["files"]
    assert tv["input"]["dtype"] == "uint8" and tv["input"]["shape"] == [1, SIZE, SIZE, 3]
    assert tv["input"]["quantization"] == {"scale": 1.0, "zero_point": 0}
    assert tv["output"]["dtype"] == "float32" and tv["output"]["kind"] == "probabilities"
    md = read_tflite_metadata((android_artifact / "model_tasks.tflite").read_bytes())
    assert md["input"]["color_space"] == "RGB" and md["input"]["mean"] == [0.0] * 3
    assert md["input"]["min"] == [0.0] * 3 and md["input"]["max"] == [255.0] * 3
    assert md["output"]["min"] == [0.0] and md["output"]["max"] == [1.0]
    assert json.loads(md["files"][MANIFEST_FILE])["tasks_ready"] is True
    from edgexray.export.tflite import tflite_ops

    ops = tflite_ops(android_artifact / "model_tasks.tflite")
    assert "CONV_2D" in ops and "SOFTMAX" in ops and "DEQUANTIZE" in ops  # INT8 compute inside


def mediapipe_vs_run_py(
    mediapipe_python, folder: Path, images, size: int, tmp_path: Path, model_file="model_tasks.tflite"
):
    """(run.py's predictions, MediaPipe's score rows, MediaPipe's top-1 labels) on `images`.
    MediaPipe gets each image already resized by edgexray's resize (uint8 gray as R = G = B), so
    both see the same pixels."""
    r = subprocess.run(
        [sys.executable, "run.py", "predict", *map(str, images)],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    ref = json.loads(r.stdout)["predictions"]
    gray = np.stack([resize_square(read_gray(p), size) for p in images])
    rgb = np.repeat(np.clip(np.round(gray * 255), 0, 255).astype(np.uint8)[..., None], 3, -1)
    np.save(tmp_path / "rgb.npy", rgb)
    out = mediapipe_run(mediapipe_python, MP_CLASSIFY, folder / model_file, tmp_path / "rgb.npy")
    assert out["torch_or_tf"] == []  # only mediapipe in that venv
    return ref, out["rows"], [max(row, key=row.get) for row in out["rows"]]


def test_mediapipe_image_classifier_matches_run_py(
    android_artifact, chest_images, mediapipe_python, tmp_path
):
    """MediaPipe Tasks' ImageClassifier (only mediapipe installed) loads model_tasks.tflite, names
    the classes from its metadata and agrees with run.py (int8-I/O model) on 64 real X-rays.
    MediaPipe gets each image already resized by edgexray's resize (uint8 gray as R = G = B), so
    both see the same pixels; the two files differ in their INT8 quantization only."""
    ref, rows, top1_mp = mediapipe_vs_run_py(mediapipe_python, android_artifact, chest_images, SIZE, tmp_path)
    assert len(rows) == len(ref) == N_IMAGES
    top1_run = [p["label"] for p in ref]
    assert set(rows[0]) == set(CLASSES)  # category names from the labels metadata
    diff = max(abs(row[c] - p["probabilities"][c]) for row, p in zip(rows, ref) for c in CLASSES)
    # within the score tolerance of the decision boundary two INT8 files may part ways; every
    # image with a clearer decision must get the same top-1 (at least 50 of them)
    clear = clear_decisions(ref)
    same = sum(a == b for a, b in zip(top1_mp, top1_run))
    print(
        f"MediaPipe vs run.py on {N_IMAGES} real X-rays: top-1 equal on {same}, "
        f"{len(clear)} with a clear decision; max |probability difference| {diff:.4f}"
    )
    assert diff <= SCORE_TOLERANCE, diff
    assert len(clear) >= 50
    assert [top1_mp[i] for i in clear] == [top1_run[i] for i in clear]
    assert len(set(top1_run)) == 2  # both classes occur: the comparison means something


@pytest.mark.slow  # the session's tiny build (a few minutes) is made for slow tests only
def test_build_ships_tasks_variant(tiny_build, mediapipe_python, tmp_path):
    """`edgexray build --target rpi4` ships model_tasks.tflite; MediaPipe's ImageClassifier runs
    it and agrees with run.py on the build's own held-out kind of images (synthetic here)."""
    folder, _, data = tiny_build
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["tasks_variant"]["file"] == "model_tasks.tflite"
    measured = manifest["tasks_variant_measured"]  # beside the int8-I/O file, same test split
    assert measured["n"] == manifest["accuracy"]["n"] and 0 <= measured["accuracy"] <= 1
    assert measured["shipped_accuracy"] == pytest.approx(manifest["accuracy"]["exported_int8"])
    row = [m for m in manifest["models"] if "Tasks-ready" in m["label"]]
    assert len(row) == 1 and row[0]["accuracy"] == measured["accuracy"]
    assert "Tasks-ready" in (folder / "README.md").read_text()
    size, names = manifest["preprocess"]["size"], manifest["class_names"]
    images = [p for c in names for p in sorted((data / c).glob("*.png"))[:17]]
    ref, rows, top1_mp = mediapipe_vs_run_py(mediapipe_python, folder, images, size, tmp_path)
    agree = np.mean([a == p["label"] for a, p in zip(top1_mp, ref)])
    clear = clear_decisions(ref)
    diff = max(abs(row[c] - p["probabilities"][c]) for row, p in zip(rows, ref) for c in names)
    print(
        f"rpi4 build: MediaPipe vs run.py on {len(images)} images: top-1 agreement {agree:.3f} "
        f"({len(clear)} with a clear decision), max |probability difference| {diff:.4f}"
    )
    assert len(images) >= 50 and set(rows[0]) == set(names)
    assert diff <= SCORE_TOLERANCE
    assert [top1_mp[i] for i in clear] == [ref[i]["label"] for i in clear]
    # this tiny 3-epoch model is unsure: where the two files part ways, run.py itself scores
    # MediaPipe's class within twice the measured score difference of its own top class
    for p, mp_top in zip(ref, top1_mp):
        assert p["probabilities"][p["label"]] - p["probabilities"][mp_top] <= 2 * diff + 1e-6


# ------------------------------------------------------------------------ README snippets


def test_readme_snippets_match_the_shipped_file(android_artifact):
    """Kotlin (MediaPipe, LiteRT Interpreter) and Swift (MediaPipe) name the real asset, the
    labels in output order and the input size; regenerating from the manifest gives the same."""
    import re

    from edgexray.export.mobile_snippets import readme_section

    manifest = json.loads((android_artifact / "manifest.json").read_text())
    readme = (android_artifact / "README.md").read_text()
    section = readme_section(manifest)
    assert section and section in readme
    blocks = dict(
        zip(
            ("kotlin-mp", "kotlin-litert", "swift"),
            re.findall(r"```(?:kotlin|swift)\n(.*?)```", section, re.S),
        )
    )
    assert len(blocks) == 3
    assert (android_artifact / "model_tasks.tflite").is_file()
    labels = ", ".join(f'"{c}"' for c in CLASSES)
    for name in ("kotlin-mp", "kotlin-litert"):
        code = blocks[name]
        assert 'const val MODEL = "model_tasks.tflite"' in code
        assert f"const val SIZE = {SIZE}" in code and f"listOf({labels})" in code
    assert "ImageClassifier.createFromOptions" in blocks["kotlin-mp"]
    # no operating point in this build: the label is the most probable class, in every snippet
    assert "ScoreThreshold" not in section and "scoreThreshold" not in section
    assert "fun label(probs: FloatArray): String = LABELS[" in blocks["kotlin-mp"]
    assert (
        "fun label(probs: FloatArray)" in blocks["kotlin-litert"] and "static func label" in blocks["swift"]
    )
    assert "SIZE * SIZE * 3" in blocks["kotlin-litert"]  # uint8 RGB, as the model's input
    swift = blocks["swift"]
    assert 'static let model = "model_tasks"' in swift and 'ofType: "tflite"' in swift
    assert f"static let size = {SIZE}" in swift and f"static let labels = [{labels}]" in swift
    # the numbers named are the file's: input side and class count from the model itself
    assert manifest["tasks_variant"]["input"]["shape"] == [1, SIZE, SIZE, 3]
    assert manifest["tasks_variant"]["output"]["shape"] == [1, len(CLASSES)]


def test_snippets_apply_the_operating_point_run_py_applies():
    """With a decision in the manifest, every snippet labels as run.py predict does: the positive
    class at p >= threshold, else the most probable other class (not MediaPipe's score filter)."""
    from edgexray.export.mobile_snippets import readme_section

    manifest = {
        "class_names": ["NORMAL", "PNEUMONIA"],
        "model": {"file": "model.tflite"},
        "tasks_variant": {"file": "model.tflite", "input": {"shape": [1, 64, 64, 3]}},
        "decision": {"positive_class": "PNEUMONIA", "threshold": 0.3125},
    }
    section = readme_section(manifest)
    assert section.count("if (probs[pos] >= 0.312500f) return LABELS[pos]") == 2  # both Kotlin snippets
    assert 'let pos = labels.firstIndex(of: "PNEUMONIA")!' in section and "probs[pos] >= 0.312500" in section
    assert "PNEUMONIA when its probability is >= 0.3125" in section
    assert "ScoreThreshold" not in section and "scoreThreshold" not in section


def test_readme_has_no_tasks_section_without_variant(x86_artifact):
    assert "MediaPipe Tasks and LiteRT Task Library" not in (x86_artifact / "README.md").read_text()


def test_measure_tasks_variant(android_artifact, chest_images):
    """Accuracy, agreement with the int8-I/O file and both latencies, on 64 real X-rays."""
    from edgexray.export.tasks_variant import measure_tasks_variant

    gray = np.stack([resize_square(read_gray(p), SIZE) for p in chest_images])
    labels = np.repeat(np.arange(2), N_IMAGES // 2)
    m = measure_tasks_variant(
        android_artifact / "model_tasks.tflite",
        android_artifact / "model.tflite",
        gray,
        labels,
        PRE,
        threads=1,
        runs=20,
    )
    print(
        f"Tasks-ready vs int8-I/O on {m['n']} real X-rays: accuracy {m['accuracy']:.3f} vs "
        f"{m['shipped_accuracy']:.3f}, top-1 agreement {m['top1_agreement_with_shipped']:.3f}, "
        f"p50 {m['latency_ms_p50']:.3f} ms vs {m['shipped_latency_ms_p50']:.3f} ms (1 thread)"
    )
    assert m["n"] == N_IMAGES and m["top1_agreement_with_shipped"] >= 0.9
    assert abs(m["accuracy"] - m["shipped_accuracy"]) <= 0.1 and m["accuracy"] > 0.5
    assert 0 < m["latency_ms_p50"] < 1000 and 0 < m["shipped_latency_ms_p50"] < 1000


# ------------------------------------------------------------------------ Tasks-ready as model.tflite
# A profile with main_model = "tasks" (android-arm64) ships the Tasks-ready file as model.tflite:
# run.py runs it on raw pixels (preprocess "pixels": "raw") and MediaPipe loads it as it is. Both
# run the same file on the same uint8 pixels, so only the two LiteRT builds' kernels differ.
# |MediaPipe probability - run.py probability|, one INT8 file on the same bytes: what is left
# is INT8 kernel rounding, which LiteRT shows against itself: on the android build's file and
# these 100 X-rays XNNPACK and the reference kernels part by up to 0.043 (11 steps of the
# softmax's 1/256 output scale), MediaPipe and run.py by up to 0.039
MAIN_SCORE_TOLERANCE = 0.05


def clear_main_decisions(predictions: list) -> list[int]:
    """Indices whose top probability beats the runner-up by more than twice the tolerance."""
    margins = [np.diff(sorted(p["probabilities"].values())[-2:])[0] for p in predictions]
    return [i for i, m in enumerate(margins) if m > 2 * MAIN_SCORE_TOLERANCE]


def assert_mediapipe_runs_model_tflite(mediapipe_python, folder: Path, images, tmp_path: Path):
    """MediaPipe's ImageClassifier on the shipped model.tflite agrees with `run.py predict`;
    run.py verify passes. Returns (agreeing top-1, images with a clear decision)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    size, names = manifest["preprocess"]["size"], manifest["class_names"]
    ref, rows, top1_mp = mediapipe_vs_run_py(
        mediapipe_python, folder, images, size, tmp_path, model_file="model.tflite"
    )
    assert len(rows) == len(ref) == len(images) and set(rows[0]) == set(names)
    diff = max(abs(row[c] - p["probabilities"][c]) for row, p in zip(rows, ref) for c in names)
    clear = clear_main_decisions(ref)
    same = sum(a == p["label"] for a, p in zip(top1_mp, ref))
    print(
        f"{manifest['name']}: MediaPipe on model.tflite vs run.py predict on {len(images)} real "
        f"X-rays: top-1 equal on {same}, {len(clear)} with a clear decision (margin > "
        f"{2 * MAIN_SCORE_TOLERANCE}); max |probability difference| {diff:.5f}"
    )
    assert diff <= MAIN_SCORE_TOLERANCE, diff
    assert len(clear) >= 50
    assert [top1_mp[i] for i in clear] == [ref[i]["label"] for i in clear]
    assert len({p["label"] for p in ref}) == 2  # both classes occur: the comparison means something
    r = subprocess.run(
        [sys.executable, "run.py", "verify"], cwd=folder, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return same, clear


def assert_tasks_main_manifest(folder: Path, size: int, names: list) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["profile"]["main_model"] == "tasks"
    assert manifest["model"]["file"] == "model.tflite" == manifest["tasks_variant"]["file"]
    assert manifest["input"]["dtype"] == "uint8" and manifest["input"]["shape"] == [1, size, size, 3]
    assert manifest["input"]["layout"] == "NHWC"
    assert manifest["input"]["quantization"] == {"scale": 1.0, "zero_point": 0}
    assert manifest["output"]["dtype"] == "float32" and manifest["output"]["kind"] == "probabilities"
    assert manifest["preprocess"]["pixels"] == "raw" and manifest["preprocess"]["channels"] == 3
    assert manifest["preprocess"]["mean"] == [0.0] * 3 and manifest["preprocess"]["std"] == [1.0] * 3
    int8 = manifest["variants"]["int8"]
    assert int8["file"] == "model_int8.tflite" and int8["input"]["dtype"] == "int8"
    assert "pixels" not in int8["preprocess"] and int8["preprocess"]["size"] == size
    assert not (folder / "model_tasks.tflite").exists()
    assert manifest["files"]["model.tflite"]["bytes"] == (folder / "model.tflite").stat().st_size
    md = read_tflite_metadata((folder / "model.tflite").read_bytes())
    assert md["input"]["color_space"] == "RGB" and md["files"][LABELS_FILE].decode().splitlines() == names
    assert json.loads(md["files"][MANIFEST_FILE])["tasks_ready"] is True
    md8 = read_tflite_metadata((folder / "model_int8.tflite").read_bytes())
    assert md8["input"]["color_space"] == "GRAYSCALE"  # its own preprocess, not model.tflite's
    readme = (folder / "README.md").read_text()
    assert "`model.tflite` is the shipped model, Tasks-ready" in readme
    assert 'const val MODEL = "model.tflite"' in readme


@pytest.fixture(scope="module")
def android_tasks_main(tmp_path_factory, int8_model, tasks_model) -> Path:
    return write_artifact(
        tmp_path_factory.mktemp("tasks-main"),
        target=load_profile("android-arm64"),
        arch="tiny_cbam",
        precision="int8",
        model_files={"int8": int8_model},
        manifest_fields={},
        class_names=CLASSES,
        preprocess=PRE,
        tasks_model=tasks_model,
        main_model=load_profile("android-arm64").main_model,
    )


def test_android_profile_ships_tasks_ready_model():
    assert load_profile("android-arm64").main_model == "tasks"
    assert load_profile("rpi4").main_model == "int8-io"  # the default: the int8-I/O file


def test_tasks_main_model_in_artifact(android_tasks_main):
    assert_tasks_main_manifest(android_tasks_main, SIZE, CLASSES)


def test_run_py_feeds_tasks_main_model_raw_pixels(android_tasks_main, chest_images):
    """run.py's input tensor for model.tflite is what MediaPipe gets: round(255 x gray), R = G = B."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("artifact_run_py", android_tasks_main / "run.py")
    artifact_run_py = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = artifact_run_py  # its dataclasses look their module up
    try:
        spec.loader.exec_module(artifact_run_py)
    finally:
        del sys.modules[spec.name]
    manifest = artifact_run_py.checked_manifest(android_tasks_main)
    runner = artifact_run_py.load_model(android_tasks_main, manifest, threads=1)
    pre = artifact_run_py._preprocess(manifest)
    x = runner.prepare(artifact_run_py.load_batch(chest_images[:4], pre))
    gray = np.stack([resize_square(read_gray(p), SIZE) for p in chest_images[:4]])
    want = np.repeat(np.clip(np.round(gray * 255), 0, 255).astype(np.uint8)[..., None], 3, -1)
    assert x.dtype == np.uint8
    np.testing.assert_array_equal(x, want)


def test_mediapipe_runs_shipped_model_tflite(android_tasks_main, chest_images, mediapipe_python, tmp_path):
    assert_mediapipe_runs_model_tflite(mediapipe_python, android_tasks_main, chest_images, tmp_path)


def _patient(name: str) -> str:
    return name.split("_")[0] if name.startswith("person") else name.rsplit("-", 1)[0]


@pytest.fixture(scope="module")
def android_chest_build(chest_dir, tmp_path_factory):
    """`edgexray build --target android-arm64` on a small real-chest slice (whole patients, about
    100 images per class, 64 px, 6 epochs of batch 16: fewer give a one-class model); (artifact
    folder, 100 other patients' X-rays for the comparison)."""
    from edgexray.pipeline import BuildConfig, build

    base = tmp_path_factory.mktemp("android-chest")
    held_out = []
    for cls in CLASSES:
        names = sorted(os.listdir(chest_dir / cls))
        (base / "train" / cls).mkdir(parents=True)
        taken, count = set(), 0
        for name in names[::9]:
            if count >= 100:
                break
            if _patient(name) not in taken:
                taken.add(_patient(name))
                for n in (n for n in names if _patient(n) == _patient(name)):
                    (base / "train" / cls / n).symlink_to(chest_dir / cls / n)
                    count += 1
        held_out += [chest_dir / cls / n for n in names[1::5] if _patient(n) not in taken][:50]
    summary = build(
        BuildConfig(
            target="android-arm64",
            data_dir=str(base / "train"),
            out=str(base / "out"),
            size=64,
            width=0.25,
            epochs=6,
            batch_size=16,
            finetune_epochs=1,
            calib_count=40,
            max_accuracy_drop=100.0,
            bench_seconds=0.2,
            verify_arm=False,
        )
    )
    return Path(summary["artifact"]), held_out


@pytest.mark.slow  # a real build (a few minutes)
def test_android_build_ships_model_mediapipe_loads(android_chest_build, mediapipe_python, tmp_path):
    """An android-arm64 build's shipped model.tflite is Tasks-ready: MediaPipe Tasks'
    ImageClassifier (only mediapipe installed) loads it and its top-1 equals `run.py predict` on
    every one of >= 50 real X-rays with a clear decision; run.py verify passes."""
    folder, images = android_chest_build
    manifest = json.loads((folder / "manifest.json").read_text())
    assert_tasks_main_manifest(folder, 64, manifest["class_names"])
    measured = manifest["tasks_variant_measured"]  # the shipped file against PyTorch, test split
    print(
        f"model.tflite vs PyTorch on the test split: top-1 agreement {measured['top1_agreement_with_pytorch']}"
    )
    assert measured["top1_agreement_with_pytorch"] >= 0.9 and measured["n"] == manifest["accuracy"]["n"]
    assert len(images) == 100
    assert_mediapipe_runs_model_tflite(mediapipe_python, folder, images, tmp_path)
