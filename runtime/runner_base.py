"""What every runner shares: TensorSpec, quantize/dequantize and the Runner base class.

NCHW float32 in, transposed to the model's layout, quantized for int8 inputs; the output
dequantized to float32. The runtimes themselves are in runtime/runners.py (and TorchRunner,
which needs torch, in bench/runtimes.py).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

import numpy as np

from edgexray.runtime.errors import EdgeXrayError
from edgexray.runtime.registry import get_runtime

QUANT_RANGES = {"int8": (-128, 127), "uint8": (0, 255)}
CHANNEL_COUNTS = (1, 3, 4)


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output, as the model stores it."""

    shape: tuple  # as declared by the model; a dynamic dimension is -1
    dtype: str  # "float32" | "int8" | "uint8" | ...
    layout: str = "NCHW"  # "NCHW" | "NHWC" for image inputs; "NC" for outputs
    scale: float | None = None  # real = scale * (q - zero_point); None when not quantized
    zero_point: int | None = None
    name: str = ""

    @property
    def quantized(self) -> bool:
        return self.scale is not None and self.dtype in QUANT_RANGES

    def to_dict(self) -> dict:
        quant = {"scale": self.scale, "zero_point": self.zero_point} if self.quantized else None
        return {"shape": list(self.shape), "layout": self.layout, "dtype": self.dtype, "quantization": quant}


def guess_layout(shape, default: str) -> str:
    """NCHW when dim 1 looks like channels and the last does not; NHWC the other way round."""
    if len(shape) != 4:
        return default
    c_first, c_last = shape[1] in CHANNEL_COUNTS, shape[-1] in CHANNEL_COUNTS
    if c_first and not c_last:
        return "NCHW"
    if c_last and not c_first:
        return "NHWC"
    return default


def quantize(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    if not spec.quantized:
        return x.astype(spec.dtype, copy=False)
    lo, hi = QUANT_RANGES[spec.dtype]
    q = np.round(x / np.float32(spec.scale)) + spec.zero_point
    return np.clip(q, lo, hi).astype(spec.dtype)


def dequantize(q: np.ndarray, spec: TensorSpec) -> np.ndarray:
    if not spec.quantized:
        return q.astype(np.float32, copy=False)
    return (q.astype(np.float32) - np.float32(spec.zero_point)) * np.float32(spec.scale)


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def model_load_error(path, err: Exception) -> EdgeXrayError:
    size = os.path.getsize(path) if os.path.exists(path) else None
    reason = " ".join(str(err).split())[:300]  # runtimes report over several lines
    return EdgeXrayError(
        f"could not load model {str(path)!r} ({size} bytes): {reason}; the file is "
        "corrupt, truncated, too new for this runtime or not a model for it; "
        "re-export it "
        "(and check it against the manifest with `run.py verify`)"
    )


def missing_runtime(module: str, pip_name: str, kind: str) -> EdgeXrayError:
    return EdgeXrayError(
        f"runtime {kind!r} needs the Python package {module!r}, which is not "
        f"installed here; install it with `pip install {pip_name}`"
    )


def import_runtime(kind: str, module: str | None = None):
    """Runtime `kind`'s module (or `module`, a part of it), imported; a missing package is an
    EdgeXrayError naming what to install."""
    info = get_runtime(kind)
    try:
        return importlib.import_module(module or info.module)
    except ImportError:
        raise missing_runtime(info.module, info.package, kind) from None


class Runner:
    """A loaded model. Subclasses set kind, device, version, input_spec, output_spec."""

    kind = "?"
    device = "cpu"

    def __init__(self, model_path, threads=None):
        self.model_path = str(model_path)
        self.threads = int(threads) if threads else default_threads()

    def _import_runtime(self, kind: str, module: str | None = None):
        """Set kind and device from the runtime registry; import_runtime(kind, module)."""
        self.kind, self.device = kind, get_runtime(kind).device
        return import_runtime(kind, module)

    def prepare(self, x_nchw: np.ndarray) -> np.ndarray:
        """Normalized NCHW float32 -> the model's own layout and dtype."""
        x = np.asarray(x_nchw, dtype=np.float32)
        if x.ndim != 4:
            raise EdgeXrayError(f"model input must be NCHW (4 dimensions); got shape {x.shape}")
        if self.input_spec.layout == "NHWC":
            x = x.transpose(0, 2, 3, 1)
        want = tuple(self.input_spec.shape[1:])
        if any(w > 0 and w != g for w, g in zip(want, x.shape[1:])):
            raise EdgeXrayError(
                f"input of shape {x.shape} ({self.input_spec.layout}) does not fit "
                f"the model's input {list(self.input_spec.shape)}; preprocess to "
                "the model's size and channel count"
            )
        return np.ascontiguousarray(quantize(x, self.input_spec))

    def run_raw(self, x: np.ndarray) -> np.ndarray:
        """One call on a tensor already in the model's layout and dtype; output as stored."""
        raise NotImplementedError

    def predict(self, x_nchw: np.ndarray) -> np.ndarray:
        """NCHW float32 batch -> float32 outputs (logits), one row per input."""
        x = self.prepare(x_nchw)
        fixed_batch = self.input_spec.shape[0] if self.input_spec.shape else -1
        if fixed_batch > 0 and x.shape[0] != fixed_batch:
            rows = [self.run_raw(x[i : i + 1]) for i in range(x.shape[0])]
            return dequantize(np.concatenate(rows), self.output_spec)
        return dequantize(self.run_raw(x), self.output_spec)

    def predict_all(self, x_nchw: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """predict() on a whole set, `batch_size` inputs per call: float32 (N, outputs)."""
        x = np.asarray(x_nchw, dtype=np.float32)
        rows = [self.predict(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        return np.concatenate(rows).astype(np.float32, copy=False)

    def ops(self) -> list:
        return []

    def describe(self) -> dict:
        return {
            "runtime": self.kind,
            "runtime_version": self.version,
            "device": self.device,
            "threads": self.threads,
            "input": self.input_spec.to_dict(),
            "output": self.output_spec.to_dict(),
        }
