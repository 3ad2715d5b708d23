"""The shifted validation copy (edgexray.shift) and `edgexray evaluate --shift`."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgexray.cli import main
from edgexray.runtime.errors import EdgeXrayError
from edgexray.shift import PERTURBATIONS, ShiftConfig, images2shifted


def _images(n=4, size=32, dtype=np.float16):
    """load_arrays-like images: float16 N x S x S in [0, 1], away from the ends."""
    rng = np.random.default_rng(7)
    smooth = np.linspace(0.2, 0.8, size)[None, :, None] * np.ones((n, 1, size))
    return np.clip(smooth + rng.uniform(-0.1, 0.1, (n, size, size)), 0, 1).astype(dtype)


def _only(name: str) -> ShiftConfig:
    return dataclasses.replace(ShiftConfig.off(), **{name: getattr(ShiftConfig(), name)})


def test_registry_names_are_the_config_fields():
    assert list(PERTURBATIONS) == [f.name for f in dataclasses.fields(ShiftConfig)]
    assert set(PERTURBATIONS) == {"gamma", "contrast", "blur", "noise", "resolution", "exposure"}


@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_each_perturbation_changes_every_image_and_stays_in_unit_range(name):
    x = _images()
    for seed in range(3):
        y = images2shifted(x, seed, _only(name))
        assert y.shape == x.shape and y.dtype == x.dtype
        assert 0 <= y.min() and y.max() <= 1
        diff = np.abs(y.astype(np.float32) - x.astype(np.float32)).reshape(len(x), -1).mean(1)
        assert (diff > 1e-3).all(), (name, seed, diff)


def test_all_perturbations_stay_in_unit_range_even_at_the_extremes():
    x = np.concatenate([np.zeros((1, 16, 16)), np.ones((1, 16, 16)), _images(2, 16, np.float32)])
    strong = ShiftConfig(resolution=0.9, blur=3, exposure=3, gamma=3, contrast=0.99, noise=0.5)
    y = images2shifted(x, 0, strong)
    assert np.isfinite(y).all() and 0 <= y.min() and y.max() <= 1


def test_deterministic_per_seed_and_per_image():
    x = _images()
    a, b = images2shifted(x, 3), images2shifted(x, 3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, images2shifted(x, 4))
    # image i's shift is its own: shifting a prefix gives the same images
    assert np.array_equal(images2shifted(x[:2], 3), a[:2])
    # one HxW image is shifted as image 0 of a batch
    assert np.array_equal(images2shifted(x[0], 3), a[0])


def test_identity_when_every_strength_is_zero():
    x = _images()
    assert np.array_equal(images2shifted(x, 5, ShiftConfig.off()), x)


def test_config_refuses_bad_strengths_and_round_trips():
    for bad in (
        {"gamma": -1},
        {"noise": float("nan")},
        {"contrast": 1.0},
        {"resolution": 1.2},
        {"blur": True},
    ):
        with pytest.raises(EdgeXrayError):
            ShiftConfig(**bad)
    with pytest.raises(EdgeXrayError, match="unknown shift key"):
        ShiftConfig.from_dict({"sharpen": 1})
    cfg = ShiftConfig(gamma=0.2)
    assert ShiftConfig.from_dict(cfg.to_dict()) == cfg


def test_evaluate_shift_writes_the_shifted_block_with_intervals(tiny_checkpoint, tmp_path):
    out = tmp_path / "ev"
    args = ["evaluate", str(tiny_checkpoint), "--split", "val", "--shift", "--shift-seed", "2"]
    r = CliRunner().invoke(main, [*args, "--out", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    s = m["shifted"]
    assert s["shift"] == ShiftConfig().to_dict() and s["shift_seed"] == 2
    assert s["n"] == m["n"] and s["split"] == "val (shifted)"
    lo, hi = s["ci95"]["accuracy"]
    assert lo <= s["accuracy"] <= hi
    for name, c in s["per_class"].items():
        assert 0 <= c["sensitivity"] <= 1 and 0 <= c["specificity"] <= 1
        assert set(s["ci95"]["per_class"][name]) >= {"sensitivity", "specificity"}
    assert s["drop"]["accuracy_drop_pp"] == pytest.approx(100 * (m["accuracy"] - s["accuracy"]))
    assert "shifted copy (seed 2;" in r.output and "95% intervals" in r.output
    assert "val (shifted) split" in r.output


def test_shifted_metrics_judges_a_model_on_normal_and_shifted_images(tiny_checkpoint):
    from edgexray.checkpoint import load_checkpoint
    from edgexray.shift import shifted_metrics

    ckpt = load_checkpoint(tiny_checkpoint)
    size = ckpt.preprocess.size
    arrays, labels = _images(12, size), np.arange(12) % len(ckpt.class_names)
    r = shifted_metrics(ckpt.model, arrays, labels, ckpt.preprocess, list(ckpt.class_names), seed=1)
    assert r["normal"]["n"] == r["shifted"]["n"] == 12
    assert "ci95" in r["normal"] and "ci95" in r["shifted"] and r["shifted"]["shift_seed"] == 1
    again = shifted_metrics(ckpt.model, arrays, labels, ckpt.preprocess, list(ckpt.class_names), seed=1)
    assert again["shifted"]["accuracy"] == r["shifted"]["accuracy"]
