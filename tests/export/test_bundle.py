"""The artifact bundle: a real tiny model in, a verified folder + zip out, written atomically."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from model_factories import make_onnx

from edgexray.devices import load_profile
from edgexray.export.bundle import render_report_html, tool_versions, write_artifact
from edgexray.runtime.errors import EdgeXrayError
from edgexray.runtime.manifest import manifest_problems
from edgexray.runtime.preprocess import Preprocess

CLASSES = ["normal", "pneumonia"]
PRE = Preprocess(size=32, channels=1, mean=(0.5,), std=(0.25,))


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    return make_onnx(tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def build_fields() -> dict:
    """What a pipeline records; numbers here are inputs for rendering, not results under test."""
    cm = [[9, 1], [2, 8]]
    metrics = {"accuracy": 0.85, "confusion_matrix": cm, "class_names": CLASSES}
    return {
        "models": [
            {
                "label": "unpruned fp32 (PyTorch)",
                "format": "torch",
                "precision": "fp32",
                "params": 11_200_000,
                "macs": 1_820_000_000,
                "size_bytes": 44_800_000,
                "latency_ms": {"p50": 21.0, "p90": 22.5},
                "metrics": metrics,
            },
            {
                "label": "pruned fp32 (PyTorch)",
                "format": "torch",
                "precision": "fp32",
                "params": 2_800_000,
                "macs": 490_000_000,
                "size_bytes": 11_200_000,
                "latency_ms": 7.5,
                "accuracy": 0.85,
            },
            {
                "label": "pruned int8 (LiteRT)",
                "format": "tflite",
                "precision": "int8",
                "params": 2_800_000,
                "macs": 490_000_000,
                "size_bytes": 2_900_000,
                "latency_ms": 1.65,
                "metrics": {**metrics, "accuracy": 0.8, "confusion_matrix": [[8, 2], [2, 8]]},
                "shipped": True,
            },
        ],
        "channels_kept": {
            f"layer{s}.{b}.conv{c}": [64 * 2 ** (s - 1), int(64 * 2 ** (s - 1) * 0.5)]
            for s in range(1, 5)
            for b in range(2)
            for c in (1, 2)
        },
        "parity": [
            {
                "file": "model.tflite",
                "precision": "int8",
                "max_abs_diff": 0.12,
                "top1_agreement": 0.98,
                "accuracy": 0.8,
            }
        ],
        "budgets": {"max_accuracy_drop_pp": {"limit": 1.0, "measured": 0.5, "passed": True}},
        "config": {"target": "rpi4", "epochs": 1},
    }


def write(out, model_files, target="x86-64", precision="fp32", **kw):
    kw.setdefault("manifest_fields", build_fields())
    return write_artifact(
        out,
        target=load_profile(target),
        arch="tiny_cbam",
        precision=precision,
        model_files=model_files,
        class_names=CLASSES,
        preprocess=PRE,
        **kw,
    )


def run_py(folder: Path, *args, python=sys.executable) -> subprocess.CompletedProcess:
    return subprocess.run(
        [python, str(folder / "run.py"), *args], capture_output=True, text=True, timeout=300, cwd=folder
    )


def write_png(path: Path, seed: int) -> Path:
    from PIL import Image

    arr = (np.random.default_rng(seed).random((48, 40)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(path)
    return path


# ----------------------------------------------------------------------------- tests


def test_tool_versions_from_metadata():
    v = tool_versions()
    assert v["numpy"] == np.__version__
    assert set(v) >= {
        "torch",
        "torchvision",
        "torch-pruning",
        "onnx",
        "onnxruntime",
        "onnxsim",
        "onnx2tf",
        "tensorflow",
        "ai-edge-litert",
        "numpy",
        "edgexray",
    }


def test_onnx_artifact_complete_and_verifiable(tmp_path, onnx_model):
    folder = write(tmp_path, {"fp32": onnx_model})
    assert folder == tmp_path / "x86-64-tiny_cbam-fp32"
    names = sorted(p.name for p in folder.iterdir())
    assert names == [
        "README.md",
        "checksums.sha256",
        "labels.txt",
        "manifest.json",
        "model.onnx",
        "model.ort",
        "report.html",
        "required_operators_and_types.config",
        "run.py",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name, folder.name + ".zip"]

    m = json.loads((folder / "manifest.json").read_text())
    assert manifest_problems(m) == []  # the schema run.py checks
    assert m["schema"] == "edgexray.artifact/1" and m["profile"]["name"] == "x86-64"
    assert m["model"] == {
        "file": "model.onnx",
        "runtime": "onnxruntime",
        "precision": "fp32",
        "arch": "tiny_cbam",
        "execution_provider": "CPUExecutionProvider",
    }
    assert m["input"]["shape"] == [1, 1, 32, 32] and m["input"]["layout"] == "NCHW"
    assert m["input"]["quantization"] is None and m["output"]["shape"] == [1, 2]
    assert m["preprocess"] == PRE.to_dict() and m["class_names"] == CLASSES
    assert m["tool_versions"]["onnxruntime"] and m["models"][2]["shipped"] is True
    assert (folder / "labels.txt").read_text() == "normal\npneumonia\n"
    # every file but the three seal files is listed with its real sha256 and size
    assert sorted(m["files"]) == sorted(set(names) - {"manifest.json", "run.py", "checksums.sha256"})
    for rel, info in m["files"].items():
        data = (folder / rel).read_bytes()
        assert info == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    # the seal: run.py holds the manifest's sha256; checksums.sha256 covers every other file
    manifest_sha = hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest()
    assert f"MANIFEST_SHA256 = '{manifest_sha}'" in (folder / "run.py").read_text()
    check = subprocess.run(
        ["sha256sum", "-c", "--strict", "checksums.sha256"], cwd=folder, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert sorted(line.split(": ")[0] for line in check.stdout.splitlines()) == sorted(
        set(names) - {"checksums.sha256"}
    )
    assert (folder / "model.onnx").read_bytes() == onnx_model.read_bytes()
    assert os.access(folder / "run.py", os.X_OK)

    # the zip holds the same files under the folder name
    with zipfile.ZipFile(tmp_path / f"{folder.name}.zip") as z:
        assert sorted(z.namelist()) == sorted(f"{folder.name}/{n}" for n in names)
        assert z.read(f"{folder.name}/manifest.json") == (folder / "manifest.json").read_bytes()

    readme = (folder / "README.md").read_text()
    assert "pip install numpy==1.26.4 onnxruntime==1.23.0" in readme
    assert "**32 x 32**" in readme and "triangle filter" in readme and "[0.5]" in readme
    assert "--target android-arm64" in readme  # ONNX artifacts point mobile users to TFLite
    report = (folder / "report.html").read_text()
    assert report.count("data:image/png;base64,") >= 6  # 3 comparison bars, channels, 2 confusions
    assert "http://" not in report and "https://" not in report  # self-contained

    # run.py accepts the manifest, verifies, predicts; a changed file is caught (exit 3)
    r = run_py(folder, "verify")
    assert r.returncode == 0, r.stderr
    img = write_png(tmp_path / "x.png", 0)
    r = run_py(folder, "predict", str(img), "--format", "json")
    assert r.returncode == 0, r.stderr
    pred = json.loads(r.stdout)["predictions"][0]
    import onnxruntime as ort

    from edgexray.runtime.preprocess import read_image_array

    logits = ort.InferenceSession(str(onnx_model)).run(None, {"input": PRE(read_image_array(img))[None]})[0][
        0
    ]
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert pred["label"] == CLASSES[int(np.argmax(logits))]
    assert np.allclose([pred["probabilities"][c] for c in CLASSES], probs, atol=1e-5)
    with open(folder / "labels.txt", "a") as f:
        f.write("tampered\n")
    assert run_py(folder, "verify").returncode == 3


def test_existing_artifact_refused_then_forced(tmp_path, onnx_model):
    folder = write(tmp_path, {"fp32": onnx_model})
    first = json.loads((folder / "manifest.json").read_text())["created"]
    (folder / "mine.txt").write_text("the user's file")
    with pytest.raises(EdgeXrayError, match="already exists.*--force"):
        write(tmp_path, {"fp32": onnx_model})
    assert (folder / "mine.txt").exists()  # untouched
    # a lone zip is protected too
    shutil.rmtree(folder)
    with pytest.raises(EdgeXrayError, match="artifact zip"):
        write(tmp_path, {"fp32": onnx_model})
    time.sleep(1.1)
    folder = write(tmp_path, {"fp32": onnx_model}, force=True)
    assert json.loads((folder / "manifest.json").read_text())["created"] != first
    assert not (folder / "mine.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name, folder.name + ".zip"]


def test_failure_midway_leaves_nothing(tmp_path, onnx_model):
    def broken_check(tmp_folder):
        assert (tmp_folder / "manifest.json").is_file()  # called on the finished temp folder
        raise RuntimeError("emulator crashed")

    with pytest.raises(RuntimeError, match="emulator crashed"):
        write(tmp_path, {"fp32": onnx_model}, verify=broken_check)
    assert list(tmp_path.iterdir()) == []


def test_killed_build_leaves_nothing_that_looks_finished(tmp_path, onnx_model):
    """SIGKILL in the middle of a build: no artifact folder, no zip; only a hidden .partial."""
    code = textwrap.dedent(f"""
        import sys, time
        sys.path[:0] = [{str(Path(__file__).parent)!r}, {str(Path(__file__).parents[1])!r}]
        from test_bundle import write
        from pathlib import Path
        def slow(folder):
            print("building", flush=True)
            time.sleep(60)
            return {{}}
        write(Path({str(tmp_path)!r}), {{"fp32": Path({str(onnx_model)!r})}}, verify=slow)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "building"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    left = [p.name for p in tmp_path.iterdir()]
    assert left and all(n.startswith(".") and ".partial-" in n for n in left), left
    # the next build removes the dead run's work folder and succeeds without --force
    folder = write(tmp_path, {"fp32": onnx_model})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([folder.name, f"{folder.name}.zip"])


def test_check_of_a_custom_verification_is_reported(tmp_path, onnx_model):
    result = {
        "status": "passed",
        "cpu": "cortex-a72",
        "checks": {"outputs_equal": {"passed": True, "detail": "max diff 0"}},
    }
    folder = write(tmp_path, {"fp32": onnx_model}, verify=lambda f: result)
    m = json.loads((folder / "manifest.json").read_text())
    assert m["arm_verification"] == result
    report = (folder / "report.html").read_text()
    assert "outputs_equal" in report and "max diff 0" in report
    assert run_py(folder, "verify").returncode == 0


def test_bad_inputs_are_explained(tmp_path, onnx_model):
    with pytest.raises(EdgeXrayError, match="shipped precision 'int8' has no model file"):
        write(tmp_path, {"fp32": onnx_model}, precision="int8")
    with pytest.raises(EdgeXrayError, match="needs a tflite model; got 'tiny.onnx'"):
        write(tmp_path, {"int8": onnx_model}, target="rpi4", precision="int8")
    with pytest.raises(EdgeXrayError, match=r"does not have one value per class"):
        write_artifact(
            tmp_path,
            target=load_profile("x86-64"),
            arch="a",
            precision="fp32",
            model_files={"fp32": onnx_model},
            manifest_fields={},
            class_names=["a", "b", "c"],
            preprocess=PRE,
        )
    with pytest.raises(EdgeXrayError, match=r"does not match the pre-processing \(size 64"):
        write_artifact(
            tmp_path,
            target=load_profile("x86-64"),
            arch="a",
            precision="fp32",
            model_files={"fp32": onnx_model},
            manifest_fields={},
            class_names=CLASSES,
            preprocess=Preprocess(size=64),
        )
    with pytest.raises(ValueError, match="may not set"):
        write(tmp_path, {"fp32": onnx_model}, manifest_fields={"files": {}})
    assert list(tmp_path.iterdir()) == []


def _png_bytes(seed):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(seed).random((24, 24)) * 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_gradcam_only_for_synthetic_images(tmp_path, onnx_model):
    import base64

    gradcam = {"original": _png_bytes(1), "deployed": _png_bytes(2)}
    encoded = base64.b64encode(gradcam["original"]).decode()
    folder = write(tmp_path / "a", {"fp32": onnx_model}, report_assets={"gradcam": gradcam})
    manifest = json.loads((folder / "manifest.json").read_text())
    private = (folder / "report.html").read_text()
    assert encoded not in private and "left out of this artifact for privacy" in private
    public = render_report_html(manifest, {"gradcam": gradcam}, images_are_synthetic=True)
    assert encoded in public and "synthetic images" in public
    # no image file of any kind inside the artifact
    assert not [p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".dcm")]


@pytest.mark.slow
def test_tflite_int8_artifact_for_rpi4(tmp_path, tflite_twins):
    folder = write(tmp_path, tflite_twins, target="rpi4", precision="int8")
    assert folder.name == "rpi4-tiny_cbam-int8"
    m = json.loads((folder / "manifest.json").read_text())
    assert manifest_problems(m) == []
    assert m["model"]["file"] == "model.tflite" and m["model"]["delegate"] == "xnnpack"
    assert m["variants"]["fp32"]["file"] == "model_fp32.tflite"
    # the same network with TFLite Model Metadata added: labels inside, outputs bit-identical
    from ai_edge_litert.interpreter import Interpreter

    from edgexray.export.tflite_metadata import read_tflite_metadata

    shipped = folder / "model_fp32.tflite"
    assert read_tflite_metadata(shipped.read_bytes())["files"]["labels.txt"] == b"normal\npneumonia\n"
    x = np.random.default_rng(0).normal(size=(1, 32, 32, 1)).astype(np.float32)
    outs = []
    for path in (shipped, tflite_twins["fp32"]):
        it = Interpreter(model_path=str(path))
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        outs.append(it.get_tensor(it.get_output_details()[0]["index"]))
    np.testing.assert_array_equal(outs[0], outs[1])
    inp, out = m["input"], m["output"]
    assert inp["shape"] == [1, 32, 32, 1] and inp["layout"] == "NHWC" and inp["dtype"] == "int8"
    assert out["dtype"] == "int8" and out["quantization"]["scale"] > 0
    assert m["profile"]["cpu_core"] == "cortex-a72"

    readme = (folder / "README.md").read_text()
    assert "pip install numpy==1.26.4 ai-edge-litert==2.1.0" in readme
    # the Kotlin and Swift constants read back as the model's own float32 scale
    kt = re.search(r"const val IN_SCALE = ([0-9.e-]+)f\n", readme).group(1)
    swift = re.search(r"static let inScale: Float = ([0-9.e-]+)\n", readme).group(1)
    assert np.float32(kt) == np.float32(swift) == np.float32(inp["quantization"]["scale"])
    assert "static let mean: [Float] = [0.5]\n" in readme and "floatArrayOf(0.5f)" in readme
    assert f"const val OUT_ZERO_POINT = {out['quantization']['zero_point']}" in readme
    assert 'implementation("com.google.ai.edge.litert:litert:1.4.1")' in readme
    assert "pod 'TensorFlowLiteSwift'" in readme and "NHWC" in readme

    # run.py predicts what LiteRT on the host predicts for the same pre-processed image
    img = write_png(tmp_path / "x.png", 3)
    r = run_py(folder, "predict", str(img), "--format", "json", "--raw")
    assert r.returncode == 0, r.stderr
    raw = json.loads(r.stdout)["predictions"][0]["raw"]
    from ai_edge_litert.interpreter import Interpreter

    from edgexray.runtime.preprocess import read_image_array

    it = Interpreter(model_path=str(tflite_twins["int8"]))
    it.allocate_tensors()
    d_in, d_out = it.get_input_details()[0], it.get_output_details()[0]
    scale, zp = d_in["quantization"]
    x = PRE(read_image_array(img)).transpose(1, 2, 0)[None]
    it.set_tensor(d_in["index"], np.clip(np.round(x / np.float32(scale)) + zp, -128, 127).astype(np.int8))
    it.invoke()
    assert np.ravel(raw).tolist() == it.get_tensor(d_out["index"]).ravel().tolist()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(tmp_path, onnx_model):
    from PIL import Image

    folder = write(tmp_path, {"fp32": onnx_model})
    shot = tmp_path / "shot.png"
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1200,1600",
        (folder / "report.html").as_uri(),
    ]
    subprocess.run(cmd, capture_output=True, timeout=180, check=True)
    img = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)
    assert img.shape[:2] == (1600, 1200)
    assert img.std() > 20  # text, tables and plots, not a blank page
    # the plots were drawn: a good share of rows carry the report's blue
    blue = (img[..., 2] > 150) & (img[..., 0] < 80)
    assert blue.any(axis=1).mean() > 0.1


def test_an_image_file_never_ships(tmp_path, onnx_model):
    def leaves_an_image(folder):
        write_png(folder / "sample.png", 0)
        return {}

    with pytest.raises(EdgeXrayError, match=r"would contain image files \['sample.png'\]"):
        write(tmp_path, {"fp32": onnx_model}, verify=leaves_an_image)
    assert list(tmp_path.iterdir()) == []


def test_real_arm_verification_hook_on_a_non_arm_target(tmp_path, onnx_model):
    from edgexray.bench.arm import verify_artifact

    # cpu= given: bench.arm checks the core name before it looks at the target's arch
    folder = write(
        tmp_path,
        {"fp32": onnx_model},
        verify=lambda d: verify_artifact(d, cpu="cortex-a72", on_unavailable="skip"),
    )
    m = json.loads((folder / "manifest.json").read_text())
    assert m["arm_verification"]["status"] == "skipped"
    assert "not ARM" in m["arm_verification"]["reason"]
    assert "not ARM" in (folder / "report.html").read_text()
    assert run_py(folder, "verify").returncode == 0
