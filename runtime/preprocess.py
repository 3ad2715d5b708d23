"""Image pre-processing shared by the host and the device.

numpy and the standard library only: the source of this module is embedded verbatim in every
artifact's run.py, so the model sees the same pixels at training time, in the parity checks
and on the device. Pillow is used for decoding when it is installed; PNG, NPY and PGM decode
without it.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

NATIVE_SUFFIXES = (".png", ".npy", ".pgm")
# RGB -> gray weights (ITU-R BT.601 luma), applied in float so no rounding differs by decoder.
LUMA = (0.299, 0.587, 0.114)
PIXEL_SCALES = {"unit": 1.0, "raw": 255.0}  # Preprocess.pixels -> the factor on gray in [0, 1]


@dataclass(frozen=True)
class Preprocess:
    """What an image goes through before the model sees it."""

    size: int = 224  # square input side; images are stretched to size x size
    channels: int = 1  # gray repeated to this many channels (1, or 3 for ImageNet backbones)
    mean: tuple = (0.5,)  # per channel, on the [0, 1] scale
    std: tuple = (0.25,)  # per channel, on the [0, 1] scale
    resize: str = "triangle"  # separable triangle filter, antialiased when shrinking
    # "unit": gray in [0, 1] is normalized; "raw": 0-255 pixel values (gray * 255), for a model
    # with the normalization inside it (the Tasks-ready file): mean and std are on that scale
    pixels: str = "unit"
    # per-image intensity step on the [0, 1] gray before mean/std (INTENSITIES): "standardize"
    # or "equalize" take out a film's own exposure and tone curve, as another site's would differ
    intensity: str = "none"

    def __post_init__(self):
        if self.pixels not in PIXEL_SCALES:
            raise ValueError(f"pixels is {self.pixels!r}; allowed: {list(PIXEL_SCALES)}")
        if self.intensity not in INTENSITIES:
            raise ValueError(f"intensity is {self.intensity!r}; allowed: {list(INTENSITIES)}")
        for name in ("mean", "std"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) == 1 and self.channels > 1:
                value = value * self.channels
            if len(value) != self.channels:
                raise ValueError(f"{name} has {len(value)} values for {self.channels} channels")
            object.__setattr__(self, name, value)

    def to_dict(self) -> dict:
        """The manifest's "preprocess"; "pixels" only when not "unit", "intensity" only when not
        "none" (as in older artifacts)."""
        d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}
        if d["pixels"] == "unit":
            del d["pixels"]
        if d["intensity"] == "none":
            del d["intensity"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"unknown preprocess keys {sorted(unknown)}; allowed: {sorted(cls.__dataclass_fields__)}"
            )
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def normalize(self, gray: np.ndarray) -> np.ndarray:
        """(size, size) or a batch (N, size, size) in [0, 1] -> float32 (channels, size, size)
        or (N, channels, size, size), normalized (on the 0-255 scale when pixels is "raw")."""
        gray = self.adjust_intensity(gray) * np.float32(PIXEL_SCALES[self.pixels])
        x = np.repeat(gray[..., None, :, :], self.channels, axis=-3)
        mean = np.asarray(self.mean, np.float32)[:, None, None]
        std = np.asarray(self.std, np.float32)[:, None, None]
        return (x - mean) / std

    def adjust_intensity(self, gray: np.ndarray) -> np.ndarray:
        """(size, size) or (N, size, size) gray in [0, 1] -> float32 after the `intensity` step
        (unchanged for "none"); training applies it after augmentation, as here."""
        return INTENSITIES[self.intensity](np.asarray(gray, np.float32))

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Any decoded image array -> normalized float32 (channels, size, size)."""
        return self.normalize(resize_square(to_unit_gray(image), self.size))


def standardize_images(gray: np.ndarray) -> np.ndarray:
    """Each HxW image (of HxW or NxHxW) shifted and scaled to mean 0.5 and std 0.25 (not clipped):
    a film's exposure and contrast no longer matter. A flat image becomes 0.5."""
    gray = np.asarray(gray, np.float32)
    mean = gray.mean(axis=(-2, -1), keepdims=True)
    std = gray.std(axis=(-2, -1), keepdims=True)
    return (np.float32(0.5) + np.float32(0.25) * (gray - mean) / np.maximum(std, np.float32(1e-6))).astype(
        np.float32
    )


EQUALIZE_LEVELS = 256  # histogram bins of "equalize": the gray is quantized to 8 bits first


def equalize_images(gray: np.ndarray) -> np.ndarray:
    """Histogram equalization of each HxW image (of HxW or NxHxW) in [0, 1]: every pixel becomes
    the fraction of the image's pixels at or below its 8-bit level, rescaled so the darkest
    level is 0 and the brightest 1. Any monotonic tone curve (gamma, exposure, contrast) of the
    film gives (nearly) the same result. A flat image becomes 0.5."""
    gray = np.asarray(gray, np.float32)
    batch = gray.reshape((-1,) + gray.shape[-2:])
    n, levels = len(batch), EQUALIZE_LEVELS
    q = np.clip(np.floor(batch * np.float32(levels - 1) + np.float32(0.5)), 0, levels - 1).astype(np.int64)
    flat = q.reshape(n, -1)
    offsets = (np.arange(n, dtype=np.int64) * levels)[:, None]
    hist = np.bincount((flat + offsets).ravel(), minlength=n * levels).reshape(n, levels)
    cdf = np.cumsum(hist, axis=1).astype(np.float64)
    lowest = cdf[np.arange(n), np.argmax(hist > 0, axis=1)][:, None]  # pixels at the darkest level
    span = cdf[:, -1:] - lowest
    lut = np.where(span > 0, (cdf - lowest) / np.maximum(span, 1.0), 0.5).astype(np.float32)
    return np.take_along_axis(lut, flat, axis=1).reshape(gray.shape)


# Preprocess.intensity -> the per-image step on gray in [0, 1], applied before mean/std
INTENSITIES = {
    "none": lambda gray: gray,
    "standardize": standardize_images,
    "equalize": equalize_images,
}


def to_unit_gray(arr: np.ndarray) -> np.ndarray:
    """uint8 / uint16 / int32 / float, gray or RGB(A) -> float32 HxW in [0, 1]."""
    arr = np.asarray(arr)
    if arr.ndim == 3:
        if arr.shape[2] == 1:
            arr = arr[..., 0]
        elif arr.shape[2] in (3, 4):
            rgb = _scale_to_unit(arr[..., :3])  # alpha is dropped
            return (rgb @ np.asarray(LUMA, np.float32)).astype(np.float32)
        else:
            raise ValueError(f"image with {arr.shape[2]} channels; expected 1, 3 or 4")
    if arr.ndim != 2:
        raise ValueError(f"image array of shape {arr.shape}; expected HxW or HxWxC")
    return _scale_to_unit(arr)


def _scale_to_unit(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16 or np.issubdtype(arr.dtype, np.integer):
        # Pillow reads 16-bit PNG as uint16 or int32 ("I"); anything integer is 16-bit scaled.
        return np.clip(arr.astype(np.float32) / 65535.0, 0.0, 1.0)
    if arr.dtype == bool:
        return arr.astype(np.float32)
    return np.clip(arr.astype(np.float32), 0.0, 1.0)


def _triangle_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) resampling matrix; the triangle widens when shrinking (antialias)."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    centers = (np.arange(n_out, dtype=np.float64) + 0.5) * scale
    x = np.arange(n_in, dtype=np.float64) + 0.5
    w = np.maximum(0.0, 1.0 - np.abs(x[None, :] - centers[:, None]) / support)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def resize_square(gray: np.ndarray, size: int) -> np.ndarray:
    """Stretch a float32 HxW image to size x size with a separable triangle filter."""
    h, w = gray.shape
    if (h, w) == (size, size):
        return gray.astype(np.float32)
    return _triangle_weights(h, size) @ gray.astype(np.float32) @ _triangle_weights(w, size).T


def read_image_array(path) -> np.ndarray:
    """Decode an image file to an array: Pillow when present, else PNG / NPY / PGM natively."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    try:
        from PIL import Image
    except ImportError:
        if suffix == ".png":
            return decode_png(path.read_bytes())
        if suffix == ".pgm":
            return decode_pgm(path.read_bytes())
        raise ValueError(
            f"{path.name}: {suffix or 'this'} files need Pillow on this machine "
            f"(pip install pillow); without it PNG, NPY and PGM are read"
        ) from None
    with Image.open(path) as im:
        if im.mode in ("P", "PA", "LA", "CMYK", "YCbCr", "1"):
            im = im.convert("RGBA" if "A" in im.mode else "RGB")
        return np.asarray(im)


def decode_pgm(data: bytes) -> np.ndarray:
    """Binary PGM (P5), 8 or 16 bit."""
    parts, pos = [], 0
    while len(parts) < 4:
        while data[pos : pos + 1].isspace():
            pos += 1
        if data[pos : pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        end = pos
        while not data[end : end + 1].isspace():
            end += 1
        parts.append(data[pos:end])
        pos = end
    if parts[0] != b"P5":
        raise ValueError("only binary PGM (P5) is supported")
    w, h, maxval = int(parts[1]), int(parts[2]), int(parts[3])
    dtype = np.uint8 if maxval < 256 else np.dtype(">u2")
    arr = np.frombuffer(data, dtype, count=w * h, offset=pos + 1).reshape(h, w)
    return arr.astype(np.uint16) if maxval >= 256 else arr


def decode_png(data: bytes) -> np.ndarray:
    """Non-interlaced PNG, 8 or 16 bit, gray / gray+alpha / RGB / RGBA / palette."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    pos, idat, palette = 8, [], None
    while pos < len(data):
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if ctype == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif ctype == b"PLTE":
            palette = np.frombuffer(body, np.uint8).reshape(-1, 3)
        elif ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"IEND":
            break
        pos += 12 + length
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color]
    if interlace or depth not in (8, 16):
        raise ValueError("interlaced or sub-byte PNG needs Pillow (pip install pillow)")
    bpp = channels * depth // 8
    stride = width * bpp
    raw = zlib.decompress(b"".join(idat))
    out = bytearray(height * stride)
    prev = bytearray(stride)
    for y in range(height):
        ftype = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        _unfilter(ftype, line, prev, bpp)
        out[y * stride : (y + 1) * stride] = line
        prev = line
    dtype = np.uint8 if depth == 8 else np.dtype(">u2")
    arr = np.frombuffer(bytes(out), dtype).reshape(height, width, channels)
    if depth == 16:
        arr = arr.astype(np.uint16)
    if color == 3:
        return palette[arr[..., 0]]
    if color == 4:  # gray + alpha: alpha dropped
        return arr[..., 0]
    return arr[..., 0] if channels == 1 else arr


def _unfilter(ftype: int, line: bytearray, prev: bytearray, bpp: int) -> None:
    n = len(line)
    if ftype == 1:
        for i in range(bpp, n):
            line[i] = (line[i] + line[i - bpp]) & 0xFF
    elif ftype == 2:
        line[:] = (
            ((np.frombuffer(line, np.uint8).astype(np.uint16) + np.frombuffer(prev, np.uint8)) & 0xFF)
            .astype(np.uint8)
            .tobytes()
        )
    elif ftype == 3:
        for i in range(n):
            left = line[i - bpp] if i >= bpp else 0
            line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
    elif ftype == 4:
        for i in range(n):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            line[i] = (line[i] + pred) & 0xFF
    elif ftype != 0:
        raise ValueError(f"corrupt PNG: filter type {ftype}")
