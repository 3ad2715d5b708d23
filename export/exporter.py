"""One model -> every requested format and precision, each checked against PyTorch.

`export_model` is what `edgexray export` and the build pipeline call: it writes the files and
parity.json into a temporary folder next to `out_dir` and moves it into place at the end, so
the output folder appears complete or not at all.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from edgexray.fsutil import (
    atomic_write_json,
    partial_prefix,
    refuse_existing,
    remove_stale_partials,
    replace_dir,
    sha256_file,
)
from edgexray.models.predict import predict_logits
from edgexray.runtime.errors import EdgeXrayError
from edgexray.runtime.preprocess import Preprocess
from edgexray.runtime.runners import predict_file

from .calibration import CalibrationSet
from .formats import export_plan, file_name
from .onnx import onnx_metadata, torch2onnx
from .parity import DEFAULT_MAX_ACCURACY_DROP, parity
from .quantize_onnx import choose_scheme, onnx2int8onnx
from .tflite import DEFAULT_TIMEOUT_S, check_int8_tflite, onnx2tflite, tflite_ops

log = logging.getLogger(__name__)

PARITY_FILE = "parity.json"


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    files: dict  # {(format, precision): Path}
    report: dict  # the content of parity.json
    passed: bool
    timings: dict = field(default_factory=dict)  # seconds per step
    logits: dict = field(default_factory=dict, repr=False)  # {(format, precision): eval logits}


def export_model(
    model: torch.nn.Module,
    out_dir: str | os.PathLike,
    *,
    class_names: Sequence[str],
    preprocess: Preprocess,
    eval_inputs: np.ndarray,
    eval_labels: np.ndarray,
    formats=("onnx", "tflite"),
    precisions=("fp32", "int8"),
    calib: CalibrationSet | None = None,
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP,
    opset: int = 17,
    dynamic_batch: bool = False,
    per_channel: bool = True,
    onnx_calib_method: str = "minmax",
    onnx_scheme: str = "auto",
    tflite_timeout_s: float = DEFAULT_TIMEOUT_S,
    launcher: Sequence[str] = (),
    metadata: dict | None = None,
    info: dict | None = None,
    choice_inputs: np.ndarray | None = None,
    choice_labels: np.ndarray | None = None,
    reference_logits: np.ndarray | None = None,
    force: bool = False,
) -> ExportResult:
    """Export, check parity on `eval_inputs` (float32 NCHW, normalized) / `eval_labels`, write
    `out_dir/{model_<precision>.<ext>, parity.json}`.

    `onnx_scheme` "auto" quantizes ONNX INT8 with every scheme (quantize_onnx.SCHEMES) and keeps
    the fastest that holds accuracy on this CPU, measured on `choice_inputs` / `choice_labels`
    (a validation split; default: the eval images). `metadata` is added to the ONNX
    metadata_props (e.g. arch), `info` to parity.json. `reference_logits`: the model's logits on
    `eval_inputs` when the caller has them. Never raises for failed parity: check `result.passed`.
    """
    plan = export_plan(formats, precisions)
    out_dir = Path(out_dir)
    refuse_existing(out_dir, force)
    needs_calib = any(f == "tflite" or p == "int8" for f, p in plan)
    if needs_calib and calib is None:
        raise EdgeXrayError(
            "INT8 and TFLite exports need calibration images (calib=...; "
            "CLI: --calib DIR with the training images)"
        )
    eval_inputs = np.asarray(eval_inputs, np.float32)
    expected = (preprocess.channels, preprocess.size, preprocess.size)
    if eval_inputs.ndim != 4 or eval_inputs.shape[1:] != expected:
        raise EdgeXrayError(
            f"parity inputs of shape {eval_inputs.shape}; expected (N, {expected[0]}, "
            f"{expected[1]}, {expected[2]}) from the model's preprocessing"
        )
    if choice_inputs is None:
        choice_inputs, choice_labels = eval_inputs, eval_labels
    timings, files, logits = {}, {}, {}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=partial_prefix(out_dir), dir=out_dir.parent))
    try:
        t = time.perf_counter()
        reference = (
            predict_logits(model, eval_inputs)
            if reference_logits is None
            else np.asarray(reference_logits, np.float32)
        )
        timings["torch_reference"] = time.perf_counter() - t
        fp32_onnx = tmp / file_name("onnx", "fp32")
        t = time.perf_counter()
        torch2onnx(
            model,
            fp32_onnx,
            input_shape=(1, *expected),
            opset=opset,
            dynamic_batch=dynamic_batch,
            metadata=onnx_metadata(class_names, preprocess, **(metadata or {})),
        )
        timings["onnx_fp32"] = time.perf_counter() - t
        extras: dict = {}
        if ("onnx", "int8") in plan:
            t = time.perf_counter()
            target = tmp / file_name("onnx", "int8")
            if onnx_scheme == "auto":
                extras[target] = {
                    "scheme_choice": choose_scheme(
                        fp32_onnx,
                        target,
                        calib,
                        choice_inputs,
                        choice_labels,
                        method=onnx_calib_method,
                        per_channel=per_channel,
                    )
                }
            else:
                onnx2int8onnx(fp32_onnx, target, calib, onnx_calib_method, onnx_scheme, per_channel)
            timings["onnx_int8"] = time.perf_counter() - t
        tflite_precisions = [p for f, p in plan if f == "tflite"]
        if tflite_precisions:
            t = time.perf_counter()
            made = onnx2tflite(
                fp32_onnx,
                tmp,
                precisions=tflite_precisions,
                calib=calib,
                per_channel=per_channel,
                timeout_s=tflite_timeout_s,
                launcher=launcher,
            )
            timings["tflite"] = time.perf_counter() - t
            for p, path in made.items():
                extras[path] = {"ops": tflite_ops(path)}
                if p == "int8":
                    extras[path]["io"] = check_int8_tflite(path)
        for fmt, precision in plan:
            files[(fmt, precision)] = tmp / file_name(fmt, precision)
        if ("onnx", "fp32") not in plan:
            fp32_onnx.unlink()
        t = time.perf_counter()
        entries = []
        for (fmt, precision), path in files.items():
            logits[(fmt, precision)] = predict_file(path, eval_inputs)
            check = parity(
                reference,
                eval_labels,
                path,
                eval_inputs,
                class_names,
                precision=precision,
                max_accuracy_drop=max_accuracy_drop,
                candidate_logits=logits[(fmt, precision)],
            )
            entries.append(
                {
                    "format": fmt,
                    "precision": precision,
                    "file": path.name,
                    "bytes": path.stat().st_size,
                    "sha256": sha256_file(path),
                    **extras.get(path, {}),
                    "parity": check,
                }
            )
        timings["parity"] = time.perf_counter() - t
        passed = all(e["parity"]["passed"] for e in entries)
        report = {
            "passed": passed,
            "class_names": list(class_names),
            "preprocess": preprocess.to_dict(),
            "input_shape": [1, *expected],
            "eval": {
                "n_images": int(len(eval_labels)),
                "per_class": np.bincount(eval_labels, minlength=len(class_names)).tolist(),
            },
            "choices": {"n_images": int(len(choice_labels))},  # what the INT8 scheme is chosen on
            "calibration": None
            if calib is None
            else {
                "n_images": len(calib),
                "root": calib.root,
                "per_class": (
                    np.bincount(calib.labels, minlength=len(class_names)).tolist()
                    if calib.labels is not None
                    else None
                ),
            },
            "settings": {
                "opset": opset,
                "dynamic_batch": dynamic_batch,
                "per_channel": per_channel,
                "onnx_calib_method": onnx_calib_method,
                "onnx_scheme": onnx_scheme,
                "max_accuracy_drop_pp": max_accuracy_drop,
            },
            "info": info or {},
            "files": entries,
            "timings_s": {k: round(v, 2) for k, v in timings.items()},
        }
        atomic_write_json(tmp / PARITY_FILE, report)
        replace_dir(tmp, out_dir, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    final = {k: out_dir / v.name for k, v in files.items()}
    return ExportResult(
        out_dir=out_dir, files=final, report=report, passed=passed, timings=timings, logits=logits
    )
