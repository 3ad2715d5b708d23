"""Clinical classification metrics, numpy only (they also run where no scikit-learn is).

Sensitivity and specificity are per class, one-vs-rest; AUCs are one-vs-rest and macro-averaged.
"""
from __future__ import annotations

import numpy as np


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return cm


def roc_auc_binary(y: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U with tied ranks averaged); None if one class."""
    y = np.asarray(y, bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(score, kind="mergesort")
    sorted_scores = np.asarray(score)[order]
    ranks = np.empty(len(score), dtype=np.float64)
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision_binary(y: np.ndarray, score: np.ndarray) -> float | None:
    """PR-AUC as average precision (step-wise, as scikit-learn computes it)."""
    y = np.asarray(y, bool)
    if not y.any():
        return None
    order = np.argsort(-np.asarray(score), kind="mergesort")
    y_sorted, s_sorted = y[order], np.asarray(score)[order]
    tp = np.cumsum(y_sorted)
    fp = np.cumsum(~y_sorted)
    last = np.r_[np.diff(s_sorted) != 0, True]  # one point per distinct threshold
    tp, fp = tp[last], fp[last]
    precision = tp / (tp + fp)
    recall = tp / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _safe_div(a: float, b: float) -> float:
    return float(a / b) if b else 0.0


def classification_metrics(y_true, probs, class_names) -> dict:
    """accuracy, macro precision/recall/F1, per-class sensitivity/specificity, ROC-AUC, PR-AUC
    (one-vs-rest, macro), confusion matrix. `probs` is (N, K) class probabilities."""
    y_true = np.asarray(y_true, int)
    probs = np.asarray(probs, np.float64)
    k = len(class_names)
    y_pred = probs.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, k)
    per_class = {}
    for i, name in enumerate(class_names):
        tp = cm[i, i]
        fn = cm[i].sum() - tp
        fp = cm[:, i].sum() - tp
        tn = cm.sum() - tp - fn - fp
        precision, recall = _safe_div(tp, tp + fp), _safe_div(tp, tp + fn)
        per_class[name] = {
            "support": int(cm[i].sum()),
            "precision": precision,
            "sensitivity": recall,
            "specificity": _safe_div(tn, tn + fp),
            "f1": _safe_div(2 * precision * recall, precision + recall),
            "roc_auc": roc_auc_binary(y_true == i, probs[:, i]),
            "pr_auc": average_precision_binary(y_true == i, probs[:, i]),
        }

    def macro(key):
        values = [c[key] for c in per_class.values() if c[key] is not None]
        return float(np.mean(values)) if values else None

    return {
        "n": int(len(y_true)),
        "accuracy": _safe_div(np.trace(cm), cm.sum()),
        "macro_precision": macro("precision"),
        "macro_recall": macro("sensitivity"),
        "macro_f1": macro("f1"),
        "roc_auc": macro("roc_auc"),
        "pr_auc": macro("pr_auc"),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "class_names": list(class_names),
    }


def softmax(logits) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def roc_curve(y, score) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every distinct threshold."""
    y = np.asarray(y, bool)
    order = np.argsort(-np.asarray(score), kind="mergesort")
    tp = np.r_[0, np.cumsum(y[order])]
    fp = np.r_[0, np.cumsum(~y[order])]
    return fp / max(fp[-1], 1), tp / max(tp[-1], 1)


def pr_curve(y, score) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) at every threshold, highest score first."""
    y = np.asarray(y, bool)
    order = np.argsort(-np.asarray(score), kind="mergesort")
    tp = np.cumsum(y[order])
    precision = tp / np.arange(1, len(y) + 1)
    return tp / max(y.sum(), 1), precision
