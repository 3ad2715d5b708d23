"""`edgexray build` end to end on a tiny model (the session's `tiny_build`, conftest.py), and the
artifact run where only numpy and ai-edge-litert are installed."""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgexray.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def run_py(python, folder: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(python), "run.py", *map(str, args)], cwd=folder, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_artifact_runs_with_only_numpy_and_litert(tiny_build, clean_venv, tmp_path):  # noqa: F811
    from edgexray.runtime.preprocess import Preprocess, read_image_array
    from edgexray.runtime.runners import predict_file as run_tflite

    folder, _, data = tiny_build
    probe = subprocess.run([str(clean_venv), "-c", "import torch"], capture_output=True)
    assert probe.returncode != 0, "the clean venv must not have torch"
    r = run_py(clean_venv, folder, "verify")
    assert r.returncode == 0, r.stdout + r.stderr

    images = sorted(data.glob("*/*.png"))[::25][:6]
    out = tmp_path / "pred.json"
    r = run_py(clean_venv, folder, "predict", *images, "--format", "json", "--raw", "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    device = json.loads(out.read_text())["predictions"]

    manifest = json.loads((folder / "manifest.json").read_text())
    pre = Preprocess.from_dict(manifest["preprocess"])
    x = np.stack([pre(read_image_array(p)) for p in images])
    host = run_tflite(folder / "model.tflite", x)
    assert [d["index"] for d in device] == host.argmax(1).tolist()
    q = manifest["output"]["quantization"]
    device_logits = (
        np.asarray([d["raw"] for d in device], np.float32).reshape(len(images), -1) - q["zero_point"]
    ) * q["scale"]
    np.testing.assert_allclose(device_logits, host, atol=1e-6)


@pytest.mark.slow
def test_manifest_records_the_build(tiny_build):
    folder, summary, _ = tiny_build
    manifest = json.loads((folder / "manifest.json").read_text())
    assert folder.name == "rpi4-resnet18_cbam-int8"
    assert manifest["model"]["precision"] == "int8" and manifest["input"]["dtype"] == "int8"
    assert manifest["input"]["layout"] == "NHWC" and manifest["input"]["shape"] == [1, 48, 48, 1]
    assert manifest["synthetic_data"] is True  # and every human-facing file says so
    assert "SYNTHETIC" in (folder / "README.md").read_text()
    assert "SYNTHETIC" in (folder / "report.html").read_text()
    assert (folder / "labels.txt").read_text().split() == ["normal", "osteopenia", "osteoporosis"]
    models = manifest["models"]
    assert models[0]["label"] == "unpruned FP32 PyTorch"
    shipped = [m for m in models if m.get("shipped")]
    assert len(shipped) == 1 and shipped[0]["params"] < models[0]["params"]
    assert manifest["reduction"]["params"] > 0.5  # the rpi4 profile asks for >= 70%
    assert set(manifest["accuracy"]) >= {"unpruned_fp32", "pruned_fp32", "exported_int8"}
    for name in ("model.tflite", "labels.txt", "README.md", "report.html"):
        assert name in manifest["files"]
    sealed = (folder / "checksums.sha256").read_text()  # the seal covers run.py and the manifest
    assert "  run.py\n" in sealed and "  manifest.json\n" in sealed
    assert manifest["tool_versions"]["torch-pruning"]
    with zipfile.ZipFile(str(folder) + ".zip") as z:
        assert f"{folder.name}/manifest.json" in z.namelist()
    assert not [p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".dcm")]
    assert summary["bench"]["speedup_vs_unpruned_torch"] > 0


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install -y chromium)")
def test_build_report_renders_in_headless_chromium(tiny_build, tmp_path):
    from PIL import Image

    folder, _, _ = tiny_build
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
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
        ],
        capture_output=True,
        timeout=180,
        check=True,
    )
    img = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)
    assert img.std() > 20, "blank page"


@pytest.mark.slow
def test_existing_artifact_is_not_overwritten(tiny_build):
    folder, _, data = tiny_build
    before = (folder / "manifest.json").read_bytes()
    r = CliRunner().invoke(
        main, ["build", "--target", "rpi4", "--data", str(data), "--out", str(folder.parent)]
    )
    assert r.exit_code == 2 and "--force" in r.output
    assert (folder / "manifest.json").read_bytes() == before


@pytest.mark.parametrize(
    "option,value", [("--calib-count", "0"), ("--epochs", "0"), ("--width", "0"), ("--bench-seconds", "-1")]
)
def test_bad_numbers_are_refused_before_any_work(option, value, tmp_path):
    import time

    t0 = time.monotonic()
    r = CliRunner().invoke(main, ["build", option, value, "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and option in r.output and "Traceback" not in r.output
    assert time.monotonic() - t0 < 5 and not (tmp_path / "o").exists()  # no data, no training


def test_unknown_target_suggests_closest(tmp_path):
    r = CliRunner().invoke(main, ["build", "--target", "rpi-4", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "rpi4" in r.output and "Traceback" not in r.output


def test_malformed_profile_names_file_and_line(tmp_path):
    bad = tmp_path / "board.toml"
    bad.write_text('name = "board"\narch = "aarch64"\ncores = = 4\n')
    r = CliRunner().invoke(main, ["build", "--target", str(bad), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "board.toml" in r.output and "line 3" in r.output


def test_unmeetable_budget_ships_nothing(tiny_checkpoint, synth_dir, tmp_path):
    r = CliRunner().invoke(
        main,
        [
            "build",
            "--target",
            "rpi4",
            "--checkpoint",
            str(tiny_checkpoint),
            "--data",
            str(synth_dir),
            "--finetune-epochs",
            "0",
            "--latency-budget-ms",
            "0.0001",
            "--out",
            str(tmp_path),
        ],
    )
    assert r.exit_code == 2, r.output
    assert "nothing was shipped" in r.output and "latency" in r.output
    assert not list(tmp_path.glob("rpi4-*"))
