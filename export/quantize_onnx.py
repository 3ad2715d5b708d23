"""ONNX FP32 -> ONNX INT8 with ONNX Runtime static QDQ quantization, calibrated on real images."""
from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from edgexray.errors import unknown_name
from edgexray.fsutil import atomic_write_bytes

from .calibration import CalibrationSet
from .onnx import INPUT_NAME, set_metadata
from .runners import onnx_session, run_onnx

log = logging.getLogger(__name__)

METHODS = ("minmax", "entropy", "percentile")
ACTIVATIONS = ("u8", "s8")


def onnx2int8onnx(onnx_path: str | os.PathLike, out_path: str | os.PathLike,
                  calib: CalibrationSet, method: str = "minmax", activation: str = "u8",
                  per_channel: bool = True) -> Path:
    """Static QDQ quantization: int8 weights (per output channel by default), u8 or s8
    activations with ranges from `calib`. The FP32 file's metadata_props are kept."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in METHODS:
        raise unknown_name("calibration method", method, METHODS)
    if activation not in ACTIVATIONS:
        raise unknown_name("activation format", activation, ACTIVATIONS)
    calibrate = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}[method]
    act_type = QuantType.QUInt8 if activation == "u8" else QuantType.QInt8
    source = onnx.load(str(onnx_path))
    input_name = source.graph.input[0].name if source.graph.input else INPUT_NAME
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix=".quant-", dir=out_path.parent) as tmp:
        raw = Path(tmp) / "model.onnx"
        quantize_static(str(onnx_path), str(raw), calib.reader(input_name),
                        quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=act_type, weight_type=QuantType.QInt8,
                        calibrate_method=calibrate)
        model = onnx.load(str(raw))
    set_metadata(model, {p.key: p.value for p in source.metadata_props})
    set_metadata(model, {"quantization": {"tool": "onnxruntime", "format": "QDQ", "method": method,
                                          "activation": activation, "weights": "s8",
                                          "per_channel": per_channel, "calib_images": len(calib)}})
    return atomic_write_bytes(out_path, model.SerializeToString())


def latency_ms(path: str | os.PathLike, sample: np.ndarray, runs: int = 50, warmup: int = 5,
               threads: int | None = None) -> dict:
    """p50 / p90 of single-image ONNX Runtime latency, in milliseconds, after warm-up."""
    session = onnx_session(path, threads)
    name = session.get_inputs()[0].name
    x = np.asarray(sample[:1], np.float32)
    for _ in range(warmup):
        session.run(None, {name: x})
    times = []
    for _ in range(runs):
        t = time.perf_counter_ns()
        session.run(None, {name: x})
        times.append((time.perf_counter_ns() - t) / 1e6)
    return {"p50_ms": float(np.percentile(times, 50)), "p90_ms": float(np.percentile(times, 90)),
            "runs": runs, "threads": threads}


def choose_activation(onnx_path: str | os.PathLike, out_path: str | os.PathLike,
                      calib: CalibrationSet, inputs: np.ndarray, labels: np.ndarray, *,
                      method: str = "minmax", per_channel: bool = True, runs: int = 50,
                      threads: int | None = None, accuracy_tolerance: float = 0.0) -> dict:
    """Quantize with both activation formats, measure latency and accuracy on `inputs` /
    `labels` on this machine, keep the faster one among those within `accuracy_tolerance`
    (fraction, 0.0 = equal) of the best accuracy at `out_path`; returns the measurements.

    Run it on the target (or pass the target's thread count) for the choice to transfer.
    """
    out_path = Path(out_path)
    labels = np.asarray(labels)
    results = {}
    with tempfile.TemporaryDirectory(prefix=".act-", dir=out_path.parent) as tmp:
        for act in ACTIVATIONS:
            path = onnx2int8onnx(onnx_path, Path(tmp) / f"{act}.onnx", calib, method, act,
                                 per_channel)
            accuracy = float((run_onnx(path, inputs, threads).argmax(1) == labels).mean())
            results[act] = {"accuracy": accuracy, **latency_ms(path, inputs, runs, threads=threads)}
            log.info("int8 onnx, %s activations: accuracy %.4f, p50 %.3f ms", act, accuracy,
                     results[act]["p50_ms"])
        best = max(r["accuracy"] for r in results.values())
        eligible = [a for a in ACTIVATIONS if results[a]["accuracy"] >= best - accuracy_tolerance]
        chosen = min(eligible, key=lambda a: results[a]["p50_ms"])
        os.replace(Path(tmp) / f"{chosen}.onnx", out_path)
    return {"chosen": chosen, "method": method, "per_channel": per_channel,
            "n_images": int(len(labels)), "formats": results}
