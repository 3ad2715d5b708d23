"""The artifact's run.py: rendering, verify/refuse, predict, bench, ops, and a clean-venv run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from model_factories import CLASSES, PRE, REPO, XRAYS, make_artifact, png_eval_set

from edgexray.bench.runtimes import runner_for_file
from edgexray.export.bundle import write_seal
from edgexray.export.run_py_render import _strip_edgexray_imports, render_run_py
from edgexray.runtime.metrics import softmax
from edgexray.runtime.preprocess import read_image_array
from edgexray.runtime.record import schema_problems


def run_py(folder: Path, *args, python=sys.executable, timeout=300):
    return subprocess.run(
        [python, str(folder / "run.py"), *map(str, args)],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def artifacts(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("artifacts")
    return {
        "litert": make_artifact(root / "int8", tiny_models["tflite_int8"], precision="int8"),
        "onnxruntime": make_artifact(root / "fp32", tiny_models["onnx"], precision="fp32"),
    }


def fresh_copy(artifact: Path, tmp_path: Path) -> Path:
    dest = tmp_path / artifact.name
    shutil.copytree(artifact, dest)
    return dest


def test_render_inlines_the_shared_modules_verbatim():
    source = render_run_py()
    compile(source, "run.py", "exec")
    code = [line.strip() for line in source.splitlines()]
    assert not [line for line in code if line.startswith(("from edgexray", "import edgexray"))]
    assert "EDGEXRAY_VERSION = '0.1.0'" in source or 'EDGEXRAY_VERSION = "' in source
    # every line of preprocess.py's code is in run.py, in order: nothing copied by hand
    pre = (REPO / "runtime" / "preprocess.py").read_text()
    body = _strip_edgexray_imports(pre, "runtime/preprocess.py")
    assert body.strip() in source
    assert source.count("def resize_square(") == 1 and source.count("class Preprocess") == 1
    assert "def render_run_py" not in source  # the host-only block stays on the host
    assert source.startswith("#!/usr/bin/env python3\n")


def test_strip_handles_parenthesized_imports():
    text = (
        "from __future__ import annotations\nimport os\nfrom edgexray.bench.x import (a,\n"
        "    b)\nfrom edgexray.runtime.errors import E\nx = 1\n"
    )
    assert _strip_edgexray_imports(text, "t.py") == "import os\nx = 1\n"
    with pytest.raises(ValueError, match="only import edgexray at top level"):
        _strip_edgexray_imports("def f():\n    import edgexray.fsutil\n", "t.py")


def test_verify_ok_then_tampered_model_is_refused(artifacts, tmp_path, xray_eval_set):
    art = fresh_copy(artifacts["litert"], tmp_path)
    ok = run_py(art, "verify")
    assert ok.returncode == 0 and "OK: 2 files match manifest.json" in ok.stdout, ok.stderr
    model = art / "tiny_int8.tflite"
    data = bytearray(model.read_bytes())
    data[-20] ^= 0xFF  # one flipped byte, same size
    model.write_bytes(bytes(data))
    bad = run_py(art, "verify")
    assert bad.returncode == 3 and "tiny_int8.tflite: sha256" in bad.stderr
    for args in (
        ["predict", xray_eval_set],
        ["bench", "--seconds", "0.1", "--out", tmp_path / "r.json"],
        ["ops"],
    ):
        refused = run_py(art, *args)
        assert refused.returncode == 3, refused.stderr
        assert "refusing to run" in refused.stderr and refused.stdout == ""
    assert not (tmp_path / "r.json").exists()
    model.unlink()
    missing = run_py(art, "verify")
    assert missing.returncode == 3 and "tiny_int8.tflite: missing" in missing.stderr


def test_predict_json_csv_raw_and_repeatable(artifacts, xray_eval_set, tmp_path):
    art = artifacts["litert"]
    first = run_py(art, "predict", xray_eval_set, "--raw")
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert doc["schema"] == "edgexray.predictions/1" and doc["class_names"] == CLASSES
    preds = doc["predictions"]
    assert len(preds) == 6
    manifest = json.loads((art / "manifest.json").read_text())
    q = manifest["output"]["quantization"]
    for p in preds:
        probs = np.array([p["probabilities"][c] for c in CLASSES])
        assert abs(probs.sum() - 1) < 1e-5 and p["label"] == CLASSES[int(probs.argmax())]
        raw = np.array(p["raw"])
        assert raw.dtype.kind == "i" and raw.min() >= -128 and raw.max() <= 127
        np.testing.assert_allclose(softmax([(raw - q["zero_point"]) * q["scale"]])[0], probs, atol=1e-6)
    # the host computes the same numbers with the same preprocessing and runner
    runner = runner_for_file(art / "tiny_int8.tflite", threads=1)
    images = [p["image"] for p in preds]
    host = softmax(np.concatenate([runner.predict(PRE(read_image_array(i))[None]) for i in images]))
    np.testing.assert_allclose(host, [[p["probabilities"][c] for c in CLASSES] for p in preds], atol=1e-6)
    again = run_py(art, "predict", xray_eval_set, "--raw")
    assert json.loads(again.stdout) == doc
    out = tmp_path / "p.csv"
    csv_run = run_py(art, "predict", xray_eval_set, "--format", "csv", "--out", out)
    assert csv_run.returncode == 0 and csv_run.stdout == ""
    lines = out.read_text().splitlines()
    assert lines[0] == "image,label,index,probability,p_NORMAL,p_PNEUMONIA"
    assert [line.split(",")[1] for line in lines[1:]] == [p["label"] for p in preds]


def test_images_of_other_size_and_mode_are_resized_per_manifest(artifacts, tmp_path):
    from PIL import Image

    src = sorted((XRAYS / "NORMAL").glob("*.jpeg"))[0] if XRAYS.is_dir() else None
    if src is None:
        pytest.skip(f"real chest X-rays not found at {XRAYS}")
    gray = np.asarray(Image.open(src).convert("L").resize((120, 90)))  # not square, not 32 px
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(gray).save(folder / "a_gray8.png")
    Image.fromarray(np.stack([gray] * 3, -1)).save(folder / "b_rgb.png")
    Image.fromarray(np.dstack([gray] * 3 + [np.full_like(gray, 255)])).save(folder / "c_rgba.png")
    np.save(folder / "d_unit.npy", gray.astype(np.float32) / 255.0)
    Image.fromarray(gray.astype(np.uint16) * 257).save(folder / "e_gray16.png")
    for name in ("litert", "onnxruntime"):
        result = run_py(artifacts[name], "predict", folder)
        assert result.returncode == 0, result.stderr
        preds = json.loads(result.stdout)["predictions"]
        assert len(preds) == 5
        probs = np.array([[p["probabilities"][c] for c in CLASSES] for p in preds])
        assert len({p["label"] for p in preds}) == 1
        # the same picture in every mode gives (nearly) the same input, hence the same output
        np.testing.assert_allclose(probs, np.repeat(probs[:1], 5, axis=0), atol=0.02)
    bad = folder / "f_broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    broken = run_py(artifacts["onnxruntime"], "predict", bad)
    assert (
        broken.returncode == 2 and "could not read image" in broken.stderr and "f_broken.png" in broken.stderr
    )


@pytest.mark.parametrize("name", ["litert", "onnxruntime"])
def test_bench_writes_the_schema(artifacts, xray_eval_set, tmp_path, name):
    out = tmp_path / "results.json"
    extra = [] if name == "litert" else ["--no-memory"]
    result = run_py(
        artifacts[name], "bench", "--seconds", "0.3", "--data", xray_eval_set, "--out", out, *extra
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(out.read_text())
    assert schema_problems(doc) == []
    assert doc["producer"] == "run.py (edgexray 0.1.0)"
    env = doc["environment"]
    assert env["cpu_cores_logical"] >= 1 and env["python"] and env["runtimes"]
    (entry,) = doc["results"]
    assert entry["runtime"] == ("litert" if name == "litert" else "onnxruntime-cpu")
    assert entry["threads"] == 1 and entry["batch"] == 1
    lat = entry["latency_ms"]
    assert lat["runs"] >= 10 and lat["load"] > 0 and lat["first"] > 0 and lat["p50"] > 0
    acc = entry["accuracy"]
    assert acc["n"] == 6 and np.sum(acc["metrics"]["confusion_matrix"]) == 6
    if name == "litert":
        mem = entry["memory_mb"]
        assert mem["method"] == "fresh-process" and mem["baseline_rss"] > 10
        assert mem["peak_rss"] >= mem["baseline_rss"]
    else:
        assert entry["memory_mb"] is None
    fixed = run_py(artifacts[name], "bench", "--runs", "7", "--no-memory")
    assert json.loads(fixed.stdout)["results"][0]["latency_ms"]["runs"] == 7


def test_ops_lists_the_delegate(artifacts):
    result = run_py(artifacts["litert"], "ops")
    ops = json.loads(result.stdout)
    assert ops["runtime"] == "litert" and ops["delegated"] and "DELEGATE" in ops["ops"]


def test_bad_manifest_and_usage(artifacts, tmp_path, capsys):
    """The harness code in-process (run.py is this code with imports inlined; fast)."""
    from edgexray.runtime import run_py as harness_template

    def run(*args):
        capsys.readouterr()
        code = harness_template.main(["--dir", str(art), *map(str, args)])
        return code, capsys.readouterr().err

    art = fresh_copy(artifacts["litert"], tmp_path)
    path = art / "manifest.json"
    good = json.loads(path.read_text())
    cases = [
        ({**good, "schema": "edgexray.artifact/9"}, "this run.py reads 'edgexray.artifact/1'"),
        ({**good, "input": {**good["input"], "layout": "CHW"}}, "input.layout is 'CHW'"),
        ({**good, "preprocess": {**good["preprocess"], "size": 64}}, "does not match preprocess size 64"),
        ({**good, "class_names": ["only"]}, "class_names must list at least two"),
        ({**good, "files": {**good["files"], "../x": good["files"]["labels.txt"]}}, "relative path inside"),
        (
            {**good, "input": {**good["input"], "quantization": {"scale": 0.5, "zero_point": 0}}},
            "manifest.json does not describe tiny_int8.tflite: input quantization",
        ),
    ]
    for manifest, message in cases:
        path.write_text(json.dumps(manifest))  # edited: the seal in run.py no longer matches
        code, err = run("predict", art / "run.py")
        assert code == 3 and "manifest.json was edited" in err, err
        write_seal(art, manifest)  # sealed (a bad build): the manifest's own checks apply
        code, err = run("predict", art / "run.py")
        assert code == 2 and message in err, (message, err)
    path.write_text("{not json")
    assert run("verify")[0] == 3
    write_seal(art, good)
    assert run("bench", "--seconds", "-1")[0] == 2
    code, err = run("predict", tmp_path / "nope.png")
    assert code == 2 and "nope.png" in err
    (tmp_path / "empty").mkdir()
    code, err = run("predict", tmp_path / "empty")
    assert code == 2 and "no images under" in err


@pytest.mark.slow
def test_run_py_in_a_clean_venv_with_only_numpy_and_litert(clean_venv, artifacts, tmp_path):
    listed = subprocess.run(
        [str(clean_venv), "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True
    )
    installed = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert not installed & {"torch", "onnxruntime", "tensorflow", "pillow", "edgexray"}
    data = png_eval_set(tmp_path / "data", per_class=2)  # PNG: decoded without Pillow
    art = fresh_copy(artifacts["litert"], tmp_path)
    env_python = str(clean_venv)
    assert run_py(art, "verify", python=env_python).returncode == 0
    venv_pred = run_py(art, "predict", data, "--raw", python=env_python)
    assert venv_pred.returncode == 0, venv_pred.stderr
    host_pred = run_py(art, "predict", data, "--raw")
    assert json.loads(venv_pred.stdout) == json.loads(host_pred.stdout)
    out = tmp_path / "bench.json"
    bench = run_py(art, "bench", "--seconds", "0.3", "--data", data, "--out", out, python=env_python)
    assert bench.returncode == 0, bench.stderr
    doc = json.loads(out.read_text())
    assert schema_problems(doc) == [] and doc["results"][0]["accuracy"]["n"] == 4
    assert "torch" not in doc["environment"]["runtimes"]
    jpeg = sorted((XRAYS / "NORMAL").glob("*.jpeg"))[0]
    no_pillow = run_py(art, "predict", jpeg, python=env_python)
    assert no_pillow.returncode == 2 and "pip install pillow" in no_pillow.stderr
    # an ONNX artifact on a device without onnxruntime: says what to install
    onnx_art = fresh_copy(artifacts["onnxruntime"], tmp_path)
    no_ort = run_py(onnx_art, "predict", data, python=env_python)
    assert no_ort.returncode == 2 and "pip install onnxruntime" in no_ort.stderr
    assert "Traceback" not in no_ort.stderr
