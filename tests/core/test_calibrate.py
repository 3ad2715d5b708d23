import numpy as np

from edgexray.calibrate import calibration_record, expected_calibration_error, logits2temperature
from edgexray.runtime.metrics import softmax


def _overconfident(n=2000, k=3, scale=3.0, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, k))
    p = softmax(z).astype(np.float64)
    y = np.array([rng.choice(k, p=row / row.sum()) for row in p])
    return z * scale, y  # labels drawn from softmax(z), logits 3x too sharp


def test_temperature_recovers_overconfidence_and_lowers_ece():
    logits, y = _overconfident()
    t = logits2temperature(logits, y)
    assert 2.4 < t < 3.6
    before = expected_calibration_error(softmax(logits), y)
    after = expected_calibration_error(softmax(logits / t), y)
    assert after < before / 2
    rec = calibration_record(logits[:1000], y[:1000], logits[1000:], y[1000:])
    assert rec["fitted_on"] == "val" and rec["ece_after"] < rec["ece_before"]
    assert rec["test"]["ece_after"] < rec["test"]["ece_before"]
    assert (softmax(logits / t).argmax(1) == logits.argmax(1)).all()


def test_ece_of_perfectly_calibrated_is_small_and_of_wrong_confident_is_large():
    y = np.zeros(100, int)
    assert expected_calibration_error(np.tile([[1.0, 0.0]], (100, 1)), y) == 0.0
    assert expected_calibration_error(np.tile([[0.0, 1.0]], (100, 1)), y) == 1.0
