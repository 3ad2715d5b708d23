"""Run an exported file on a batch of NCHW float inputs, the way a device would.

ONNX files run in ONNX Runtime; TFLite files in LiteRT, with NHWC inputs and, for int8 I/O,
the input quantized and the output dequantized with the file's own scale and zero point.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgexray.runtime.errors import EdgeXrayError


def run_file(path: str | os.PathLike, inputs: np.ndarray, threads: int | None = None) -> np.ndarray:
    """float32 (N, C, H, W) normalized inputs -> float32 (N, classes) logits."""
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        return run_onnx(path, inputs, threads)
    if suffix == ".tflite":
        return run_tflite(path, inputs, threads)
    raise EdgeXrayError(f"cannot run {str(path)!r}: suffix {suffix!r}; allowed: .onnx, .tflite")


def onnx_session(path, threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_onnx(path, inputs: np.ndarray, threads: int | None = None,
             batch_size: int = 32) -> np.ndarray:
    session = onnx_session(path, threads)
    meta = session.get_inputs()[0]
    inputs = np.asarray(inputs, np.float32)
    step = meta.shape[0] if isinstance(meta.shape[0], int) else batch_size  # fixed or dynamic
    outs = [session.run(None, {meta.name: inputs[i:i + step]})[0]
            for i in range(0, len(inputs), step)]
    return np.concatenate(outs).astype(np.float32)


def tflite_interpreter(path, threads: int | None = None):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    return interpreter


def quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """float -> the tensor's integer type with its scale / zero point (identity for floats)."""
    dtype = np.dtype(detail["dtype"])
    if not np.issubdtype(dtype, np.integer):
        return x.astype(dtype)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, detail: dict) -> np.ndarray:
    if not np.issubdtype(np.dtype(detail["dtype"]), np.integer):
        return q.astype(np.float32)
    scale, zero = detail["quantization"]
    return ((q.astype(np.float32) - zero) * scale).astype(np.float32)


def run_tflite(path, inputs: np.ndarray, threads: int | None = None) -> np.ndarray:
    interpreter = tflite_interpreter(path, threads)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    nhwc = np.asarray(inputs, np.float32).transpose(0, 2, 3, 1)
    if tuple(inp["shape"][1:]) != nhwc.shape[1:]:
        raise EdgeXrayError(f"{str(path)!r} takes input {tuple(inp['shape'])} (NHWC); got images of "
                            f"{nhwc.shape[1:]} (NHWC); use images of the model's input size")
    logits = []
    for x in nhwc:
        interpreter.set_tensor(inp["index"], quantize(x[None], inp))
        interpreter.invoke()
        logits.append(dequantize(interpreter.get_tensor(out["index"]), out))
    return np.concatenate(logits)
