"""Clinical classification metrics, numpy only (they also run where no scikit-learn is).

Sensitivity and specificity are per class, one-vs-rest; AUCs are one-vs-rest and macro-averaged.
"""

from __future__ import annotations

import warnings

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


ARGMAX_RULE = "argmax (the most probable class)"


def threshold_labels(probs, positive_index: int, threshold: float) -> np.ndarray:
    """run.py predict's labels at an operating point: the positive class when its probability
    is >= `threshold`, else the most probable other class."""
    probs = np.asarray(probs, np.float64)
    others = probs.copy()
    others[:, positive_index] = -np.inf
    return np.where(probs[:, positive_index] >= threshold, positive_index, others.argmax(1))


def threshold_rule(positive_class: str, threshold: float) -> str:
    """The text of an operating point's rule, as the metrics' "decision_rule" states it."""
    return f"operating point: {positive_class} when p >= {threshold:.4f}, else the most probable other class"


def rule_brief(rule: str | None) -> str:
    """A metrics' decision_rule, short for a table: "argmax" or "PNEUMONIA at p >= 0.4123"."""
    if rule is None or rule == ARGMAX_RULE:
        return "argmax"
    return rule.removeprefix("operating point: ").split(", else")[0].replace(" when ", " at ")


def classification_metrics(
    y_true,
    probs,
    class_names,
    intervals: bool = False,
    groups=None,
    seed: int = 0,
    y_pred=None,
    decision_rule: str | None = None,
) -> dict:
    """accuracy, macro precision/recall/F1, per-class sensitivity/specificity, ROC-AUC, PR-AUC
    (one-vs-rest, macro), confusion matrix. `probs` is (N, K) class probabilities.
    `intervals` adds "ci95": bootstrap intervals (over `groups` when given, see
    bootstrap_intervals). The label-based figures use `y_pred` when given (e.g. the labels an
    operating point gives, with `decision_rule` saying so), else the argmax of `probs`; the
    AUCs always use `probs`. "decision_rule" in the result names which."""
    y_true = np.asarray(y_true, int)
    probs = np.asarray(probs, np.float64)
    k = len(class_names)
    if y_pred is None:
        y_pred, decision_rule = probs.argmax(axis=1), ARGMAX_RULE
    else:
        y_pred = np.asarray(y_pred, int)
        if y_pred.shape != y_true.shape:
            raise ValueError(f"y_pred has shape {y_pred.shape}, y_true {y_true.shape}; one label per image")
        decision_rule = decision_rule or "labels given by the caller"
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

    out = {
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
        "decision_rule": decision_rule,
    }
    if intervals:
        out["ci95"] = bootstrap_intervals(y_true, probs, class_names, groups, seed=seed, y_pred=y_pred)
    return out


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


# ---------------------------------------------------------------------------------------------
# Uncertainty: percentile bootstrap, over images or over groups (patients) when group ids are
# given, vectorized as a (resamples x images) matrix of how often each image is drawn.

RESAMPLES = 1000
LEVEL = 0.95


def bootstrap_weights(
    n: int, groups=None, resamples: int = RESAMPLES, seed: int = 0, chunk_cells: int = 4_000_000
):
    """Yield (b x n) int32 matrices, `resamples` rows in all: row r counts how often each image
    is in resample r. With `groups` (one id per image) whole groups are drawn with replacement,
    so images of one patient stay together."""
    rng = np.random.default_rng(seed)
    if groups is None:
        member, units = np.arange(n), n
    else:
        _, member = np.unique(np.asarray(groups).astype(str), return_inverse=True)
        units = int(member.max()) + 1 if n else 0
    rows = max(1, chunk_cells // max(units, 1))
    for start in range(0, resamples, rows):
        b = min(rows, resamples - start)
        draw = rng.integers(0, units, size=(b, units))
        counts = (
            np.bincount((draw + units * np.arange(b)[:, None]).ravel(), minlength=b * units)
            .reshape(b, units)
            .astype(np.int32)
        )
        yield counts[:, member]


def _ratio(num, den):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _weighted_auc(w: np.ndarray, y: np.ndarray, score: np.ndarray) -> np.ndarray:
    """ROC-AUC (ties count one half) for every row of weights `w` (b x n); NaN without both."""
    order = np.argsort(score, kind="mergesort")
    _, first = np.unique(np.asarray(score)[order], return_index=True)
    ws, ys = w[:, order].astype(np.float64), np.asarray(y, bool)[order]
    pos = np.add.reduceat(ws * ys, first, axis=1)
    neg = np.add.reduceat(ws * ~ys, first, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    return _ratio((pos * (below + 0.5 * neg)).sum(1), pos.sum(1) * neg.sum(1))


def _interval(samples: np.ndarray, level: float = LEVEL, scale: float = 1.0):
    samples = np.asarray(samples, np.float64)
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return None
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(samples, [tail, 100 - tail])
    return [float(lo * scale), float(hi * scale)]


def bootstrap_intervals(
    y_true,
    probs,
    class_names,
    groups=None,
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
    y_pred=None,
) -> dict:
    """95% percentile-bootstrap intervals of accuracy, macro ROC-AUC and, per class, sensitivity,
    specificity and ROC-AUC (one-vs-rest). Over groups when `groups` is given. Label-based
    figures use `y_pred` when given, else the argmax of `probs`."""
    y = np.asarray(y_true, int)
    probs = np.asarray(probs, np.float64)
    k = len(class_names)
    pred = probs.argmax(1) if y_pred is None else np.asarray(y_pred, int)
    correct = (pred == y).astype(np.float64)
    acc, aucs = [], []
    sens, spec = [[] for _ in range(k)], [[] for _ in range(k)]
    for w in bootstrap_weights(len(y), groups, resamples, seed):
        wf = w.astype(np.float64)
        acc.append(_ratio(wf @ correct, wf.sum(1)))
        chunk_aucs = []
        for c in range(k):
            is_c, said_c = y == c, pred == c
            sens[c].append(_ratio(wf @ (is_c & said_c), wf @ is_c))
            spec[c].append(_ratio(wf @ (~is_c & ~said_c), wf @ ~is_c))
            chunk_aucs.append(_weighted_auc(w, is_c, probs[:, c]))
        aucs.append(np.stack(chunk_aucs, 1))
    aucs = np.concatenate(aucs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN row: no class pair drawn
        macro_auc = np.nanmean(aucs, axis=1)
    return {
        "level": level,
        "resamples": resamples,
        "seed": seed,
        "unit": "image" if groups is None else "group",
        "n_units": int(len(y) if groups is None else len(np.unique(np.asarray(groups).astype(str)))),
        "accuracy": _interval(np.concatenate(acc), level),
        "roc_auc": _interval(macro_auc, level),
        "per_class": {
            name: {
                "sensitivity": _interval(np.concatenate(sens[c]), level),
                "specificity": _interval(np.concatenate(spec[c]), level),
                "roc_auc": _interval(aucs[:, c], level),
            }
            for c, name in enumerate(class_names)
        },
    }


def paired_drop(
    y_true,
    pred_ref,
    pred_cand,
    class_names,
    groups=None,
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
) -> dict:
    """Accuracy and per-class sensitivity drop (percentage points, reference minus candidate)
    of two models' predictions on the same images, with paired bootstrap intervals: each
    resample draws the same images (or groups) for both models, so what they share cancels."""
    y = np.asarray(y_true, int)
    ok_ref = (np.asarray(pred_ref) == y).astype(np.float64)
    ok_cand = (np.asarray(pred_cand) == y).astype(np.float64)
    delta = ok_ref - ok_cand
    masks = [(y == c).astype(np.float64) for c in range(len(class_names))]
    acc, per = [], [[] for _ in class_names]
    for w in bootstrap_weights(len(y), groups, resamples, seed):
        wf = w.astype(np.float64)
        acc.append(_ratio(wf @ delta, wf.sum(1)))
        for c, m in enumerate(masks):
            per[c].append(_ratio(wf @ (delta * m), wf @ m))

    def point(m):
        return float(100 * (delta * m).sum() / m.sum()) if m.sum() else None

    return {
        "level": level,
        "resamples": resamples,
        "seed": seed,
        "unit": "image" if groups is None else "group",
        "n_images": int(len(y)),
        "accuracy_drop_pp": point(np.ones_like(delta)),
        "accuracy_drop_interval_pp": _interval(np.concatenate(acc), level, 100.0),
        "per_class": {
            name: {
                "sensitivity_drop_pp": point(masks[c]),
                "sensitivity_drop_interval_pp": _interval(np.concatenate(per[c]), level, 100.0),
            }
            for c, name in enumerate(class_names)
        },
    }


def budget_check(
    y_true, pred_ref, pred_cand, class_names, budget_pp: float, groups=None, seed: int = 0
) -> dict:
    """The accuracy budget as a paired test on the same images: the upper 95% bound of the
    accuracy drop must be <= `budget_pp`, and no class's sensitivity may drop by more than
    `budget_pp` (judged on the point estimate: a class's own interval on a small split is too
    wide to gate on, while a collapse of one class shows in its point estimate).
    `too_small` is True when the drop's interval is wider than the budget: the split cannot
    resolve a difference of that size."""
    d = paired_drop(y_true, pred_ref, pred_cand, class_names, groups, seed=seed)
    failures = []
    lo, hi = d["accuracy_drop_interval_pp"] or [d["accuracy_drop_pp"]] * 2
    if hi > budget_pp + 1e-9:
        failures.append(
            f"accuracy drop {d['accuracy_drop_pp']:.2f} pp, upper 95% bound {hi:.2f} pp > {budget_pp} pp"
        )
    for name, c in d["per_class"].items():
        if c["sensitivity_drop_pp"] is not None and c["sensitivity_drop_pp"] > budget_pp + 1e-9:
            failures.append(f"{name} sensitivity drop {c['sensitivity_drop_pp']:.2f} pp > {budget_pp} pp")
    too_small = hi - lo > budget_pp
    return {
        **d,
        "budget_pp": budget_pp,
        "passed": not failures,
        "failures": failures,
        "too_small": bool(too_small),
        "note": (
            f"split too small for the {budget_pp} pp budget to mean anything: the 95% "
            f"interval of the drop is {hi - lo:.2f} pp wide ({d['n_images']} images)"
            if too_small
            else None
        ),
    }


def budget_text(check: dict) -> str:
    """One line for a budget_check result."""
    lo, hi = check["accuracy_drop_interval_pp"]
    text = f"val drop {check['accuracy_drop_pp']:.2f} pp (95% CI {lo:.2f} to {hi:.2f})"
    if check["failures"]:
        text += "; " + "; ".join(check["failures"])
    if check["note"]:
        text += f" [{check['note']}]"
    return text
