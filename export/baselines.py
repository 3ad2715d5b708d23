"""What a user would ship without edgexray: the unpruned checkpoint as ONNX FP32 and as ONNX
Runtime INT8 (static QDQ). The compare set (bench.compare_set) times them beside the pruned
model, in `edgexray build` and `edgexray compare`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def unpruned_onnx(
    baseline, folder: Path, calib: Callable, onnx_path=None, int8_path=None
) -> tuple[Path, Path]:
    """(ONNX FP32, ONNX Runtime INT8) of the unpruned checkpoint `baseline`, written into
    `folder` unless given; `calib()` gives the INT8 calibration images (called only when the
    INT8 file is made)."""
    from edgexray.export.onnx import onnx_metadata, torch2onnx
    from edgexray.export.quantize_onnx import onnx2int8onnx

    folder = Path(folder)
    if onnx_path is None:
        meta = onnx_metadata(baseline.class_names, baseline.preprocess, arch=baseline.arch)
        onnx_path = torch2onnx(
            baseline.model, folder / "unpruned_fp32.onnx", input_shape=baseline.input_shape, metadata=meta
        )
    if int8_path is None:
        int8_path = onnx2int8onnx(onnx_path, folder / "unpruned_int8_ort.onnx", calib())
    return Path(onnx_path), Path(int8_path)
