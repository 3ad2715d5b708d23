"""Coarse dropout in the training augmentation and the named TTA views (fast, no data)."""

import numpy as np
import pytest
import torch

from edgexray.data.augment import AugmentConfig, augment_image, cutout_boxes, cutout_image
from edgexray.evaluate import TTA_SETS, TTA_VIEWS, predict_proba, tta_views_of
from edgexray.runtime.errors import EdgeXrayError


def test_cutout_changes_pixels_only_inside_holes_and_keeps_shape_and_range():
    x = torch.rand(1, 32, 32)
    boxes = cutout_boxes(32, 3, 0.25, torch.Generator().manual_seed(1))
    out = cutout_image(x, boxes)
    inside = torch.zeros(32, 32, dtype=torch.bool)
    for y0, x0, y1, x1 in boxes:
        assert 0 <= y0 < y1 <= 32 and 0 <= x0 < x1 <= 32
        inside[y0:y1, x0:x1] = True
    assert out.shape == x.shape and inside.any()
    assert torch.equal(out[0][~inside], x[0][~inside])
    assert torch.allclose(out[0][inside], x.mean().expand(int(inside.sum())))
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_augment_with_only_cutout_touches_only_the_drawn_holes():
    cfg = AugmentConfig(
        hflip=False, rotate_deg=0, shift=0, scale=0, brightness=0, contrast=0, cutout=1.0, cutout_holes=2
    )
    x = torch.rand(1, 24, 24)
    out = augment_image(x.clone(), cfg, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    torch.rand((), generator=g)  # the cutout coin
    expected = cutout_image(x, cutout_boxes(24, 2, 0.25, g))
    assert out.shape == x.shape and torch.equal(out, expected) and not torch.equal(out, x)
    assert torch.equal(augment_image(x.clone(), AugmentConfig(**{**cfg.to_dict(), "cutout": 0.0}), g), x)


@pytest.mark.parametrize("bad", [dict(cutout=1.5), dict(cutout_size=0.0), dict(cutout_holes=0)])
def test_cutout_config_refuses_out_of_range(bad):
    with pytest.raises(EdgeXrayError):
        AugmentConfig(**bad)


def test_tta_views_keep_shape():
    x = np.random.default_rng(0).normal(size=(3, 1, 32, 32)).astype(np.float32)
    for name, view in TTA_VIEWS.items():
        assert view(x).shape == x.shape, name
    assert np.array_equal(TTA_VIEWS["shift-right"](x)[..., 1:], x[..., :-1])
    assert tta_views_of(True) == ("identity", "mirror") and tta_views_of(False) == ("identity",)
    with pytest.raises(EdgeXrayError):
        tta_views_of("nope")


def test_tta_prediction_is_the_mean_of_the_per_view_predictions():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 2),
    ).eval()
    x = np.random.default_rng(1).normal(size=(5, 1, 16, 16)).astype(np.float32)
    for name, views in TTA_SETS.items():
        per_view = [predict_proba(model, np.ascontiguousarray(TTA_VIEWS[v](x))) for v in views]
        np.testing.assert_allclose(predict_proba(model, x, tta=name), np.mean(per_view, 0), atol=1e-6)
