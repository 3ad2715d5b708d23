"""Named training recipes (`--recipe`): sets of training defaults chosen by a measured ablation.

A recipe changes only the settings still at their plain default: an option given on the command
line (or a config field set by the caller) wins; to set one of its settings back to the plain
value, use `--recipe default` with the options wanted. The recipe's name is stored in the checkpoint's
train config ("recipe"), and so reaches the build's manifest. The evidence behind each recipe is
README "Defaults that generalize: the ablation" (benchmarks/defaults_ablation.py).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from edgexray.runtime.errors import EdgeXrayError

# no torch at import time: the CLI lists RECIPES for its --recipe choices


@dataclass(frozen=True)
class Recipe:
    """Training settings that differ from the plain defaults; None = keep the plain default."""

    name: str
    summary: str
    intensity: str | None = None  # ModelConfig.intensity (runtime.preprocess.INTENSITIES)
    hflip: bool | None = None  # AugmentConfig.hflip
    photometric: float | None = None  # AugmentConfig.photometric
    gamma: float | None = None  # AugmentConfig.gamma
    label_smoothing: float | None = None  # TrainConfig.label_smoothing
    class_weighted: bool | None = None  # TrainConfig.class_weighted

    def settings(self) -> dict:
        """{field: value} of what this recipe sets."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("name", "summary") and getattr(self, f.name) is not None
        }


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("default", "the plain defaults (ModelConfig, TrainConfig, AugmentConfig)"),
        Recipe(
            "robust",
            "per-image standardization and a class-weighted loss: on a site-shifted copy of "
            "the validation split NORMAL recall about doubled (README ablation)",
            intensity="standardize",
            class_weighted=True,
        ),
    )
}

# which config each setting lives in (the rest are AugmentConfig's)
MODEL_SETTINGS = ("intensity",)
TRAIN_SETTINGS = ("label_smoothing", "class_weighted")


def recipe_named(name: str) -> Recipe:
    if name not in RECIPES:
        raise EdgeXrayError(
            f"unknown recipe {name!r}; allowed: {', '.join(RECIPES)} "
            "(see README 'Defaults that generalize'), e.g. --recipe robust"
        )
    return RECIPES[name]


def _apply(cfg, settings: dict):
    """`cfg` with each of `settings` that `cfg` has, where `cfg` still holds the plain default."""
    changes = {
        k: v
        for k, v in settings.items()
        if k in type(cfg).__dataclass_fields__ and getattr(cfg, k) == getattr(type(cfg)(), k)
    }
    return replace(cfg, **changes) if changes else cfg


def recipe2configs(name: str, model_cfg=None, train_cfg=None, augment="default"):
    """(ModelConfig, TrainConfig, AugmentConfig or None) with recipe `name` applied to the settings
    still at their plain default (None / "default": the plain configs); `augment` None (no
    augmentation) stays None. The TrainConfig records the recipe's name."""
    from edgexray.data.augment import AugmentConfig
    from edgexray.train import ModelConfig, TrainConfig

    settings = recipe_named(name).settings()
    model_cfg = _apply(model_cfg or ModelConfig(), {k: settings[k] for k in MODEL_SETTINGS if k in settings})
    train_cfg = _apply(train_cfg or TrainConfig(), {k: settings[k] for k in TRAIN_SETTINGS if k in settings})
    augment = AugmentConfig() if augment == "default" else augment
    if augment is not None:
        rest = {k: v for k, v in settings.items() if k not in MODEL_SETTINGS + TRAIN_SETTINGS}
        augment = _apply(augment, rest)
    return model_cfg, replace(train_cfg, recipe=name), augment
