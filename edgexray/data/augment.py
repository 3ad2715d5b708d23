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
    gamma: float = 0.0  # raise to a power log-uniform in [1 / (1 + g), 1 + g] (0 = off)
    # one factor on the photometric jitter (brightness, contrast, gamma): 0 = none, 2 = twice as strong
    photometric: float = 1.0
    noise: float = 0.0  # std of added Gaussian noise on the [0, 1] scale (0 = off)
    blur: float = 0.0  # max Gaussian blur sigma in pixels, sigma uniform in [0, blur] (0 = off)
    mixup_alpha: float = 0.0  # MixUp Beta(alpha, alpha) in the trainer (0 = off; 0.2 typical)
    # coarse dropout (cutout, DeVries & Taylor 2017): with probability `cutout`, `cutout_holes`
    # squares of side `cutout_size` x the image side are filled with the image mean (0 = off;
    # off by default: on the chest folder it did not measurably help, README "Cutout and TTA")
    cutout: float = 0.0
    cutout_holes: int = 1
    cutout_size: float = 0.25

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name != "hflip" and (not isinstance(v, (int, float)) or not 0 <= v < math.inf):
                raise EdgeXrayError(f"augment {f.name}={v!r}; must be a number >= 0, and finite")
        if self.scale >= 1 or self.brightness * self.photometric >= 1:
            raise EdgeXrayError(
                f"augment scale={self.scale}, brightness={self.brightness} x photometric="
                f"{self.photometric}; each must be < 1, e.g. 0.1 and 0.2 x 1"
            )
        if self.cutout > 1 or not 0 < self.cutout_size <= 1:
            raise EdgeXrayError(
                f"augment cutout={self.cutout}, cutout_size={self.cutout_size}; "
                "cutout is a probability in [0, 1], cutout_size a fraction of the side in (0, 1]"
            )
        if self.cutout_holes != int(self.cutout_holes) or self.cutout_holes < 1:
            raise EdgeXrayError(f"augment cutout_holes={self.cutout_holes!r}; must be a whole number >= 1")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> AugmentConfig:
        return config_from_dict(cls, d, "augment")


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def cutout_boxes(side: int, holes: int, size: float, g: torch.Generator) -> list[tuple[int, int, int, int]]:
    """`holes` random squares (y0, x0, y1, x1) of side round(size * side), centres anywhere in the
    image, clipped to it (so a hole at the border is smaller, as in the original cutout)."""
    half = max(1, round(size * side)) / 2
    boxes = []
    for _ in range(int(holes)):
        cy, cx = (int(torch.randint(0, side, (), generator=g)) for _ in range(2))
        y0, x0 = max(0, int(cy - half)), max(0, int(cx - half))
        boxes.append((y0, x0, min(side, int(cy + half)), min(side, int(cx + half))))
    return boxes


def cutout_image(x: torch.Tensor, boxes) -> torch.Tensor:
    """A copy of `x` (..., S, S) with each box filled with the image mean (no black edge to learn)."""
    out = x.clone()
    fill = x.mean()
    for y0, x0, y1, x1 in boxes:
        out[..., y0:y1, x0:x1] = fill
    return out


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
    brightness, contrast, gamma = (v * cfg.photometric for v in (cfg.brightness, cfg.contrast, cfg.gamma))
    if brightness:
        x = x * _uniform(g, 1 - brightness, 1 + brightness)
    if contrast:
        mean = x.mean()
        x = (x - mean) * _uniform(g, 1 - contrast, 1 + contrast) + mean
    if gamma:
        x = x.clamp(0.0, 1.0) ** math.exp(_uniform(g, -math.log1p(gamma), math.log1p(gamma)))
    if cfg.blur:
        sigma = _uniform(g, 0.0, cfg.blur)
        if sigma > 0.1:
            k = 2 * math.ceil(3 * sigma) + 1
            x = F.gaussian_blur(x, kernel_size=[k, k], sigma=[sigma, sigma])
    if cfg.noise:
        x = x + cfg.noise * torch.randn(x.shape, generator=g)
    if cfg.cutout and float(torch.rand((), generator=g)) < cfg.cutout:
        x = cutout_image(x.clamp(0.0, 1.0), cutout_boxes(size, cfg.cutout_holes, cfg.cutout_size, g))
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
