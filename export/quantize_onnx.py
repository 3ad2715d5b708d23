"""ONNX FP32 -> ONNX INT8 with ONNX Runtime static QDQ quantization, calibrated on real images."""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from edgexray.fsutil import atomic_write_bytes
from edgexray.runtime.errors import unknown_name
from edgexray.runtime.latency import first_and_warmup, time_runs
from edgexray.runtime.runners import open_runner

from .calibration import CalibrationSet
from .onnx import INPUT_NAME, set_metadata

log = logging.getLogger(__name__)

METHODS = ("minmax", "entropy", "percentile")


@dataclass(frozen=True)
class Int8Scheme:
    """How ONNX Runtime stores an INT8 model: activation and weight types, 7-bit weights or not.

    The scheme must suit the CPU that runs the file. On x86 without VNNI, ONNX Runtime's u8xs8
    kernels multiply with VPMADDUBSW, whose 16-bit pair sums saturate: u8s8 files lost 33 points
    of agreement with FP32 on such CPUs here. 7-bit weights (reduce_range) or u8 weights avoid it.
    """

    name: str
    activation: str  # "u8" | "s8"
    weights: str  # "s8" | "u8"
    reduce_range: bool
    note: str


# The order is the preference among schemes that measure equally fast (within TIE_FRACTION):
# earlier ones are exact on more CPUs.
SCHEMES = {
    s.name: s
    for s in (
        Int8Scheme(
            "u8s8-rr", "u8", "s8", True, "u8 activations, 7-bit s8 weights: no saturation on any x86 CPU"
        ),
        Int8Scheme("u8u8", "u8", "u8", False, "u8 activations and weights: no saturation"),
        Int8Scheme(
            "s8s8",
            "s8",
            "s8",
            False,
            "s8 activations and weights: ONNX Runtime runs them through its u8xs8 kernels "
            "on x86, so they saturate without VNNI too",
        ),
        Int8Scheme(
            "u8s8",
            "u8",
            "s8",
            False,
            "ONNX Runtime's default: fastest with VNNI, saturates on x86 without it",
        ),
    )
}
DEFAULT_SCHEME = "u8s8-rr"  # accurate on every CPU; used when nothing is measured
TIE_FRACTION = 0.05  # p50 latencies closer than this count as equally fast


def onnx2int8onnx(
    onnx_path: str | os.PathLike,
    out_path: str | os.PathLike,
    calib: CalibrationSet,
    method: str = "minmax",
    scheme: str = DEFAULT_SCHEME,
    per_channel: bool = True,
) -> Path:
    """Static QDQ quantization with `scheme`'s types (weights per output channel by default),
    activation ranges from `calib`. The FP32 file's metadata_props are kept."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in METHODS:
        raise unknown_name("calibration method", method, METHODS)
    if scheme not in SCHEMES:
        raise unknown_name("ONNX INT8 scheme", scheme, SCHEMES)
    chosen = SCHEMES[scheme]
    calibrate = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[method]
    types = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}
    source = onnx.load(str(onnx_path))
    input_name = source.graph.input[0].name if source.graph.input else INPUT_NAME
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix=".quant-", dir=out_path.parent) as tmp:
        raw = Path(tmp) / "model.onnx"
        quantize_static(
            str(onnx_path),
            str(raw),
            calib.reader(input_name),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            reduce_range=chosen.reduce_range,
            activation_type=types[chosen.activation],
            weight_type=types[chosen.weights],
            calibrate_method=calibrate,
        )
        model = onnx.load(str(raw))
    set_metadata(model, {p.key: p.value for p in source.metadata_props})
    set_metadata(
        model,
        {
            "quantization": {
                "tool": "onnxruntime",
                "format": "QDQ",
                "method": method,
                "scheme": chosen.name,
                "activation": chosen.activation,
                "weights": chosen.weights,
                "reduce_range": chosen.reduce_range,
                "per_channel": per_channel,
                "calib_images": len(calib),
            }
        },
    )
    return atomic_write_bytes(out_path, model.SerializeToString())


def latency_ms(
    path: str | os.PathLike, sample: np.ndarray, runs: int = 50, warmup: int = 5, threads: int | None = None
) -> dict:
    """p50 / p90 of single-image ONNX Runtime latency, in milliseconds, after warm-up."""
    runner = open_runner("onnxruntime-cpu", path, threads)
    x = runner.prepare(np.asarray(sample[:1], np.float32))
    first_and_warmup(lambda: runner.run_raw(x), max(warmup - 1, 0))  # `warmup` calls in all
    times = np.asarray(time_runs(lambda: runner.run_raw(x), 0.0, runs, runs)) / 1e6
    return {
        "p50_ms": float(np.percentile(times, 50)),
        "p90_ms": float(np.percentile(times, 90)),
        "runs": runs,
        "threads": threads,
    }


def _onnx_logits(path, inputs: np.ndarray, threads: int | None) -> np.ndarray:
    return open_runner("onnxruntime-cpu", path, threads).predict_all(inputs)


def pick_scheme(results: dict, fp32_accuracy: float, accuracy_tolerance: float):
    """(chosen, eligible) from {scheme: {"accuracy", "p50_ms"}}: eligible schemes are within
    `accuracy_tolerance` of the FP32 accuracy (or of the best scheme's when none is); the chosen
    one is the first eligible in SCHEMES order whose p50 is within TIE_FRACTION of the fastest."""
    floor = min(fp32_accuracy, max(r["accuracy"] for r in results.values()))
    eligible = [n for n in SCHEMES if n in results and results[n]["accuracy"] >= floor - accuracy_tolerance]
    fastest = min(results[n]["p50_ms"] for n in eligible)
    chosen = next(n for n in eligible if results[n]["p50_ms"] <= fastest * (1 + TIE_FRACTION))
    return chosen, eligible


def choose_scheme(
    onnx_path: str | os.PathLike,
    out_path: str | os.PathLike,
    calib: CalibrationSet,
    inputs: np.ndarray,
    labels: np.ndarray,
    *,
    method: str = "minmax",
    per_channel: bool = True,
    runs: int = 50,
    threads: int | None = None,
    accuracy_tolerance: float = 0.005,
) -> dict:
    """Quantize with every scheme, measure accuracy on `inputs` / `labels` (a validation split,
    never the reported test split) and latency on THIS machine's CPU; keep at `out_path` the
    fastest scheme within `accuracy_tolerance` (fraction) of the FP32 file's accuracy, or of the
    best scheme's when none is; returns the measurements and the CPU features they depend on.

    Run it on the target's CPU class for the choice to transfer: a file chosen on a CPU with
    VNNI may saturate on one without it (the preference order breaks ties towards portable).
    """
    from edgexray.runtime.environment import cpu_isa, cpu_model

    out_path = Path(out_path)
    labels = np.asarray(labels)
    fp32_accuracy = float((_onnx_logits(onnx_path, inputs, threads).argmax(1) == labels).mean())
    results = {}
    with tempfile.TemporaryDirectory(prefix=".int8-", dir=out_path.parent) as tmp:
        for name in SCHEMES:
            path = onnx2int8onnx(onnx_path, Path(tmp) / f"{name}.onnx", calib, method, name, per_channel)
            accuracy = float((_onnx_logits(path, inputs, threads).argmax(1) == labels).mean())
            results[name] = {"accuracy": accuracy, **latency_ms(path, inputs, runs, threads=threads)}
            log.info(
                "int8 onnx %s: accuracy %.4f (fp32 %.4f), p50 %.3f ms",
                name,
                accuracy,
                fp32_accuracy,
                results[name]["p50_ms"],
            )
        chosen, eligible = pick_scheme(results, fp32_accuracy, accuracy_tolerance)
        os.replace(Path(tmp) / f"{chosen}.onnx", out_path)
    return {
        "chosen": chosen,
        "method": method,
        "per_channel": per_channel,
        "n_images": int(len(labels)),
        "fp32_accuracy": fp32_accuracy,
        "accuracy_tolerance": accuracy_tolerance,
        "eligible": eligible,
        "cpu_model": cpu_model(),
        "cpu_isa": cpu_isa(),
        "schemes": results,
    }
