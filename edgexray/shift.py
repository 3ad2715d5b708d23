"""A shifted copy of gray images, as films from another site would differ: gamma, contrast,
exposure, blur, noise and resolution changes, seeded, so that candidates can be judged on it
beside the normal validation split (issue 11, point 9). numpy and Pillow only; no torch."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgexray.config import config_from_dict
from edgexray.runtime.errors import EdgeXrayError


@dataclass(frozen=True)
class ShiftConfig:
    """The strength of each site-shift perturbation; 0 turns one off. Every image gets its own
    draws: a magnitude uniform in [s/2, s] (so a strength > 0 always changes the image) and, for
    the two-sided ones, a random direction. Pixel figures are on the evaluated S x S array."""

    resolution: float = 0.5  # down-sample the side by a factor 1 - u, then up-sample back (< 1)
    blur: float = 1.0  # Gaussian blur, sigma u pixels
    exposure: float = 0.5  # multiply by 2**(+-u): u stops over- or under-exposed (clipped at 1)
    gamma: float = 0.5  # raise to the power (1 + u) or 1 / (1 + u)
    contrast: float = 0.3  # stretch about the image mean by 1 + u or 1 - u (< 1)
    noise: float = 0.02  # add Gaussian noise of std u on the [0, 1] scale

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < math.inf:
                raise EdgeXrayError(f"shift {f.name}={v!r}; must be a number >= 0, and finite")
        if self.resolution >= 1 or self.contrast >= 1:
            raise EdgeXrayError(
                f"shift resolution={self.resolution}, contrast={self.contrast}; "
                "each must be < 1, e.g. 0.5 and 0.3"
            )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ShiftConfig:
        return config_from_dict(cls, d, "shift")

    @classmethod
    def off(cls) -> ShiftConfig:
        """Every strength 0: images2shifted returns the images unchanged."""
        return cls(**{f.name: 0.0 for f in dataclasses.fields(cls)})


def _magnitude(strength: float, rng: np.random.Generator) -> float:
    return float(rng.uniform(strength / 2, strength))


def _sign(rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < 0.5 else -1.0


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    # Pillow widens the filter when shrinking, so the down-sampling antialiases like a detector
    resized = Image.fromarray(np.ascontiguousarray(image, np.float32)).resize(
        (width, height), Image.Resampling.BILINEAR
    )
    return np.asarray(resized, np.float32)


def shift_resolution(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape
    factor = 1 - _magnitude(strength, rng)
    small_h = min(h - 1, max(2, round(h * factor))) if h > 2 else h
    small_w = min(w - 1, max(2, round(w * factor))) if w > 2 else w
    return _resize(_resize(image, small_h, small_w), h, w)


def _gaussian_kernel(sigma: float) -> np.ndarray:
    radius = max(1, math.ceil(3 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    k = np.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def shift_blur(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    k = _gaussian_kernel(_magnitude(strength, rng))
    r = len(k) // 2
    for axis in (0, 1):
        padded = np.pad(image, [(r, r) if a == axis else (0, 0) for a in (0, 1)], mode="reflect")
        windows = np.lib.stride_tricks.sliding_window_view(padded, len(k), axis=axis)
        image = windows @ k
    return image.astype(np.float32)


def shift_exposure(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    return image * np.float32(2.0 ** (_sign(rng) * _magnitude(strength, rng)))


def shift_gamma(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    return image ** np.float32((1 + _magnitude(strength, rng)) ** _sign(rng))


def shift_contrast(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    mean = image.mean()
    return mean + (image - mean) * np.float32(1 + _sign(rng) * _magnitude(strength, rng))


def shift_noise(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    std = _magnitude(strength, rng)
    return image + rng.normal(0.0, std, image.shape).astype(np.float32)


# The registry, in the order applied: acquisition (detector resolution, focus), then exposure and
# the site's tone curve, then quantum noise on the final film. Names are ShiftConfig's fields.
PERTURBATIONS: dict[str, Callable[[np.ndarray, float, np.random.Generator], np.ndarray]] = {
    "resolution": shift_resolution,
    "blur": shift_blur,
    "exposure": shift_exposure,
    "gamma": shift_gamma,
    "contrast": shift_contrast,
    "noise": shift_noise,
}
assert list(PERTURBATIONS) == [f.name for f in dataclasses.fields(ShiftConfig)]


def image2shifted(image: np.ndarray, cfg: ShiftConfig, rng: np.random.Generator) -> np.ndarray:
    """One HxW float image in [0, 1] -> float32 HxW in [0, 1] with every perturbation whose
    strength is > 0 applied (each result clipped to [0, 1])."""
    out = np.asarray(image, np.float32)
    for name, perturb in PERTURBATIONS.items():
        strength = getattr(cfg, name)
        if strength > 0:
            out = np.clip(perturb(out, strength, rng), 0.0, 1.0).astype(np.float32)
    return out


def images2shifted(gray_images: np.ndarray, seed: int, cfg: ShiftConfig = ShiftConfig()) -> np.ndarray:
    """HxW or NxHxW float images in [0, 1] (e.g. load_arrays' float16) -> their shifted copy, of
    the same shape and dtype. Image i draws from its own generator seeded by (seed, i), so a
    seed gives the same copy every time and image i's shift does not depend on the others."""
    images = np.asarray(gray_images)
    if images.ndim not in (2, 3):
        raise EdgeXrayError(f"images of shape {images.shape}; expected HxW or NxHxW gray images")
    if not np.issubdtype(images.dtype, np.floating):
        raise EdgeXrayError(f"images of dtype {images.dtype}; expected floats in [0, 1]")
    batch = images[None] if images.ndim == 2 else images
    out = np.empty_like(batch)
    for i, image in enumerate(batch):
        out[i] = image2shifted(image, cfg, np.random.default_rng([seed, i]))
    return out[0] if images.ndim == 2 else out


def shifted_probs(model, arrays, preprocess, seed: int, cfg: ShiftConfig = ShiftConfig(), tta=False):
    """Class probabilities of `model` (torch) on the shifted copy of `arrays` (N x S x S)."""
    from edgexray.evaluate import predict_proba

    return predict_proba(model, preprocess.normalize(images2shifted(arrays, seed, cfg)), tta=tta)


def shifted_block(y_true, normal_probs, shifted_probs, class_names, seed: int, cfg: ShiftConfig, groups=None):
    """Metrics with 95% intervals of the shifted copy's probabilities, the shift that made it, and
    "drop": the paired accuracy / per-class sensitivity drop from the normal images (pp)."""
    from edgexray.runtime.metrics import classification_metrics, paired_drop

    metrics = classification_metrics(y_true, shifted_probs, class_names, intervals=True, groups=groups)
    drop = paired_drop(
        y_true, np.argmax(normal_probs, 1), np.argmax(shifted_probs, 1), class_names, groups=groups
    )
    return dict(metrics, shift=cfg.to_dict(), shift_seed=seed, drop=drop)


def shifted_metrics(
    model,
    arrays,
    labels,
    preprocess,
    class_names,
    seed: int = 0,
    cfg: ShiftConfig = ShiftConfig(),
    groups=None,
    tta: bool = False,
) -> dict:
    """{"normal": metrics, "shifted": metrics} of a torch `model` on `arrays` (N x S x S in
    [0, 1]) and on their shifted copy, both with 95% intervals (over `groups` when given), to
    judge candidates on normal and shifted validation alike; "shifted" also holds the paired
    "drop" from normal to shifted (shifted_block)."""
    from edgexray.evaluate import predict_proba
    from edgexray.runtime.metrics import classification_metrics

    normal = predict_proba(model, preprocess.normalize(arrays), tta=tta)
    shifted = shifted_probs(model, arrays, preprocess, seed, cfg, tta)
    return {
        "normal": classification_metrics(labels, normal, class_names, intervals=True, groups=groups),
        "shifted": shifted_block(labels, normal, shifted, class_names, seed, cfg, groups),
    }
