"""Accuracy of a runner on labeled images, and agreement with reference outputs.

numpy and the standard library only: inlined into every artifact's run.py (after
runtime/preprocess.py, runtime/metrics.py and runtime/runners.py), so the device scores a
model exactly as the host does.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgexray.runtime.errors import EdgeXrayError
from edgexray.runtime.metrics import classification_metrics, softmax, threshold_labels, threshold_rule
from edgexray.runtime.preprocess import read_image_array

try:  # Pillow refuses images of over twice its pixel limit with its own exception class
    from PIL.Image import DecompressionBombError
except ImportError:  # without Pillow such images are not decoded at all
    DecompressionBombError = ValueError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".npy")


def list_images(root) -> list:
    """Image files under a directory (recursive, sorted) or the file itself."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise EdgeXrayError(f"{str(root)!r} is neither an image file nor a directory")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def labeled_images(data_dir, class_names, limit=None) -> list:
    """[(path, label index)] from DATA/<class name>/**; at most `limit` per class (None: all)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise EdgeXrayError(
            f"evaluation data {str(data_dir)!r} is not a directory; expected a "
            f"folder with one subfolder per class: {list(class_names)}"
        )
    present = sorted(p.name for p in data_dir.iterdir() if p.is_dir())
    unknown = [name for name in present if name not in class_names]
    if unknown or not present:
        raise EdgeXrayError(
            f"evaluation data {str(data_dir)!r} has class folders {present}; the "
            f"model's classes are {list(class_names)}; name the subfolders after "
            "them (a missing class is allowed)"
        )
    items = []
    for label, name in enumerate(class_names):
        if (data_dir / name).is_dir():
            paths = list_images(data_dir / name)
            items += [(p, label) for p in (paths if limit is None else paths[:limit])]
    if not items:
        raise EdgeXrayError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {str(data_dir)!r}")
    return items


def load_batch(paths, preprocess) -> np.ndarray:
    """Decode and preprocess images -> float32 NCHW; any size or mode is resized per `preprocess`."""
    arrays = []
    for path in paths:
        try:
            arrays.append(preprocess(read_image_array(path)))
        except (OSError, ValueError, DecompressionBombError) as e:
            raise EdgeXrayError(f"could not read image {str(path)!r}: {e}") from None
    return np.stack(arrays).astype(np.float32)


def predict_probs(runner, paths, preprocess, output_kind="logits", batch=1, temperature=1.0) -> np.ndarray:
    """Class probabilities; logits are divided by `temperature` (the build's calibration) first."""
    out = []
    for i in range(0, len(paths), batch):
        logits = runner.predict(load_batch(paths[i : i + batch], preprocess))
        if output_kind == "probabilities":
            out.append(logits)
        else:
            out.append(softmax(np.asarray(logits, np.float64) / temperature))
    return np.concatenate(out).astype(np.float64)


def agreement(probs: np.ndarray, reference: np.ndarray, reference_label: str) -> dict:
    """How often two models pick the same class on the same images, and their largest gap."""
    probs, reference = np.asarray(probs), np.asarray(reference)
    if probs.shape != reference.shape:
        raise EdgeXrayError(
            f"reference outputs of shape {reference.shape} do not match "
            f"outputs of shape {probs.shape}; use the same images in the same order"
        )
    return {
        "reference": reference_label,
        "n": int(len(probs)),
        "label_agreement": float(np.mean(probs.argmax(1) == reference.argmax(1))),
        "max_abs_prob_diff": float(np.abs(probs - reference).max()),
    }


def evaluate(
    runner,
    items,
    preprocess,
    class_names,
    output_kind="logits",
    data_label="",
    reference=None,
    reference_label="reference",
    temperature=1.0,
    decision=None,
) -> tuple:
    """Score a runner on [(path, label)] -> (accuracy dict for the bench schema, probs). An
    artifact's `temperature` and `decision` (positive class index, threshold) apply as run.py
    predict applies them, so the label figures are those of the labels it prints."""
    paths = [p for p, _ in items]
    y_true = np.asarray([label for _, label in items])
    probs = predict_probs(runner, paths, preprocess, output_kind, temperature=temperature)
    y_pred = rule = None
    if decision is not None:
        y_pred = threshold_labels(probs, decision[0], decision[1])
        rule = threshold_rule(class_names[decision[0]], decision[1])
    metrics = classification_metrics(y_true, probs, list(class_names), y_pred=y_pred, decision_rule=rule)
    result = {
        "n": int(len(items)),
        "data": data_label or os.path.commonpath([str(p) for p in paths]),
        "metrics": metrics,
        "agreement": None if reference is None else agreement(probs, reference, reference_label),
    }
    return result, probs
