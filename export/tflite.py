"""ONNX -> TFLite through onnx2tf, offline, in a subprocess; plus checks on the result."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx

from edgexray.fsutil import remove_dead_entries
from edgexray.runtime.errors import EdgeXrayError
from edgexray.runtime.preprocess import resize_square

from .calibration import CalibrationSet
from .formats import check_precision, get_format
from .graph_fixes import split_concat_conv, zero_pad_maxpool
from .onnx import INPUT_NAME

log = logging.getLogger(__name__)

# onnx2tf loads this file from its working directory instead of downloading it (DESIGN.md).
SAMPLE_NAME = "calibration_image_sample_data_20x128x128x3_float32.npy"
DEFAULT_TIMEOUT_S = 900  # a full ResNet at 224 px takes about a minute on 2 cores
LOG_TAIL = 6000  # characters of the converter's log attached to an error


def onnx2tflite(
    onnx_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    precisions: Sequence[str] = ("fp32", "fp16", "int8", "dynamic"),
    calib: CalibrationSet | None = None,
    per_channel: bool = True,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    stem: str = "model",
    launcher: Sequence[str] = (),
    log_path: str | os.PathLike | None = None,
    int8_io: tuple = ("int8", "int8"),
    int8_calib_nhwc: np.ndarray | None = None,
) -> dict[str, Path]:
    """Convert `onnx_path` to `out_dir/{stem}_{precision}.tflite` for each of `precisions` only.

    `calib` (required) supplies onnx2tf's offline sample file and, for int8, the representative
    dataset, normalized with the model's own mean/std. `launcher` prefixes the subprocess
    command (e.g. ("unshare", "-rn") to run with no network namespace at all). INT8 files are
    checked for builtin ops only and int8 input/output. `int8_io` (input, output) types of the
    int8 file: ("uint8", "float32") makes the Tasks-ready variant (export/tasks_variant.py),
    whose representative data `int8_calib_nhwc` then replaces calib's normalized images.
    Raises EdgeXrayError with the tail of the converter's log on failure.
    """
    precisions = [check_precision(p) for p in dict.fromkeys(precisions)]
    allowed = get_format("tflite").precisions
    for p in precisions:
        if p not in allowed:
            raise EdgeXrayError(f"precision {p!r} is not available for tflite; allowed: {', '.join(allowed)}")
    if calib is None:
        raise EdgeXrayError(
            "onnx2tflite needs a CalibrationSet of real images (calib=...): it "
            "feeds int8 calibration and replaces onnx2tf's internet sample data"
        )
    onnx_path = Path(onnx_path).resolve()
    if not onnx_path.is_file():
        raise EdgeXrayError(f"ONNX file {str(onnx_path)!r} not found; create it with torch2onnx")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_dead_entries(tempfile.gettempdir(), "edgexray-onnx2tf-")  # left by killed builds
    with tempfile.TemporaryDirectory(prefix=f"edgexray-onnx2tf-{os.getpid()}-") as tmp:
        work = Path(tmp)
        np.save(work / SAMPLE_NAME, sample_data(calib))
        try:
            graph = onnx.load(str(onnx_path))
        except Exception as e:  # protobuf DecodeError and friends
            raise EdgeXrayError(
                f"{str(onnx_path)!r} is not a readable ONNX file ({e}); re-create it with torch2onnx"
            ) from None
        zero_pad_maxpool(graph)
        split_concat_conv(graph)
        onnx.save(graph, str(work / "model.onnx"))
        batch = graph.graph.input[0].type.tensor_type.shape.dim[0]
        spec = {
            "onnx_path": str(work / "model.onnx"),
            "work_dir": str(work),
            "input_name": INPUT_NAME,
            "per_channel": bool(per_channel),
            "result_path": str(work / "result.json"),
            "outputs": {p: str(work / f"{stem}_{p}.tflite") for p in precisions},
            # a dynamic-batch ONNX becomes a batch-1 TFLite file (what devices run)
            "batch_size": None if batch.HasField("dim_value") else 1,
            "int8_io": list(int8_io),
        }
        if "int8" in precisions:
            np.save(
                work / "calib_nhwc.npy",
                calib.nhwc() if int8_calib_nhwc is None else np.asarray(int8_calib_nhwc, np.float32),
            )
            spec["calib_nhwc"] = str(work / "calib_nhwc.npy")
        (work / "spec.json").write_text(json.dumps(spec))
        log_file = work / "onnx2tf.log"
        _run_worker(list(launcher), work, log_file, timeout_s)
        if log_path is not None:
            shutil.copyfile(log_file, log_path)
        result = json.loads((work / "result.json").read_text())
        log.info("onnx2tf timings: %s", result["timings"])
        paths = {}
        for p in precisions:
            final = out_dir / f"{stem}_{p}.tflite"
            tmp_final = out_dir / f".{final.name}.tmp"
            shutil.copyfile(result["written"][p], tmp_final)
            os.replace(tmp_final, final)
            paths[p] = final
    if "int8" in paths and tuple(int8_io) == ("int8", "int8"):
        check_int8_tflite(paths["int8"])
    for path in paths.values():
        check_builtin_ops(path)
    return paths


def sample_data(calib: CalibrationSet, count: int = 20, size: int = 128) -> np.ndarray:
    """onnx2tf's sample file (20 x 128 x 128 x 3, [0, 1]) made from the real calibration images."""
    idx = np.arange(count) % len(calib)
    gray = np.stack([resize_square(calib.gray[i], size) for i in idx])
    return np.repeat(gray[..., None], 3, axis=-1).astype(np.float32)


def _run_worker(launcher: list, work: Path, log_file: Path, timeout_s: float) -> None:
    cmd = launcher + [sys.executable, "-m", "edgexray.export._tflite_worker", str(work / "spec.json")]
    # onnx2tf calls the `onnxsim` command, installed next to this interpreter
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = dict(
        os.environ, PATH=path, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1", PYTHONUNBUFFERED="1"
    )
    log.info("converting with onnx2tf: %s", " ".join(cmd))
    with open(log_file, "wb") as out:
        try:
            proc = subprocess.run(
                cmd, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s
            )
        except subprocess.TimeoutExpired:
            raise EdgeXrayError(
                f"onnx2tf conversion did not finish within {timeout_s:.0f} s; "
                f"raise the timeout or export a smaller model. Log tail:\n"
                f"{_tail(log_file)}"
            ) from None
        except FileNotFoundError as e:
            raise EdgeXrayError(f"cannot start the conversion ({e}); check the launcher {launcher}") from None
    if proc.returncode != 0 or not (work / "result.json").is_file():
        raise EdgeXrayError(
            f"onnx2tf conversion failed (exit status {proc.returncode}). Log tail:\n{_tail(log_file)}"
        )


def _tail(path: Path, n: int = LOG_TAIL) -> str:
    text = path.read_text(errors="replace") if path.is_file() else "(no log)"
    return text[-n:]


# ---------------------------------------------------------------------------------------------
# Checks on a TFLite file (no TensorFlow needed)


def tflite_ops(path: str | os.PathLike) -> list[str]:
    """Names of the operator codes in the flatbuffer; custom ops as 'CUSTOM:<code>'."""
    from ai_edge_litert import schema_py_generated as schema

    buf = Path(path).read_bytes()
    model = schema.Model.GetRootAsModel(buf, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    ops = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            ops.append(f"CUSTOM:{(code.CustomCode() or b'').decode()}")
        else:
            ops.append(names.get(builtin, f"BUILTIN_{builtin}"))
    return ops


def check_builtin_ops(path: str | os.PathLike) -> list[str]:
    """Raise unless every op is a TFLite builtin (no Flex / select-TF or custom ops)."""
    ops = tflite_ops(path)
    bad = [op for op in ops if op.startswith("CUSTOM:")]
    if bad:
        raise EdgeXrayError(
            f"{str(path)!r} uses non-builtin ops {bad}; the device runtime cannot "
            "run them. Replace the layers that need them or export to ONNX"
        )
    return ops


def tflite_io_details(path: str | os.PathLike) -> dict:
    """Input/output name, shape, dtype and quantization (scale, zero point) for the manifest."""
    from edgexray.runtime.runners import open_runner

    runner = open_runner("litert", path, threads=1)

    def describe(spec):  # a float tensor has scale 0.0 and zero point 0 in the file
        return {
            "name": spec.name,
            "shape": [int(s) for s in spec.shape],
            "dtype": spec.dtype,
            "scale": float(spec.scale or 0.0),
            "zero_point": int(spec.zero_point or 0),
        }

    return {"input": describe(runner.input_spec), "output": describe(runner.output_spec)}


def check_int8_tflite(path: str | os.PathLike) -> dict:
    """Raise unless input and output are int8 and all ops are builtin; returns the I/O details."""
    io = tflite_io_details(path)
    for key in ("input", "output"):
        if io[key]["dtype"] != "int8":
            raise EdgeXrayError(
                f"{str(path)!r} has a {io[key]['dtype']} {key}; a full-integer "
                "INT8 file needs int8 input and output"
            )
    check_builtin_ops(path)
    return io
