"""Read any supported X-ray image file as float32 gray in [0, 1].

Non-DICOM files go through `edgexray.runtime.preprocess` (the module embedded in every artifact), so
training, parity checks and the device decode the same pixels. DICOM goes through pydicom:
Modality LUT (rescale), then VOI LUT or window, MONOCHROME1 inverted.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from edgexray.runtime.errors import EdgeXrayError
from edgexray.runtime.preprocess import read_image_array, to_unit_gray

log = logging.getLogger(__name__)

DICOM_SUFFIXES = (".dcm", ".dicom")
# Every suffix scan_image_folder treats as an image; anything else in a class folder is ignored.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".npy") + DICOM_SUFFIXES


class ImageReadError(EdgeXrayError):
    """An image file that cannot be decoded; the message names the file."""


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def read_gray(path: str | os.PathLike) -> np.ndarray:
    """Decode `path` to a float32 HxW array in [0, 1]."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image {str(path)!r} does not exist or is not a file")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ImageReadError(
            f"image {str(path)!r}: suffix {suffix or '(none)'!r} is not supported; "
            f"allowed: {', '.join(IMAGE_SUFFIXES)}"
        )
    try:
        if suffix in DICOM_SUFFIXES:
            gray = dicom2gray(path)
        else:
            gray = to_unit_gray(read_image_array(path))
    except ImageReadError:
        raise
    except Exception as e:  # decoders raise anything from OSError to struct.error on bad bytes
        raise ImageReadError(
            f"cannot read image {str(path)!r}: {type(e).__name__}: {e}; "
            "the file is corrupt or not an image; remove or replace it"
        ) from e
    if gray.size == 0 or not np.isfinite(gray).all():
        raise ImageReadError(
            f"image {str(path)!r} decoded to an empty or non-finite array; remove or replace it"
        )
    return gray


def dicom2gray(path: str | os.PathLike) -> np.ndarray:
    """DICOM -> float32 HxW in [0, 1]: Modality LUT, VOI LUT/window, MONOCHROME1 inverted."""
    import pydicom

    try:
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pydicom < 3
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(str(path))
    if "PixelData" not in ds:
        raise ImageReadError(f"DICOM {str(path)!r} has no pixel data (not an image object)")
    try:
        arr = ds.pixel_array
    except Exception as e:
        raise ImageReadError(
            f"cannot decode the pixels of DICOM {str(path)!r} (transfer syntax "
            f"{getattr(ds.file_meta, 'TransferSyntaxUID', '?')}): {e}; compressed DICOM may need "
            "'pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg'"
        ) from e
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        log.warning("%s: %d frames; using the first", path, frames)
        arr = arr[0]
    if photometric in ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT"):
        # pydicom returns RGB for these; luma as for any other RGB image
        return to_unit_gray(arr)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ImageReadError(
            f"DICOM {str(path)!r}: photometric interpretation {photometric!r} "
            "is not supported; allowed: MONOCHROME1, MONOCHROME2, RGB, YBR_*"
        )
    values = apply_modality_lut(arr, ds)
    windowed = apply_voi_lut(values, ds)
    if windowed is values:  # no VOI in the file: stretch the image's own range
        lo, hi = float(np.min(values)), float(np.max(values))
    else:
        lo, hi = _voi_output_range(ds, apply_voi_lut)
    gray = _stretch(np.asarray(windowed, np.float64), lo, hi)
    if photometric == "MONOCHROME1":  # low values are bright
        gray = 1.0 - gray
    return gray.astype(np.float32)


def _voi_output_range(ds, apply_voi_lut) -> tuple[float, float]:
    """The values the VOI step maps the darkest and brightest inputs to.

    pydicom scales a window to the stored bit depth and a VOI LUT to its nominal depth;
    probing with extreme inputs gives that range without copying its rules.
    """
    if ds.get("VOILUTSequence"):
        depth = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**depth - 1)
    center = float(np.ravel(ds.WindowCenter)[0])
    width = abs(float(np.ravel(ds.WindowWidth)[0]))
    reach = abs(center) + 50.0 * max(width, 1.0)
    probe = np.array([center - reach, center + reach], dtype=np.float64)
    lo, hi = np.asarray(apply_voi_lut(probe, ds), np.float64)
    return float(lo), float(hi)


def _stretch(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi == lo:
        return np.zeros_like(x)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def probe(path: str | os.PathLike) -> None:
    """Cheap check that `path` looks like a readable image (header only); ImageReadError if not.

    Catches empty, truncated-header and non-image files without decoding pixels; a file whose
    pixel data is damaged further in is caught when it is decoded (`read_gray`).
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ValueError("the file is empty")
        suffix = path.suffix.lower()
        if suffix in DICOM_SUFFIXES:
            import pydicom

            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
            if "Rows" not in ds or "Columns" not in ds:
                raise ValueError("no Rows/Columns: not a DICOM image")
        elif suffix == ".npy":
            np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            try:
                from PIL import Image
            except ImportError:
                read_image_array(path)
                return
            with Image.open(path) as im:
                if im.size[0] < 1 or im.size[1] < 1:
                    raise ValueError(f"image size {im.size}")
    except Exception as e:
        raise ImageReadError(
            f"cannot read image {str(path)!r}: {type(e).__name__}: {e}; "
            "the file is corrupt or not an image; remove or replace it"
        ) from e
