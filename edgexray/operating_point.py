"""The decision threshold of one positive class, chosen on the validation split for a target
sensitivity (`edgexray build --positive-class NAME --target-sensitivity 0.95`)."""

from __future__ import annotations

import math

import numpy as np

from edgexray.runtime.errors import EdgeXrayError


def check_options(positive_class, target_sensitivity, class_names=None) -> None:
    """Raise EdgeXrayError for one option without the other, a target outside (0, 1] or a
    class that the model does not have (`class_names` None: not known yet)."""
    if (positive_class is None) != (target_sensitivity is None):
        raise EdgeXrayError(
            "--positive-class and --target-sensitivity go together; give both "
            "(e.g. --positive-class PNEUMONIA --target-sensitivity 0.95) or neither"
        )
    if target_sensitivity is not None and not (0 < target_sensitivity <= 1):
        raise EdgeXrayError(f"--target-sensitivity {target_sensitivity}; must be in (0, 1], e.g. 0.95")
    if positive_class is not None and class_names is not None and positive_class not in class_names:
        raise EdgeXrayError(
            f"--positive-class {positive_class!r} is not a class of this model; "
            f"its classes are {list(class_names)}"
        )


def probs2threshold(pos_probs, is_pos, target: float) -> float:
    """The highest threshold t with sensitivity (share of positives whose probability >= t)
    at least `target`: the k-th highest positive probability, k = ceil(target * positives)."""
    scores = np.sort(np.asarray(pos_probs, np.float64)[np.asarray(is_pos, bool)])[::-1]
    if scores.size == 0:
        raise EdgeXrayError(
            "the validation split has no image of the positive class; the "
            "threshold cannot be chosen (use more images of that class)"
        )
    k = max(1, math.ceil(target * scores.size - 1e-9))
    return float(scores[k - 1])


def rates(pos_probs, is_pos, threshold: float) -> dict:
    pred, y = np.asarray(pos_probs) >= threshold, np.asarray(is_pos, bool)
    return {
        "sensitivity": float(pred[y].mean()) if y.any() else None,
        "specificity": float((~pred[~y]).mean()) if (~y).any() else None,
    }


def rate_intervals(pos_probs, is_pos, threshold: float, groups=None, seed: int = 0) -> dict:
    """95% bootstrap intervals of sensitivity and specificity at `threshold` (over groups)."""
    from edgexray.runtime.metrics import _interval, _ratio, bootstrap_weights

    pred, y = np.asarray(pos_probs) >= threshold, np.asarray(is_pos, bool)
    sens, spec = [], []
    for w in bootstrap_weights(len(y), groups, seed=seed):
        sens.append(_ratio((w * (pred & y)).sum(1), (w * y).sum(1)))
        spec.append(_ratio((w * (~pred & ~y)).sum(1), (w * ~y).sum(1)))
    return {"sensitivity": _interval(np.concatenate(sens)), "specificity": _interval(np.concatenate(spec))}


def decision_record(
    positive_class, target, class_names, val_probs, val_y, test_probs, test_y, test_groups=None, seed: int = 0
) -> dict:
    """The manifest's "decision" block: threshold chosen on val, its val and test rates."""
    from edgexray.runtime.metrics import bootstrap_intervals, threshold_labels

    i = list(class_names).index(positive_class)
    t = probs2threshold(np.asarray(val_probs)[:, i], np.asarray(val_y) == i, target)
    test_pos, test_is = np.asarray(test_probs)[:, i], np.asarray(test_y) == i
    # the labels run.py prints at this point: accuracy over every class, not only the positive's
    test_labels = threshold_labels(test_probs, i, t)
    accuracy_ci = bootstrap_intervals(
        test_y, test_probs, class_names, test_groups, seed=seed, y_pred=test_labels
    )["accuracy"]
    return {
        "positive_class": positive_class,
        "threshold": t,
        "target_sensitivity": target,
        "chosen_on": "val",
        "probabilities": "calibrated (after temperature scaling)",
        "rule": "label = positive class when its probability >= threshold",
        "val": rates(np.asarray(val_probs)[:, i], np.asarray(val_y) == i, t),
        "test": {
            **rates(test_pos, test_is, t),
            "accuracy": float(np.mean(test_labels == np.asarray(test_y))) if len(test_labels) else None,
            "ci95": {**rate_intervals(test_pos, test_is, t, test_groups, seed), "accuracy": accuracy_ci},
        },
    }
