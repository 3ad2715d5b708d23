"""Temperature scaling (fitted on the validation split) and its expected calibration error.

Dividing the logits by one temperature T leaves every argmax unchanged; T > 1 softens an
over-confident model's probabilities. numpy + scipy only.
"""

from __future__ import annotations

import numpy as np

T_BOUNDS = (0.05, 20.0)
ECE_BINS = 15


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def nll(logits, labels, temperature: float) -> float:
    """Mean negative log-likelihood of `labels` under softmax(logits / temperature)."""
    z = np.asarray(logits, np.float64) / temperature
    return float(-_log_softmax(z)[np.arange(len(labels)), np.asarray(labels, int)].mean())


def logits2temperature(logits, labels, bounds=T_BOUNDS) -> float:
    """The temperature in `bounds` that minimizes the NLL of `labels` (bounded scalar search)."""
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(
        lambda t: nll(logits, labels, t), bounds=bounds, method="bounded", options={"xatol": 1e-4}
    )
    return float(res.x)


def expected_calibration_error(probs, labels, bins: int = ECE_BINS) -> float:
    """ECE of the top-1 confidence: sum over equal-width bins of |accuracy - confidence| weighted
    by the bin's share of the images."""
    probs = np.asarray(probs, np.float64)
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    correct = pred == np.asarray(labels, int)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def calibration_record(val_logits, val_y, test_logits=None, test_y=None) -> dict:
    """The manifest's "calibration" block: T fitted on val, ECE before/after on val (and test)."""
    from edgexray.runtime.metrics import softmax

    t = logits2temperature(val_logits, val_y)
    out = {
        "temperature": t,
        "fitted_on": "val",
        "bins": ECE_BINS,
        "ece_before": expected_calibration_error(softmax(val_logits), val_y),
        "ece_after": expected_calibration_error(softmax(np.asarray(val_logits) / t), val_y),
    }
    if test_logits is not None:
        out["test"] = {
            "ece_before": expected_calibration_error(softmax(test_logits), test_y),
            "ece_after": expected_calibration_error(softmax(np.asarray(test_logits) / t), test_y),
        }
    return out
