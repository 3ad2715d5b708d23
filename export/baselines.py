"""What a user would ship without edgexray: the unpruned checkpoint as ONNX FP32 and as ONNX
Runtime INT8 (static QDQ). The compare set (bench.compare_set) times them beside the pruned
model, in `edgexray build` and `edgexray compare`.

The INT8 baseline is quantized the way a careful user would for this CPU: given a validation
split, every ONNX INT8 scheme is measured and the fastest accurate one kept
(quantize_onnx.choose_scheme, as for the pruned model's own file), so the ratios against it
are fair; without one, the scheme accurate on every CPU (quantize_onnx.DEFAULT_SCHEME).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BASELINE_SCHEME_RUNS = 20  # latency runs per scheme: the unpruned model is slower to time


@dataclass(frozen=True)
class UnprunedOnnx:
    """The two baseline files and how the INT8 one was quantized. Unpacks as (onnx, int8)."""

    onnx: Path
    int8: Path
    int8_scheme: str | None  # None: the INT8 file was given, not made here
    scheme_choice: dict | None  # choose_scheme's measurements per scheme; None when not measured

    def __iter__(self):
        return iter((self.onnx, self.int8))


def unpruned_onnx(
    baseline,
    folder: Path,
    calib: Callable,
    onnx_path=None,
    int8_path=None,
    *,
    val_inputs: np.ndarray | None = None,
    val_labels: np.ndarray | None = None,
    runs: int = BASELINE_SCHEME_RUNS,
) -> UnprunedOnnx:
    """(ONNX FP32, ONNX Runtime INT8) of the unpruned checkpoint `baseline`, written into
    `folder` unless given; `calib()` gives the INT8 calibration images (called only when the
    INT8 file is made). With `val_inputs` (normalized NCHW) / `val_labels` the INT8 scheme is
    chosen on them by accuracy and latency on this CPU (`runs` timed calls per scheme)."""
    from edgexray.export.onnx import onnx_metadata, torch2onnx
    from edgexray.export.quantize_onnx import DEFAULT_SCHEME, choose_scheme, onnx2int8onnx

    folder = Path(folder)
    if onnx_path is None:
        meta = onnx_metadata(baseline.class_names, baseline.preprocess, arch=baseline.arch)
        onnx_path = torch2onnx(
            baseline.model, folder / "unpruned_fp32.onnx", input_shape=baseline.input_shape, metadata=meta
        )
    scheme, choice = None, None
    if int8_path is None:
        int8_path = folder / "unpruned_int8_ort.onnx"
        if val_inputs is None:
            scheme = DEFAULT_SCHEME
            onnx2int8onnx(onnx_path, int8_path, calib(), scheme=scheme)
        else:
            choice = choose_scheme(onnx_path, int8_path, calib(), val_inputs, val_labels, runs=runs)
            scheme = choice["chosen"]
    return UnprunedOnnx(Path(onnx_path), Path(int8_path), scheme, choice)
