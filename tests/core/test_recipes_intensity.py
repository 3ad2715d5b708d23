"""The per-image intensity step (runtime.preprocess, applied by run.py) matches the training path;
the recipe registry applies its settings and refuses unknown names; the train CLI's --no-flip,
--photometric, --intensity and --recipe reach the configs (issue 11, point 9)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgexray.data.augment import AugmentConfig, augment_image
from edgexray.data.loader import XrayDataset
from edgexray.recipes import RECIPES, recipe2configs, recipe_named
from edgexray.runtime.errors import EdgeXrayError
from edgexray.runtime.preprocess import Preprocess, equalize_images, standardize_images
from edgexray.train import ModelConfig, TrainConfig


def _films(n=6, size=24, seed=0):
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.1, 0.8, size, dtype=np.float32)[None, :, None]
    return np.clip(ramp + 0.1 * rng.random((n, size, size), np.float32), 0, 1).astype(np.float16)


@pytest.mark.parametrize("intensity", ["standardize", "equalize"])
def test_device_preprocess_matches_the_training_dataset(intensity):
    films = _films()
    pre = Preprocess(size=24, mean=(0.45,), std=(0.2,), intensity=intensity)
    device = pre.normalize(films.astype(np.float32))  # what run.py and evaluate feed the model
    trained = np.stack([XrayDataset(films, [0] * len(films), pre)[i][0].numpy() for i in range(len(films))])
    np.testing.assert_allclose(trained, device, atol=1e-5)
    plain = Preprocess(size=24, mean=(0.45,), std=(0.2,)).normalize(films.astype(np.float32))
    assert np.abs(device - plain).max() > 0.1  # the step really changes what the model sees


def test_rendered_run_py_applies_the_manifest_intensity(tmp_path, monkeypatch):
    import importlib.util
    import sys

    from edgexray.export.run_py_render import render_run_py

    path = tmp_path / "run.py"
    path.write_text(render_run_py("0" * 64), encoding="utf-8")
    spec = importlib.util.spec_from_file_location("rendered_run_py_intensity", path)
    run_py = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, run_py)
    spec.loader.exec_module(run_py)
    pre = Preprocess(size=24, mean=(0.45,), std=(0.2,), intensity="equalize")
    on_device = run_py.Preprocess.from_dict(pre.to_dict())  # what run.py reads from manifest.json
    films = _films().astype(np.float32)
    np.testing.assert_array_equal(on_device.normalize(films), pre.normalize(films))
    assert on_device.intensity == "equalize"


def test_standardize_takes_out_exposure_and_contrast():
    films = _films().astype(np.float32)
    out = standardize_images(films)
    np.testing.assert_allclose(out.mean(axis=(1, 2)), 0.5, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(1, 2)), 0.25, atol=1e-5)
    np.testing.assert_allclose(standardize_images(0.3 + 0.5 * films), out, atol=1e-4)
    assert np.all(standardize_images(np.full((4, 4), 0.7, np.float32)) == 0.5)


def test_equalize_maps_levels_to_their_rank_and_ignores_a_tone_curve():
    levels = np.array([0, 50, 100, 200], np.float32) / 255
    image = np.repeat(levels, 16).reshape(8, 8)
    np.testing.assert_allclose(np.unique(equalize_images(image)), [0, 1 / 3, 2 / 3, 1], atol=1e-6)
    np.testing.assert_array_equal(equalize_images(image**1.6), equalize_images(image))
    batch = np.stack([image, np.full((8, 8), 0.4, np.float32)])
    out = equalize_images(batch)
    np.testing.assert_array_equal(out[0], equalize_images(image))  # images do not mix
    assert np.all(out[1] == 0.5)


def test_intensity_is_recorded_only_when_used_and_checked():
    assert "intensity" not in Preprocess(size=32).to_dict()  # older manifests stay as they were
    pre = Preprocess(size=32, intensity="equalize")
    assert pre.to_dict()["intensity"] == "equalize" and Preprocess.from_dict(pre.to_dict()) == pre
    with pytest.raises(ValueError, match="allowed"):
        Preprocess(size=32, intensity="clahe")
    with pytest.raises(EdgeXrayError, match="standardize, equalize"):
        ModelConfig(intensity="clahe")


def test_int8_calibration_data_carries_the_intensity_step():
    from edgexray.export.calibration import CalibrationSet

    calib = CalibrationSet(
        gray=_films(size=32).astype(np.float32), preprocess=Preprocess(size=32, intensity="equalize")
    )
    mean, std = calib.mean_std_nhwc()
    np.testing.assert_allclose((calib.unit_nhwc() - mean) / std, calib.nhwc(), rtol=1e-5, atol=1e-5)


def test_tasks_variant_refuses_a_per_image_intensity_step(tmp_path):
    from edgexray.export.tasks_variant import torch2tasks_tflite

    with pytest.raises(EdgeXrayError, match="intensity step .equalize.*--intensity none"):
        torch2tasks_tflite(
            None, tmp_path / "t.tflite", preprocess=Preprocess(size=32, intensity="equalize"), calib=None
        )


def test_photometric_scales_the_jitter_and_zero_turns_it_off():
    x = torch.from_numpy(_films(1, 32)[0].astype(np.float32))[None]
    still = dict(hflip=False, rotate_deg=0.0, shift=0.0, scale=0.0, gamma=0.3)
    off = augment_image(x.clone(), AugmentConfig(photometric=0.0, **still), torch.Generator().manual_seed(1))
    torch.testing.assert_close(off, x)
    on = augment_image(x.clone(), AugmentConfig(photometric=2.0, **still), torch.Generator().manual_seed(1))
    assert (on - x).abs().max() > 0.01
    with pytest.raises(EdgeXrayError, match="photometric"):
        AugmentConfig(brightness=0.2, photometric=5.0)  # a factor 1 - 1.0 would black the film out


def test_recipe_applies_its_settings_where_the_defaults_still_stand():
    robust = recipe_named("robust")
    model_cfg, train_cfg, augment = recipe2configs("robust")
    for name, value in robust.settings().items():
        got = [getattr(c, name) for c in (model_cfg, train_cfg, augment) if hasattr(c, name)]
        assert got == [value], name
    assert train_cfg.recipe == "robust"
    # a value the caller set wins over the recipe, and no augmentation stays none
    model_cfg, train_cfg, augment = recipe2configs(
        "robust", ModelConfig(intensity="standardize"), TrainConfig(epochs=2), None
    )
    assert model_cfg.intensity == "standardize" and train_cfg.epochs == 2 and augment is None
    plain = recipe2configs("default")
    assert plain[0] == ModelConfig() and plain[2] == AugmentConfig() and plain[1].recipe == "default"


def test_unknown_recipe_is_refused_with_the_names_allowed():
    with pytest.raises(EdgeXrayError, match="unknown recipe 'fast'.*" + ", ".join(RECIPES)):
        recipe2configs("fast")


def test_train_cli_options_reach_the_configs(monkeypatch, tmp_path):
    import edgexray.train
    from edgexray.commands import train

    seen = {}

    def fake_train_folder(data_dir, out, model_cfg, train_cfg, **kw):
        seen.update(model=model_cfg, train=train_cfg, augment=kw["augment"])
        raise SystemExit(0)

    monkeypatch.setattr(edgexray.train, "train_folder", fake_train_folder)
    args = ["--data", str(tmp_path), "--no-flip", "--photometric", "1.5", "--intensity", "standardize"]
    assert CliRunner().invoke(train, args).exit_code == 0
    assert seen["augment"].hflip is False and seen["augment"].photometric == 1.5
    assert seen["model"].intensity == "standardize" and seen["train"].recipe == "default"
    assert CliRunner().invoke(train, ["--data", str(tmp_path), "--recipe", "robust"]).exit_code == 0
    model_cfg, train_cfg, augment = recipe2configs("robust")
    assert (seen["model"], seen["train"].recipe, seen["augment"]) == (model_cfg, "robust", augment)
    bad = CliRunner().invoke(train, ["--data", str(tmp_path), "--recipe", "fast"])
    assert bad.exit_code != 0 and "robust" in bad.output
