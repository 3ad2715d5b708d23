"""The images both sides run: deterministic synthetic X-ray-like PNG/.npy files (the manifest's
reference inputs) and real images decoded on the host."""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path

log = logging.getLogger(__name__)

NUM_INPUTS = 6  # synthetic images per verification
INPUT_SEED = 0


def synthetic_images(out_dir: str | os.PathLike, n: int = NUM_INPUTS, seed: int = INPUT_SEED) -> list[Path]:
    """Deterministic X-ray-like test images (never patient data) in the formats users have:
    8-bit gray, 16-bit gray and RGB PNG, and a .npy array, of different sizes."""
    import numpy as np  # lazily: the module itself stays importable without numpy

    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    paths = []
    for i in range(n):
        h, w = 48 + 16 * (i % 3), 40 + 24 * (i % 4)
        y, x = np.mgrid[0:h, 0:w] / np.array([h, w], dtype=np.float64)[:, None, None]
        img = 0.3 + 0.4 * np.sin(np.pi * x) * np.sin(np.pi * y) * rng.uniform(0.5, 1.0)
        for _ in range(3):  # bright blobs ("bones", "opacities") at random places
            cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.25)
            img += rng.uniform(-0.3, 0.5) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * r * r))
        img = np.clip(img + rng.normal(0, 0.05, img.shape), 0, 1)
        kind = i % 4
        if kind == 3:
            path = out_dir / f"synthetic_{i}.npy"
            np.save(path, (img * 255).round().astype(np.uint8))
        else:
            path = out_dir / f"synthetic_{i}.png"
            if kind == 0:
                data = encode_png((img * 255).round().astype(np.uint8), 0)
            elif kind == 1:
                data = encode_png((img * 65535).round().astype(">u2"), 0)
            else:
                tint = np.stack([img, img * 0.9, img * 0.8], axis=-1)
                data = encode_png((tint * 255).round().astype(np.uint8), 2)
            path.write_bytes(data)
        paths.append(path)
    return paths


def real_inputs(paths, out_dir: Path) -> list[Path]:
    """Real images decoded on the host and saved as .npy, which run.py reads with numpy alone
    (the guest has no Pillow for JPEG); an image the host cannot decode is left out."""
    import numpy as np

    from edgexray.runtime.preprocess import read_image_array  # host only: numpy, Pillow

    out = []
    for src in map(Path, paths):
        try:
            arr = read_image_array(src)
        except (OSError, ValueError) as e:
            log.info("ARM verification leaves out %s: %s", src, e)
            continue
        out.append(out_dir / f"real_{len(out)}.npy")
        np.save(out[-1], arr)
    return out


def encode_png(arr, color_type: int) -> bytes:
    """Minimal PNG encoder (filter 0): gray (color 0, 8/16 bit) or RGB (color 2, 8 bit)."""
    h, w = arr.shape[:2]
    depth = arr.dtype.itemsize * 8
    rows = arr.reshape(h, -1).view("u1").reshape(h, -1)
    raw = b"".join(b"\x00" + rows[r].tobytes() for r in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )
