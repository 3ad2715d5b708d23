"""Decoding: images -> resized float16 arrays in [0, 1] (cached on disk), and their statistics."""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edgexray.fsutil import atomic_write_bytes
from edgexray.imageio import ImageReadError, read_gray
from edgexray.runtime.errors import EdgeXrayError
from edgexray.runtime.preprocess import LUMA, resize_square

log = logging.getLogger(__name__)

# ImageNet statistics for pretrained 3-channel backbones fed gray repeated to RGB.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The same statistics through the BT.601 luma weights (std: channels taken as fully correlated),
# for a 1-channel stem whose pretrained conv1 was summed over RGB: (0.4590,), (0.2256,).
IMAGENET_GRAY_MEAN = (round(sum(w * m for w, m in zip(LUMA, IMAGENET_MEAN)), 4),)
IMAGENET_GRAY_STD = (round(sum(w * s for w, s in zip(LUMA, IMAGENET_STD)), 4),)


def _cache_key(root: Path, relpaths: Sequence[str], size: int) -> str:
    # os.fsencode: a file name need not be valid UTF-8 (its bytes come back surrogate-escaped)
    h = hashlib.sha256(os.fsencode(f"{root.resolve()}\0{size}"))
    for rel in relpaths:
        st = (root / rel).stat()
        h.update(os.fsencode(f"\0{rel}\0{st.st_size}\0{st.st_mtime_ns}"))
    return h.hexdigest()[:32]


def _decode(
    root: Path, relpaths: Sequence[str], size: int, progress: bool, skip_errors: bool
) -> tuple[np.ndarray, list[tuple[str, str]]]:
    need = len(relpaths) * size * size * np.dtype(np.float16).itemsize
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 0
    if total and need > total // 2:
        raise EdgeXrayError(
            f"{len(relpaths)} images at {size}x{size} px need {need / 2**30:.1f} GiB "
            f"as arrays, more than half of this machine's {total / 2**30:.1f} GiB "
            "memory; use a smaller --size (e.g. 224) or fewer images"
        )
    arrays = np.empty((len(relpaths), size, size), np.float16)
    failed: list[tuple[str, str]] = []
    kept = 0
    bar = tqdm(relpaths, desc=f"decode {size}px", unit="img", disable=None if progress else True, leave=False)
    for rel in bar:
        try:
            arrays[kept] = resize_square(read_gray(root / rel), size)
        except ImageReadError as e:
            if not skip_errors:
                raise
            log.warning("skipping %s", e)
            failed.append((rel, str(e)))
            continue
        kept += 1
    return arrays[:kept], failed


def load_arrays(
    root: str | os.PathLike,
    relpaths: Sequence[str],
    size: int,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> np.ndarray:
    """Decode and resize images -> float16 (N, size, size) in [0, 1], in the order given.

    A file that cannot be decoded raises `ImageReadError` naming it. With `cache_dir`, the
    result is stored as .npy keyed by root, size, the paths and their sizes and mtimes.
    """
    root = Path(root)
    if int(size) < 8:
        raise EdgeXrayError(f"image size {size}; must be an integer >= 8, e.g. 224")
    size = int(size)
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"arrays-{_cache_key(root, relpaths, size)}.npy"
        if cache.is_file():
            try:
                arrays = np.load(cache, allow_pickle=False)
                if arrays.shape == (len(relpaths), size, size):
                    log.info("loaded %d decoded images from cache %s", len(relpaths), cache)
                    return arrays
            except (OSError, ValueError):
                log.warning("ignoring unreadable array cache %s", cache)
    arrays, _ = _decode(root, relpaths, size, progress, skip_errors=False)
    if cache is not None:
        buf = io.BytesIO()
        np.save(buf, arrays, allow_pickle=False)
        atomic_write_bytes(cache, buf.getvalue())
    return arrays


def norm_stats(arrays: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of all pixels (the training split's z-score statistics)."""
    arrays = np.asarray(arrays)
    if arrays.size == 0:
        raise EdgeXrayError("cannot compute normalization statistics of zero images")
    total = total_sq = 0.0
    flat = arrays.reshape(len(arrays), -1) if arrays.ndim > 1 else arrays[None]
    for chunk in np.array_split(flat, max(1, len(flat) // 256)):
        c = chunk.astype(np.float64)
        total += float(c.sum())
        total_sq += float(np.square(c).sum())
    n = flat.size
    mean = total / n
    std = math.sqrt(max(total_sq / n - mean * mean, 0.0))
    return mean, max(std, 1e-6)


def decode_all(
    root: Path, relpaths: list[str], size: int, progress: bool, strict: bool, cache_dir
) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """(arrays of the readable images, [(relpath, why)] of the others); `strict`: raise instead."""
    if strict or cache_dir is not None:
        # strict: the first unreadable file raises; a cache only holds complete, readable sets
        try:
            return load_arrays(root, relpaths, size, progress, cache_dir), []
        except ImageReadError:
            if strict:
                raise
    return _decode(root, relpaths, size, progress, skip_errors=True)
