"""Training-time augmentation of (1, S, S) images in [0, 1], and MixUp of batches."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from edgexray.config import config_from_dict
from edgexray.runtime.errors import EdgeXrayError


@dataclass(frozen=True)
class AugmentConfig:
    """Random training-time changes to the (1, S, S) image in [0, 1], before normalization."""

    hflip: bool = True  # mirror left-right with probability 0.5
    rotate_deg: float = 10.0  # uniform rotation in [-r, r] degrees
    shift: float = 0.05  # translation, as a fraction of the side, in [-s, s] on each axis
    scale: float = 0.1  # zoom factor in [1 - s, 1 + s]
    brightness: float = 0.2  # multiply by a factor in [1 - b, 1 + b]
    contrast: float = 0.2  # blend with the mean by a factor in [1 - c, 1 + c]
    noise: float = 0.0  # std of added Gaussian noise on the [0, 1] scale (0 = off)
    blur: float = 0.0  # max Gaussian blur sigma in pixels, sigma uniform in [0, blur] (0 = off)
    mixup_alpha: float = 0.0  # MixUp Beta(alpha, alpha) in the trainer (0 = off; 0.2 typical)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name != "hflip" and (not isinstance(v, (int, float)) or not 0 <= v < math.inf):
                raise EdgeXrayError(f"augment {f.name}={v!r}; must be a number >= 0, and finite")
        if self.scale >= 1 or self.brightness >= 1:
            raise EdgeXrayError(
                f"augment scale={self.scale}, brightness={self.brightness}; "
                "each must be < 1, e.g. 0.1 and 0.2"
            )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> AugmentConfig:
        return config_from_dict(cls, d, "augment")


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def augment_image(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """One random augmentation of a (1, S, S) float tensor in [0, 1]; result clipped to [0, 1]."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    size = x.shape[-1]
    if cfg.hflip and float(torch.rand((), generator=g)) < 0.5:
        x = F.horizontal_flip(x)
    if cfg.rotate_deg or cfg.shift or cfg.scale:
        angle = _uniform(g, -cfg.rotate_deg, cfg.rotate_deg)
        tx = round(_uniform(g, -cfg.shift, cfg.shift) * size)
        ty = round(_uniform(g, -cfg.shift, cfg.shift) * size)
        zoom = _uniform(g, 1 - cfg.scale, 1 + cfg.scale)
        # fill with the image's edge brightness rather than black, which would be a fake border
        fill = float(torch.cat([x[..., 0, :], x[..., -1, :]], -1).mean())
        x = F.affine(
            x,
            angle=angle,
            translate=[tx, ty],
            scale=zoom,
            shear=[0.0, 0.0],
            interpolation=InterpolationMode.BILINEAR,
            fill=fill,
        )
    if cfg.brightness:
        x = x * _uniform(g, 1 - cfg.brightness, 1 + cfg.brightness)
    if cfg.contrast:
        mean = x.mean()
        x = (x - mean) * _uniform(g, 1 - cfg.contrast, 1 + cfg.contrast) + mean
    if cfg.blur:
        sigma = _uniform(g, 0.0, cfg.blur)
        if sigma > 0.1:
            k = 2 * math.ceil(3 * sigma) + 1
            x = F.gaussian_blur(x, kernel_size=[k, k], sigma=[sigma, sigma])
    if cfg.noise:
        x = x + cfg.noise * torch.randn(x.shape, generator=g)
    return x.clamp_(0.0, 1.0)


def mixup_batch(
    x: torch.Tensor, alpha: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """MixUp (Zhang et al. 2018): blend each sample with a shuffled partner by lam ~ Beta(a, a).

    Returns (blended batch, each sample's partner index, lam); the caller blends the targets or
    the losses with the same lam. alpha <= 0 or fewer than 2 samples: the batch unchanged."""
    if alpha <= 0 or len(x) < 2:
        return x, torch.arange(len(x), device=x.device), 1.0
    seed = int(torch.randint(0, 2**31 - 1, (), generator=generator))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    perm = torch.randperm(len(x), generator=generator).to(x.device)
    return lam * x + (1 - lam) * x[perm], perm, lam


def mixup(
    x: torch.Tensor, y_onehot: torch.Tensor, alpha: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`mixup_batch` with one-hot (or soft) targets blended alike."""
    if alpha <= 0 or len(x) < 2:
        return x, y_onehot
    mixed, perm, lam = mixup_batch(x, alpha, generator)
    return mixed, lam * y_onehot + (1 - lam) * y_onehot[perm]
