"""Saliency of the shipped file (occlusion through run.py's runner) beside Grad-CAM, and their IoU."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgexray.imageio import read_gray
from edgexray.runtime.preprocess import Preprocess, resize_square
from edgexray.saliency import (
    Occlusion,
    agreement,
    deployed_saliency,
    file_occlusion,
    occluded_copies,
    occlusion_for_size,
    occlusion_map,
    top_mask,
)

SIZE = 64
CLASSES = ["NORMAL", "PNEUMONIA"]
PRE = Preprocess(size=SIZE, channels=1, mean=(0.5,), std=(0.25,))


def test_agreement_is_iou_of_the_top_pixels():
    rng = np.random.default_rng(0)
    heat = rng.random((20, 20))
    assert agreement(heat, heat) == 1.0
    assert agreement(heat, heat * 3 + 1) == 1.0  # only the ranking counts
    left, right = np.zeros((20, 20)), np.zeros((20, 20))
    left[:, :5], right[:, 15:] = 1.0, 1.0
    assert agreement(left, right, top=0.25) == 0.0
    assert top_mask(heat).sum() == 60  # 15% of 400
    with pytest.raises(ValueError, match="differ in shape"):
        agreement(heat, heat[:10])


def test_occlusion_finds_the_pixels_a_model_reads():
    """A 'model' whose class-1 logit is the mean of one corner: only that corner matters."""
    x = np.ones((1, 32, 32), np.float32)

    def predict(batch):
        corner = batch[:, 0, :8, :8].mean(axis=(1, 2))
        return np.stack([np.zeros_like(corner), 4 * corner], axis=1)

    occ = occlusion_for_size(32)
    copies, boxes = occluded_copies(x, occ)
    assert (occ.patch, occ.stride) == (4, 2) and len(copies) == len(boxes) == 15 * 15
    heat = occlusion_map(predict, x, 1, occ)
    assert heat.shape == (32, 32) and heat.max() == 1.0 and heat.min() == 0.0
    assert heat[:8, :8].mean() > 0.5 and heat[12:, 12:].max() == 0.0
    corner = np.zeros((32, 32))
    corner[:8, :8] = 1
    assert agreement(heat, corner, top=64 / 1024) == 1.0


@pytest.fixture(scope="module")
def chest_gray(chest_dir) -> tuple[np.ndarray, np.ndarray]:
    """24 + 24 real chest X-rays at 64 px in [0, 1], and their labels."""
    paths = [p for c in CLASSES for p in sorted((chest_dir / c).glob("*.jpeg"))[200:224]]
    return np.stack([resize_square(read_gray(p), SIZE) for p in paths]), np.repeat(np.arange(2), 24)


@pytest.fixture(scope="module")
def chest_model(chest_gray, tmp_path_factory):
    """A small CNN fitted briefly to real chest X-rays, and its ONNX export."""
    import torch

    from edgexray.export.onnx import torch2onnx

    gray, labels = chest_gray
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
    for _ in range(20):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    path = tmp_path_factory.mktemp("saliency") / "model.onnx"
    torch2onnx(model, path, input_shape=(1, 1, SIZE, SIZE), dynamic_batch=True)
    return SimpleNamespace(model=model, preprocess=PRE, class_names=CLASSES), path


def test_deployed_saliency_on_real_chest_xrays(chest_gray, chest_model):
    from edgexray.runtime import run_py
    from edgexray.runtime.runners import runner_for_file

    gray, _ = chest_gray
    base, onnx_file = chest_model
    block, figures = deployed_saliency(base, onnx_file, PRE, gray, [0, 30])
    assert block["runner"] == "OrtRunner" and block["file"] == "model.onnx"
    assert [r["index"] for r in block["images"]] == [0, 30]
    assert all(0.0 <= r["iou"] <= 1.0 and r["class"] in CLASSES for r in block["images"])
    assert block["mean_iou"] == pytest.approx(np.mean([r["iou"] for r in block["images"]]), abs=1e-4)
    assert sorted(figures) == [
        "val-0-gradcam.png",
        "val-0-occlusion.png",
        "val-30-gradcam.png",
        "val-30-occlusion.png",
    ]
    assert all(png[:8] == b"\x89PNG\r\n\x1a\n" for _, png in figures.values())
    # through the runner class run.py loads the file with: the same class, the same map
    x, occ = PRE.normalize(gray[0]), Occlusion(patch=8, stride=4)
    assert type(runner_for_file(onnx_file)) is run_py.OrtRunner
    np.testing.assert_array_equal(
        file_occlusion(onnx_file, x, 1, occ, threads=1),
        occlusion_map(run_py.OrtRunner(onnx_file, 1).predict_all, x, 1, occ),
    )


@pytest.mark.slow
def test_build_reports_saliency_of_the_shipped_file_on_real_xrays(chest_build):
    """A real-data build: the manifest and summary carry the saliency block, the artifact's report
    its numbers (no overlays: patient images), the build folder the overlays."""
    summary, base = chest_build
    artifact = Path(summary["artifact"])
    manifest = json.loads((artifact / "manifest.json").read_text())
    block = manifest["saliency"]
    assert summary["saliency"] == block and not summary["synthetic"]
    assert block["precision"] == manifest["model"]["precision"] and len(block["images"]) == 4
    assert all(0.0 <= r["iou"] <= 1.0 for r in block["images"]) and 0.0 <= block["mean_iou"] <= 1.0
    report = (artifact / "report.html").read_text()
    assert "left out of this artifact for privacy" in report and "top 15% pixels" in report
    assert block["overlays"] in report
    build_dir = base / "out" / block["overlays"].split("/")[0]
    saliency_dir = build_dir / "saliency"
    assert (saliency_dir / "report.html").is_file()
    assert (
        len(list(saliency_dir.glob("val-*-gradcam.png")))
        == len(list(saliency_dir.glob("val-*-occlusion.png")))
        == 4
    )
    assert not [p for p in artifact.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg")]

    # the artifact's own run.py loads the shipped file with the class the build's map came from
    spec = importlib.util.spec_from_file_location("artifact_run_py", artifact / "run.py")
    run_py = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = run_py  # its dataclasses look their module up
    try:
        spec.loader.exec_module(run_py)
        runner = run_py.load_model(artifact, manifest, threads=1)
    finally:
        sys.modules.pop(spec.name, None)
    assert type(runner).__name__ == block["runner"]
    pre = Preprocess.from_dict(manifest["preprocess"])
    x = pre.normalize(np.full((pre.size, pre.size), 0.5, np.float32))
    occ = occlusion_for_size(pre.size)
    np.testing.assert_array_equal(
        occlusion_map(runner.predict_all, x, 0, occ),
        file_occlusion(artifact / manifest["model"]["file"], x, 0, occ, threads=1),
    )
