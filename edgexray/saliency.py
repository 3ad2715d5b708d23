"""Saliency of the shipped file beside Grad-CAM of the unpruned model, and how much they agree.

An exported file (.tflite, .onnx) has no gradients, so its saliency is an occlusion map: the drop
in the explained class's probability when a patch of the input is set to the normalization mean,
computed through the same runner class every artifact's run.py uses (edgexray.runtime.runners).
Agreement is the IoU of the two maps' top pixels (default the top 15%).

    heat = file_occlusion("model.tflite", x_chw, target=1, occlusion=occlusion_for_size(64))
    agreement(gradcam_map, heat)   # 1: the same pixels matter most; 0: disjoint
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TOP_FRACTION = 0.15


@dataclass(frozen=True)
class Occlusion:
    patch: int  # side of the square set to `baseline`, in input pixels
    stride: int
    baseline: float = 0.0  # in normalized units: 0 is the normalization mean


def occlusion_for_size(size: int) -> Occlusion:
    """An eighth of the side per patch, half a patch per step: 15 x 15 copies of one image."""
    patch = max(2, size // 8)
    return Occlusion(patch=patch, stride=max(1, patch // 2))


def _starts(extent: int, patch: int, stride: int) -> list[int]:
    starts = list(range(0, max(1, extent - patch + 1), stride))
    if starts[-1] + patch < extent:  # the last patch reaches the edge
        starts.append(extent - patch)
    return starts


def occluded_copies(x: np.ndarray, occlusion: Occlusion) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """(C, H, W) -> one copy per patch position (N, C, H, W) and the positions (top, left)."""
    _, h, w = x.shape
    p = occlusion.patch
    boxes = [(t, left) for t in _starts(h, p, occlusion.stride) for left in _starts(w, p, occlusion.stride)]
    copies = np.repeat(np.asarray(x, np.float32)[None], len(boxes), axis=0)
    for copy, (t, left) in zip(copies, boxes):
        copy[:, t : t + p, left : left + p] = occlusion.baseline
    return copies, boxes


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def occlusion_map(
    predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, target: int, occlusion: Occlusion
) -> np.ndarray:
    """(H, W) map in [0, 1] for one normalized image (C, H, W): each pixel's mean drop in the
    `target` probability over the patches covering it. `predict`: (N, C, H, W) -> (N, classes)
    logits; it gets the image and all its occluded copies in one call (it batches them)."""
    copies, boxes = occluded_copies(x, occlusion)
    probs = _softmax(
        np.asarray(predict(np.concatenate([np.asarray(x, np.float32)[None], copies])), np.float64)
    )
    drops = np.clip(probs[0, target] - probs[1:, target], 0.0, None)
    heat, cover = np.zeros(x.shape[1:]), np.zeros(x.shape[1:])
    p = occlusion.patch
    for drop, (t, left) in zip(drops, boxes):
        heat[t : t + p, left : left + p] += drop
        cover[t : t + p, left : left + p] += 1
    heat /= np.maximum(cover, 1)
    peak = heat.max()
    return (heat / peak if peak > 0 else heat).astype(np.float32)


def file_occlusion(path, x: np.ndarray, target: int, occlusion: Occlusion, threads: int | None = None):
    """occlusion_map of an exported file, run by the runner class run.py loads it with."""
    from edgexray.runtime.runners import runner_for_file

    return occlusion_map(runner_for_file(path, threads).predict_all, x, target, occlusion)


def top_mask(heat: np.ndarray, top: float = TOP_FRACTION) -> np.ndarray:
    """The `top` fraction of pixels with the highest values (ties: the first in raster order)."""
    flat = np.asarray(heat, np.float64).ravel()
    k = max(1, int(round(top * flat.size)))
    mask = np.zeros(flat.size, bool)
    mask[np.argsort(-flat, kind="stable")[:k]] = True
    return mask.reshape(np.shape(heat))


def agreement(map_a: np.ndarray, map_b: np.ndarray, top: float = TOP_FRACTION) -> float:
    """IoU of the two maps' top-`top` pixels: 1 when the same pixels matter most, 0 when none do."""
    if np.shape(map_a) != np.shape(map_b):
        raise ValueError(f"saliency maps differ in shape: {np.shape(map_a)} vs {np.shape(map_b)}")
    a, b = top_mask(map_a, top), top_mask(map_b, top)
    return float((a & b).sum() / (a | b).sum())


def sample_indices(n_images: int, n: int, seed: int) -> list[int]:
    """`n` seeded distinct indices of a split, in order."""
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n_images, size=min(n, n_images), replace=False))


def deployed_saliency(base, shipped_file, file_preprocess, gray: np.ndarray, indices, top=TOP_FRACTION):
    """Grad-CAM of the unpruned checkpoint `base` beside the occlusion map of `shipped_file` for
    the class Grad-CAM explains, on images `gray[indices]` ((N, H, W) in [0, 1]).
    Returns (the "saliency" block: per-image and mean IoU, {file name: (caption, overlay PNG)})."""
    import torch

    from edgexray import plots
    from edgexray.gradcam import gradcam
    from edgexray.runtime.runners import runner_for_file

    runner = runner_for_file(shipped_file)
    occlusion = occlusion_for_size(gray.shape[-1])
    rows, pngs = [], {}
    for i in indices:
        image = np.asarray(gray[i], np.float32)
        cam, target = gradcam(base.model, torch.from_numpy(base.preprocess.normalize(image))[None])
        heat = occlusion_map(runner.predict_all, file_preprocess.normalize(image), target, occlusion)
        iou = agreement(cam, heat, top)
        name = base.class_names[target]
        rows.append({"index": int(i), "class": name, "iou": round(iou, 4)})
        for tag, what, heat_map in (
            ("gradcam", "Grad-CAM, unpruned", cam),
            ("occlusion", "occlusion, shipped", heat),
        ):
            title = f"val {i} ({name}): {what}, IoU {iou:.2f}"
            pngs[f"val-{i}-{tag}.png"] = (title, plots.overlay_heatmap(image, heat_map, title=title))
    block = {
        "method": "Grad-CAM of the unpruned PyTorch model vs occlusion of the shipped file",
        "split": "val",
        "file": Path(shipped_file).name,
        "runner": type(runner).__name__,
        "top_fraction": top,
        "occlusion": {"patch": occlusion.patch, "stride": occlusion.stride, "baseline": occlusion.baseline},
        "images": rows,
        "mean_iou": round(float(np.mean([r["iou"] for r in rows])), 4) if rows else None,
    }
    return block, pngs
