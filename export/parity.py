"""Does an exported file still behave like the PyTorch model it came from?

The file runs through edgexray.runtime.runners: the very runner classes inside run.py.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from edgexray.runtime.metrics import classification_metrics, softmax
from edgexray.runtime.runners import predict_file

log = logging.getLogger(__name__)

FP32_MIN_TOP1_AGREEMENT = 0.999  # fraction of images with the same predicted class
FP32_MAX_ABS_DIFF = 1e-3  # largest allowed logit difference, any image, any class
DEFAULT_MAX_ACCURACY_DROP = 1.0  # percentage points, for reduced precisions


def parity(
    reference_logits: np.ndarray,
    labels: np.ndarray,
    candidate_path: str | os.PathLike,
    inputs: np.ndarray,
    class_names,
    *,
    precision: str = "fp32",
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP,
    threads: int | None = None,
    candidate_logits: np.ndarray | None = None,
) -> dict:
    """Run `candidate_path` on `inputs` (float32 NCHW, normalized) and compare it with the
    PyTorch `reference_logits` on the same images.

    fp32 files must agree (top-1 >= 99.9 %, max |logit diff| <= 1e-3); other precisions fail
    when accuracy falls by more than `max_accuracy_drop` percentage points. Returns a JSON-ready
    dict with the differences, both models' metrics side by side, `passed` and `failures`.
    """
    reference_logits = np.asarray(reference_logits, np.float32)
    labels = np.asarray(labels, np.int64)
    if candidate_logits is None:
        candidate_logits = predict_file(candidate_path, inputs, threads)
    diff = np.abs(candidate_logits - reference_logits)
    agreement = float((candidate_logits.argmax(1) == reference_logits.argmax(1)).mean())
    ref = classification_metrics(labels, softmax(reference_logits), class_names)
    cand = classification_metrics(labels, softmax(candidate_logits), class_names)
    drop_pp = 100.0 * (ref["accuracy"] - cand["accuracy"])
    failures = []
    if precision == "fp32":
        if agreement < FP32_MIN_TOP1_AGREEMENT:
            failures.append(f"top-1 agreement {agreement:.4f} < {FP32_MIN_TOP1_AGREEMENT}")
        if diff.max() > FP32_MAX_ABS_DIFF:
            failures.append(f"max abs logit diff {diff.max():.3g} > {FP32_MAX_ABS_DIFF}")
    elif drop_pp > max_accuracy_drop:
        failures.append(
            f"accuracy drop {drop_pp:.2f} pp > {max_accuracy_drop} pp "
            f"({ref['accuracy']:.4f} -> {cand['accuracy']:.4f})"
        )
    result = {
        "file": Path(candidate_path).name,
        "precision": precision,
        "n_images": int(len(labels)),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "top1_agreement": agreement,
        "accuracy_drop_pp": drop_pp,
        "thresholds": (
            {"min_top1_agreement": FP32_MIN_TOP1_AGREEMENT, "max_abs_diff": FP32_MAX_ABS_DIFF}
            if precision == "fp32"
            else {"max_accuracy_drop_pp": max_accuracy_drop}
        ),
        "passed": not failures,
        "failures": failures,
        "reference": _summary(ref),
        "candidate": _summary(cand),
    }
    log.info(
        "parity %s: max diff %.3g, agreement %.4f, accuracy %.4f -> %.4f%s",
        result["file"],
        result["max_abs_diff"],
        agreement,
        ref["accuracy"],
        cand["accuracy"],
        "" if not failures else f" FAILED: {'; '.join(failures)}",
    )
    return result


def _summary(m: dict) -> dict:
    keep = ("accuracy", "macro_f1", "roc_auc", "macro_precision", "macro_recall")
    return {
        **{k: m[k] for k in keep},
        "per_class": {
            c: {"sensitivity": v["sensitivity"], "specificity": v["specificity"]}
            for c, v in m["per_class"].items()
        },
        "confusion_matrix": m["confusion_matrix"],
    }
