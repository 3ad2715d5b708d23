"""Synthetic radiograph-like images of a long bone, for demos and tests without patient data.

Each image is a projection of a bone shaft (a hollow cylinder: cortex walls around a medullary
canal filled with trabecular bone) inside soft tissue, with random pose, size, exposure, blur
and noise. The class sets a latent bone-loss severity: thinner cortex and sparser trabeculae in
osteopenia and osteoporosis, and less mineral (a more radiolucent bone). Per-image jitter blurs
the class borders, so a model has to look closely: a small CNN reaches 80-85%, not 100%.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np

from edgexray.fsutil import atomic_write_text, staged_dir
from edgexray.runtime.errors import EdgeXrayError

log = logging.getLogger(__name__)

CLASS_SETS = {
    2: ("normal", "osteoporosis"),
    3: ("normal", "osteopenia", "osteoporosis"),
}
# Latent severity per class (0 = healthy bone, 1 = severe loss); neighbours touch, and the
# per-image jitter of cortex, density and mineral below blurs the borders.
SEVERITY = {"normal": (0.0, 0.35), "osteopenia": (0.36, 0.66), "osteoporosis": (0.67, 1.0)}
SIXTEEN_BIT_EVERY = 10  # every 10th image is a 16-bit PNG, the rest 8-bit

MARKER = """SYNTHETIC DATA — NOT MEDICAL IMAGES

Every image in this folder was drawn by edgexray.synth ({version}): a procedural projection of a
long-bone shaft (cortex walls, a medullary canal with trabecular texture, soft tissue), with
random pose, size, exposure, blur and noise. The class sets a random bone-loss severity
(cortical thickness, trabecular density, mineral); per-image jitter blurs the class borders.

classes: {classes}
images per class: {per_class}
image size: {size_lo}..{size_hi} px per side
seed: {seed}

Use it to try the toolchain, never to judge a medical model.
"""


def _smooth_noise(
    rng: np.random.Generator, h: int, w: int, sigma_px: float, angle: float = 0.0, stretch: float = 1.0
) -> np.ndarray:
    """Gaussian-filtered white noise (unit std); `stretch` > 1 elongates it along `angle`."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    # frequency coordinates along / across the elongation axis
    fa = fx * math.cos(angle) + fy * math.sin(angle)
    fc = -fx * math.sin(angle) + fy * math.cos(angle)
    s = 2 * math.pi * sigma_px
    g = np.exp(-0.5 * s * s * ((fa * stretch) ** 2 + fc**2))
    out = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((h, w))) * g, s=(h, w))
    return out / (out.std() + 1e-12)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return img
    h, w = img.shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    g = np.exp(-2 * (math.pi * sigma) ** 2 * (fx**2 + fy**2))
    return np.fft.irfft2(np.fft.rfft2(img) * g, s=(h, w))


def _tube(d: np.ndarray, radius: np.ndarray | float) -> np.ndarray:
    """Path length through a cylinder of `radius` at distance `d` from its axis."""
    return 2.0 * np.sqrt(np.maximum(np.square(radius) - np.square(d), 0.0))


def draw_bone(rng: np.random.Generator, h: int, w: int, severity: float) -> np.ndarray:
    """One synthetic radiograph, float32 HxW in [0, 1], for a bone-loss `severity` in [0, 1]."""
    side = min(h, w)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    theta = rng.uniform(-0.6, 0.6) + (math.pi / 2 if rng.random() < 0.5 else 0.0)
    cx, cy = w / 2 + rng.uniform(-0.1, 0.1) * w, h / 2 + rng.uniform(-0.1, 0.1) * h
    # u along the shaft, v across it; a gentle bend and taper make shafts differ
    u = (x - cx) * math.sin(theta) + (y - cy) * math.cos(theta)
    v = (x - cx) * math.cos(theta) - (y - cy) * math.sin(theta)
    v = v - rng.uniform(-0.25, 0.25) * np.square(u) / side
    radius = side * rng.uniform(0.15, 0.22) * (1 + rng.uniform(-0.15, 0.15) * u / side)

    # bone loss: thinner cortex, sparser and thinner trabeculae
    cortex = np.clip(0.7 - 0.58 * severity + rng.normal(0, 0.015), 0.08, 0.75)
    density = np.clip(0.9 - 0.7 * severity + rng.normal(0, 0.03), 0.1, 1.0)
    canal = radius * (1 - cortex) * (1 + 0.06 * _smooth_noise(rng, h, w, side / 6))

    # trabeculae: ridges of band-limited noise elongated along the shaft, denser when healthy
    grain = side * rng.uniform(0.012, 0.02)
    n = _smooth_noise(rng, h, w, grain, angle=math.pi / 2 - theta, stretch=rng.uniform(1.5, 3.0))
    width = 0.25 + 0.55 * density
    trabecular = np.exp(-np.square(n / width)) * density**1.5

    soft_r = radius * rng.uniform(2.2, 3.2)
    soft = _tube(v + rng.uniform(-0.3, 0.3) * radius, soft_r) / side
    outer = _tube(v, radius) / side
    inner = _tube(v, canal) / side
    mu_bone = 4.2 - 2.4 * severity + rng.uniform(-0.15, 0.15)  # less mineral: more radiolucent
    attenuation = (
        rng.uniform(0.5, 0.9) * soft * (1 + 0.15 * _smooth_noise(rng, h, w, side / 10))
        + mu_bone * (outer - inner)
        + mu_bone * 0.6 * trabecular * inner
    )
    img = 1.0 - np.exp(-attenuation)

    # exposure and detector: gain, offset, gamma, a slow gradient, blur, quantum noise
    img = img * rng.uniform(0.7, 1.0) + rng.uniform(0.0, 0.15)
    img = img + rng.uniform(-0.08, 0.08) * (x / w - 0.5) + rng.uniform(-0.08, 0.08) * (y / h - 0.5)
    img = np.clip(img, 0, 1) ** rng.uniform(0.8, 1.25)
    img = _blur(img, rng.uniform(0.3, 1.0))
    img = img + rng.uniform(0.01, 0.035) * rng.standard_normal((h, w))
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def _parse_size(size) -> tuple[int, int]:
    lo, hi = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if not (16 <= int(lo) <= int(hi) <= 4096):
        raise EdgeXrayError(
            f"synthetic image size {size!r}; expected an int or (min, max) with "
            "16 <= min <= max <= 4096, e.g. (96, 160)"
        )
    return int(lo), int(hi)


def _save_png(path: Path, img: np.ndarray, sixteen_bit: bool) -> None:
    from PIL import Image

    if sixteen_bit:
        Image.fromarray(np.round(img * 65535).astype(np.uint16)).save(path)
    else:
        Image.fromarray(np.round(img * 255).astype(np.uint8)).save(path)


def synthesize(
    out_dir: str | os.PathLike,
    classes: int = 3,
    per_class: int = 100,
    size: int | tuple[int, int] = (96, 160),
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Write an ImageFolder of synthetic bone radiographs: out_dir/<class>/<class>_0001.png.

    2 classes: normal / osteoporosis; 3: normal / osteopenia / osteoporosis. Same arguments,
    same pixels. Refuses a non-empty `out_dir` unless `force`. Returns `out_dir`.
    """
    from tqdm import tqdm

    from edgexray import __version__

    if classes not in CLASS_SETS:
        raise EdgeXrayError(f"synthetic classes {classes!r}; allowed: {sorted(CLASS_SETS)}")
    if not isinstance(per_class, (int, np.integer)) or not 1 <= per_class <= 100_000:
        raise EdgeXrayError(
            f"images per class {per_class!r:.24}; must be an integer from 1 to 100000, e.g. 200"
        )
    if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise EdgeXrayError(f"seed {seed!r}; must be an integer from 0 to {2**32 - 1}, e.g. 0")
    lo, hi = _parse_size(size)
    out_dir = Path(out_dir)
    names = CLASS_SETS[classes]
    with staged_dir(out_dir, force, "output folder") as tmp:
        bar = tqdm(
            total=classes * per_class,
            desc="synthesize",
            unit="img",
            disable=None if progress else True,
            leave=False,
        )
        for k, name in enumerate(names):
            (tmp / name).mkdir()
            for i in range(per_class):
                rng = np.random.default_rng([seed, k, i])  # each image reproducible on its own
                h, w = rng.integers(lo, hi + 1, size=2)
                severity = rng.uniform(*SEVERITY[name])
                img = draw_bone(rng, int(h), int(w), severity)
                _save_png(
                    tmp / name / f"{name}_{i + 1:04d}.png",
                    img,
                    sixteen_bit=(i % SIXTEEN_BIT_EVERY == SIXTEEN_BIT_EVERY - 1),
                )
                bar.update()
        bar.close()
        atomic_write_text(
            tmp / "SYNTHETIC.txt",
            MARKER.format(
                version=__version__,
                classes=", ".join(names),
                per_class=per_class,
                size_lo=lo,
                size_hi=hi,
                seed=seed,
            ),
        )
    log.info("wrote %d synthetic images to %s", classes * per_class, out_dir)
    return out_dir
