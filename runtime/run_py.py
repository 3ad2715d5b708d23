#!/usr/bin/env python3
"""run.py of an edgexray artifact: verify, predict with and benchmark the model next to it.

Needs only Python 3.9+, numpy and the model's runtime:
    pip install numpy ai-edge-litert      # model.runtime "litert" (.tflite)
    pip install numpy onnxruntime         # model.runtime "onnxruntime" (.onnx)
Pillow is used for JPEG and other formats when installed; PNG, NPY and PGM are read without it.

    python run.py verify                      # the artifact's integrity (below); exit 3 if broken
    python run.py predict IMAGES_OR_DIRS... [--format json|csv] [--out FILE] [--raw]
    python run.py bench [--seconds S | --runs N] [--threads T] [--data DIR] [--out FILE]
    python run.py ops                         # runtime, version, op list (DELEGATE = XNNPACK)
    python run.py time FILES... [--rounds R]  # bare model files, each in its own process

Exit status: 0 ok, 2 bad usage or input, 3 integrity failure (verify, predict, bench and ops
refuse to run then).

Integrity (checked before every command): run.py holds the sha256 of manifest.json
(MANIFEST_SHA256, written when the artifact was sealed), so editing any manifest field is caught;
checksums.sha256 (`sha256sum -c checksums.sha256` checks it too) covers every file incl.
manifest.json and run.py; manifest "files" lists sha256 and size of every other file; and
labels.txt must equal class_names line by line.

manifest.json ("edgexray.artifact/1"; the same text is in docs/ARCHITECTURE.md, "manifest").
Unknown top-level keys are allowed and ignored; the keys below are required unless optional.

    {
      "schema": "edgexray.artifact/1",
      "model": {"file": "model.tflite",         # relative path, also listed in "files"
                "runtime": "litert",            # "litert" (.tflite) | "onnxruntime" (.onnx)
                "precision": "int8"},           # "int8" | "fp16" | "fp32" (informational)
      "input": {"shape": [1, 224, 224, 1],      # batch 1 first
                "layout": "NHWC",               # "NHWC" ([1,S,S,C]) | "NCHW" ([1,C,S,S])
                "dtype": "int8",                # "int8" | "uint8" | "float32"
                "quantization": {"scale": 0.0392, "zero_point": -1}},   # null for float32
      "output": {"shape": [1, 2], "dtype": "int8",
                 "quantization": {"scale": 0.1, "zero_point": 3},        # null for float32
                 "kind": "logits"},             # optional: "logits" (default) | "probabilities"
      "preprocess": {"size": 224, "channels": 1, "mean": [0.5], "std": [0.25],
                     "resize": "triangle"},     # Preprocess.to_dict(); matches input shape;
                     # optional "pixels": "raw": gray x 255 instead of [0, 1] (Tasks-ready model)
                     # optional "intensity": "standardize" | "equalize": per image, before mean/std
      "class_names": ["NORMAL", "PNEUMONIA"],   # output index order
      "threads": 4,                             # optional default thread count
      # optional, onnxruntime only: model.execution_provider "CPUExecutionProvider" (default) |
      # "CUDAExecutionProvider" | "TensorrtExecutionProvider" (needs onnxruntime-gpu), and
      # model.provider_fallback "cpu" (run on the CPU, say so on stderr and in bench "provider")
      # | "none" (default: exit 2 when the provider is not available here)
      "files": {"model.tflite": {"sha256": "<64 hex>", "bytes": 123456},
                "labels.txt": {"sha256": "<64 hex>", "bytes": 20}}  # every file but manifest.json,
    }                                           # run.py and checksums.sha256 (they seal it)
    }

Quantization: real = scale * (q - zero_point). The normalized NCHW float input is transposed
to the layout, then q = clip(round(x / scale) + zero_point); the output is dequantized likewise.
The model's own tensors must agree with input/output above; run.py checks that on load.

The host builds this file with edgexray.export.run_py_render.render_run_py(), which puts every
module of edgexray.runtime (the runtime layer) in place of the imports marked below.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

# >>> runtime layer: render_run_py puts every module of runtime/ here, in import order
from edgexray.runtime.accuracy import evaluate, labeled_images, list_images, load_batch
from edgexray.runtime.environment import environment, peak_rss_mb
from edgexray.runtime.errors import EdgeXrayError
from edgexray.runtime.integrity import (
    CHECKSUMS_NAME,
    LABELS_NAME,
    RUN_PY_NAME,
    checked_manifest,
    integrity_error,
    integrity_problems,
    sha256_of,
)
from edgexray.runtime.latency import Stopwatch, measure_latency
from edgexray.runtime.manifest import EXECUTION_PROVIDERS, MANIFEST_NAME, read_manifest
from edgexray.runtime.metrics import softmax
from edgexray.runtime.preprocess import Preprocess
from edgexray.runtime.record import bench_document, bench_entry
from edgexray.runtime.runner_base import Runner, TensorSpec, default_threads, dequantize
from edgexray.runtime.runners import LiteRTRunner, OrtRunner, runner_for_file

# <<< runtime layer

EDGEXRAY_VERSION = None  # set by render_run_py
# the seal: sha256 of this artifact's manifest.json (checked as it stands in the artifact's run.py)
MANIFEST_SHA256 = None  # set by render_run_py
EXIT_USAGE = 2


# ---------------------------------------------------------------- model


def _manifest_spec(t: dict, layout: str) -> TensorSpec:
    q = t.get("quantization")
    return TensorSpec(
        shape=tuple(t["shape"]),
        dtype=t["dtype"],
        layout=layout,
        scale=float(q["scale"]) if q else None,
        zero_point=int(q["zero_point"]) if q else None,
    )


def _spec_mismatch(where: str, declared: TensorSpec, actual: TensorSpec) -> list:
    problems = []
    shape_ok = len(declared.shape) == len(actual.shape) and all(
        a < 0 or a == d for d, a in zip(declared.shape, actual.shape)
    )
    if not shape_ok:
        problems.append(f"{where} shape {list(declared.shape)} vs model {list(actual.shape)}")
    if declared.dtype != actual.dtype:
        problems.append(f"{where} dtype {declared.dtype} vs model {actual.dtype}")
    elif declared.quantized and not (
        math.isclose(declared.scale, actual.scale or 0.0, rel_tol=1e-5)
        and declared.zero_point == actual.zero_point
    ):
        problems.append(
            f"{where} quantization ({declared.scale}, {declared.zero_point}) vs model "
            f"({actual.scale}, {actual.zero_point})"
        )
    return problems


def _ort_runner(path, threads, model: dict) -> Runner:
    """ONNX Runtime on the manifest's execution provider; on the CPU instead, said on stderr and
    recorded in runner.provider, only when the manifest's provider_fallback is "cpu"."""
    wanted = model.get("execution_provider", "CPUExecutionProvider")
    runner = None
    if wanted != "CPUExecutionProvider":
        try:
            import onnxruntime as ort

            available = ort.get_available_providers()
        except ImportError:
            ort, available = None, []
        if wanted in available:
            runner = OrtRunner(path, threads, kind=EXECUTION_PROVIDERS[wanted])
            if runner.providers()[0] == wanted:
                runner.provider = {"requested": wanted, "used": wanted, "fallback": False}
                return runner
            why = (
                f"ONNX Runtime lists {wanted} but could not start it (CUDA/cuDNN/TensorRT "
                f"libraries missing or no GPU; it ran on {runner.providers()})"
            )
        elif ort is None:
            why = "onnxruntime-gpu is not installed here"
        else:
            why = f"onnxruntime-gpu/CUDA is missing here (onnxruntime {ort.__version__} offers {available})"
        fix = (
            "install onnxruntime-gpu with a matching CUDA (see the artifact's README, 'install') "
            "on a machine with an NVIDIA GPU"
        )
        if model.get("provider_fallback", "none") != "cpu":
            raise EdgeXrayError(
                f"the manifest asks for {wanted} but {why}, and its "
                "provider_fallback is 'none' (no CPU fallback allowed); " + fix
            )
        print(
            f"warning: the manifest asks for {wanted} but {why}; running on the CPU instead "
            f"(manifest provider_fallback: cpu): figures are CPU figures; to use the GPU, {fix}",
            file=sys.stderr,
        )
    if runner is None or runner.kind != "onnxruntime-cpu":
        runner = OrtRunner(path, threads, kind="onnxruntime-cpu")
    runner.provider = {
        "requested": wanted,
        "used": "CPUExecutionProvider",
        "fallback": wanted != "CPUExecutionProvider",
    }
    return runner


def load_model(folder, manifest: dict, threads=None) -> Runner:
    """Load the manifest's model and check its tensors against the manifest."""
    path = Path(folder) / manifest["model"]["file"]
    threads = threads or manifest.get("threads") or default_threads()
    if manifest["model"]["runtime"] == "litert":
        runner = LiteRTRunner(path, threads)
    else:
        runner = _ort_runner(path, threads, manifest["model"])
    declared_in = _manifest_spec(manifest["input"], manifest["input"]["layout"])
    declared_out = _manifest_spec(manifest["output"], "NC")
    problems = _spec_mismatch("input", declared_in, runner.input_spec) + _spec_mismatch(
        "output", declared_out, runner.output_spec
    )
    if problems:
        raise EdgeXrayError(
            f"manifest.json does not describe {path.name}: " + "; ".join(problems) + "; rebuild the artifact"
        )
    runner.input_spec = declared_in  # the manifest decides the layout when the shape is ambiguous
    return runner


def _preprocess(manifest) -> Preprocess:
    return Preprocess.from_dict(manifest["preprocess"])


def _temperature(manifest) -> float:
    """The build's temperature (fitted on val); 1.0 for an artifact without one."""
    t = (manifest.get("calibration") or {}).get("temperature", 1.0)
    if not (isinstance(t, (int, float)) and math.isfinite(t) and t > 0):
        raise EdgeXrayError(
            f"calibration.temperature in {MANIFEST_NAME} is {t!r}; it must be a "
            "positive number; rebuild the artifact"
        )
    return float(t)


def _probabilities(manifest, logits: np.ndarray) -> np.ndarray:
    if manifest["output"].get("kind", "logits") == "probabilities":
        return logits.astype(np.float32)
    # temperature scaling: calibrated probabilities, the same argmax
    return softmax(np.asarray(logits, np.float64) / _temperature(manifest))


def _decision(manifest):
    """(positive class index, threshold) of the build's operating point, or None."""
    d = manifest.get("decision")
    if not d:
        return None
    t = d.get("threshold")
    if d.get("positive_class") not in manifest["class_names"] or not (
        isinstance(t, (int, float)) and 0 <= t <= 1
    ):
        raise EdgeXrayError(
            f"decision in {MANIFEST_NAME} must name a class of "
            f"{manifest['class_names']} and a threshold in [0, 1], got {d!r}; "
            "rebuild the artifact"
        )
    return manifest["class_names"].index(d["positive_class"]), float(t)


def _label_index(probs: np.ndarray, decision) -> int:
    """The positive class when its probability reaches the threshold, else the most probable
    other class (argmax without an operating point)."""
    if decision is None:
        return int(probs.argmax())
    pos, threshold = decision
    if probs[pos] >= threshold:
        return pos
    others = np.array(probs, np.float64)
    others[pos] = -np.inf
    return int(others.argmax())


def _write_text(out, text: str) -> None:
    """To stdout, or atomically to a file."""
    if not out:
        sys.stdout.write(text)
        return
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- commands


def cmd_verify(folder, args) -> int:
    problems, unlisted, manifest = integrity_problems(folder)
    for name in unlisted:
        print(f"note: {name} is not in the manifest (not checked, not used)", file=sys.stderr)
    if problems:
        raise integrity_error(folder, problems)
    print(
        f"OK: {len(manifest['files'])} files match {MANIFEST_NAME}; {MANIFEST_NAME} matches the "
        f"seal in {RUN_PY_NAME}; {CHECKSUMS_NAME} matches; {LABELS_NAME} equals class_names"
    )
    return 0


def predictions(folder, manifest, images, threads=None, raw=False) -> dict:
    paths = []
    for item in images:
        found = list_images(item)
        if not found:
            raise EdgeXrayError(f"no images under {item!r}; pass image files or folders of images")
        paths += found
    runner = load_model(folder, manifest, threads)
    pre, names = _preprocess(manifest), manifest["class_names"]
    decision = _decision(manifest)
    rows = []
    for path in paths:
        q = runner.run_raw(runner.prepare(load_batch([path], pre)))
        probs = _probabilities(manifest, dequantize(q, runner.output_spec))[0]
        index = _label_index(probs, decision)
        row = {
            "image": str(path),
            "label": names[index],
            "index": index,
            "probability": float(probs[index]),
            "probabilities": {n: float(p) for n, p in zip(names, probs)},
        }
        if raw:
            row["raw"] = q[0].tolist()
        rows.append(row)
    return {
        "schema": "edgexray.predictions/1",
        "model": manifest["model"]["file"],
        "class_names": names,
        "decision": decision and {"positive_class": names[decision[0]], "threshold": decision[1]},
        "predictions": rows,
    }


def cmd_predict(folder, args) -> int:
    manifest = checked_manifest(folder)
    result = predictions(folder, manifest, args.images, args.threads, args.raw)
    if args.format == "json":
        text = json.dumps(result, indent=2) + "\n"
    else:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        names = result["class_names"]
        writer.writerow(
            ["image", "label", "index", "probability"]
            + [f"p_{n}" for n in names]
            + (["raw"] if args.raw else [])
        )
        for row in result["predictions"]:
            writer.writerow(
                [row["image"], row["label"], row["index"], f"{row['probability']:.6f}"]
                + [f"{row['probabilities'][n]:.6f}" for n in names]
                + ([" ".join(str(v) for v in row["raw"])] if args.raw else [])
            )
        text = buf.getvalue()
    _write_text(args.out, text)
    return 0


def _fresh_process(args: list, what: str, timeout: float | None = None) -> dict:
    """Run this file with `args` in a new interpreter; -> the JSON of its last stdout line."""
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise EdgeXrayError(f"{what} failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def probe_memory(folder, threads: int, runs: int = 20, timeout: float = 600) -> dict:
    """Peak RSS of a fresh process that loads and runs the model, and of one with only the
    runtime imported; both are new interpreters started from this file."""
    figures = {
        mode: _fresh_process(
            [
                "--dir",
                str(folder),
                "_memprobe",
                "--mode",
                mode,
                "--threads",
                str(threads),
                "--runs",
                str(runs),
            ],
            f"memory probe ({mode})",
            timeout,
        )["peak_rss_mb"]
        for mode in ("empty", "model")
    }
    return {
        "peak_rss": figures["model"],
        "baseline_rss": figures["empty"],
        "increment": figures["model"] - figures["empty"],
        "device_peak": None,
        "method": "fresh-process",
    }


def cmd_memprobe(folder, args) -> int:
    """Internal: one fresh process for probe_memory; prints {"peak_rss_mb": ...}."""
    manifest = read_manifest(folder)
    if args.mode == "empty":
        if manifest["model"]["runtime"] == "litert":
            import ai_edge_litert.interpreter  # noqa: F401
        else:
            import onnxruntime  # noqa: F401
    else:
        runner = load_model(folder, manifest, args.threads)
        pre = _preprocess(manifest)
        x = np.zeros((1, pre.channels, pre.size, pre.size), np.float32)
        for _ in range(args.runs):
            runner.predict(x)
    print(json.dumps({"peak_rss_mb": peak_rss_mb()}))
    return 0


def bench_result(
    folder,
    manifest,
    *,
    seconds=5.0,
    runs=None,
    threads=None,
    data=None,
    limit=None,
    memory=True,
    label="artifact",
    warmup=5,
) -> dict:
    """One edgexray.bench/1 entry for this artifact's model."""
    pre = _preprocess(manifest)
    with Stopwatch() as load:
        runner = load_model(folder, manifest, threads)
    items = labeled_images(data, manifest["class_names"], limit) if data else None
    if items:
        x = load_batch([items[0][0]], pre)  # time a real image
    else:
        x = np.random.default_rng(0).normal(size=(1, pre.channels, pre.size, pre.size)).astype(np.float32)
    if runs:
        latency = measure_latency(
            lambda: runner.predict(x),
            seconds=0.0,
            warmup=warmup,
            min_runs=runs,
            max_runs=runs,
            load_ms=load.ms,
        )
    else:
        latency = measure_latency(lambda: runner.predict(x), seconds=seconds, warmup=warmup, load_ms=load.ms)
    accuracy = None
    if items:
        accuracy, _ = evaluate(
            runner,
            items,
            pre,
            manifest["class_names"],
            manifest["output"].get("kind", "logits"),
            data_label=str(data),
            temperature=_temperature(manifest),  # the labels `predict` prints
            decision=_decision(manifest),
        )
    model_file = manifest["model"]["file"]
    return bench_entry(
        label=label,
        model_file=model_file,
        model_sha256=manifest["files"][model_file]["sha256"],
        size_bytes=manifest["files"][model_file]["bytes"],
        runtime=runner.kind,
        runtime_version=runner.version,
        device=runner.device,
        precision=manifest["model"].get("precision"),
        threads=runner.threads,
        batch=1,
        input=runner.input_spec.to_dict(),
        latency_ms=latency,
        memory_mb=probe_memory(folder, runner.threads) if memory else None,
        accuracy=accuracy,
        provider=getattr(runner, "provider", None),
    )


def cmd_bench(folder, args) -> int:
    manifest = checked_manifest(folder)
    entry = bench_result(
        folder,
        manifest,
        seconds=args.seconds,
        runs=args.runs,
        threads=args.threads,
        data=args.data,
        limit=args.limit,
        memory=not args.no_memory,
        label=args.label,
        warmup=args.warmup,
    )
    producer = f"run.py (edgexray {EDGEXRAY_VERSION})" if EDGEXRAY_VERSION else "run.py"
    doc = bench_document([entry], environment(), producer)
    _write_text(args.out, json.dumps(doc, indent=2) + "\n")
    return 0


def time_file(path, *, seconds=5.0, runs=None, threads=None, warmup=5) -> dict:
    """One edgexray.bench/1 entry for a bare model file (.tflite, .onnx), timed in this process
    on random input of its own shape; memory is this whole process's peak RSS (python, numpy,
    the runtime and the model), what `run.py predict` would need."""
    with Stopwatch() as load:
        runner = runner_for_file(path, threads)
    spec = runner.input_spec
    n, *rest = [max(int(d), 1) for d in spec.shape]
    shape = (n, rest[2], rest[0], rest[1]) if spec.layout == "NHWC" else (n, *rest)
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    latency = measure_latency(
        lambda: runner.predict(x),
        seconds=0.0 if runs else seconds,
        warmup=warmup,
        **({"min_runs": runs, "max_runs": runs} if runs else {}),
        load_ms=load.ms,
    )
    return bench_entry(
        label=Path(path).name,
        model_file=Path(path).name,
        model_sha256=sha256_of(path),
        size_bytes=Path(path).stat().st_size,
        runtime=runner.kind,
        runtime_version=runner.version,
        device=runner.device,
        threads=runner.threads,
        input=spec.to_dict(),
        latency_ms=latency,
        memory_mb={
            "peak_rss": peak_rss_mb(),
            "baseline_rss": None,
            "increment": None,
            "device_peak": None,
            "method": "fresh-process, whole process",
        },
        provider=getattr(runner, "provider", None),
    )


def cmd_time(folder, args) -> int:
    """Each file in a fresh process, round after round (A B C, A B C): nothing one runtime
    leaves behind (threads, caches) slows the next, and a disturbed round shows. Per file the
    round with the lowest p50 is kept (a disturbance only adds time); every round's p50 too."""
    for f in args.files:
        if not Path(f).is_file():
            raise EdgeXrayError(f"model file {f!r} does not exist; pass .tflite or .onnx files")
    options = ["--warmup", str(args.warmup)]
    options += ["--runs", str(args.runs)] if args.runs else ["--seconds", str(args.seconds)]
    options += ["--threads", str(args.threads)] if args.threads else []
    rounds = {f: [] for f in args.files}
    for _ in range(args.rounds):
        for f in args.files:
            rounds[f].append(_fresh_process(["_time1", f, *options], f"timing {f}"))
    results = [
        {
            **min(entries, key=lambda e: e["latency_ms"]["p50"]),
            "round_p50_ms": [e["latency_ms"]["p50"] for e in entries],
        }
        for entries in rounds.values()
    ]
    producer = f"run.py time (edgexray {EDGEXRAY_VERSION})" if EDGEXRAY_VERSION else "run.py time"
    doc = bench_document(results, environment(), producer)
    _write_text(args.out, json.dumps(doc, indent=2) + "\n")
    return 0


def cmd_time1(folder, args) -> int:
    """Internal: one file timed in this fresh process (cmd_time starts it)."""
    entry = time_file(
        args.file, seconds=args.seconds, runs=args.runs, threads=args.threads, warmup=args.warmup
    )
    print(json.dumps(entry))
    return 0


def cmd_ops(folder, args) -> int:
    manifest = checked_manifest(folder)
    runner = load_model(folder, manifest, args.threads)
    ops = runner.ops()
    print(
        json.dumps(
            {
                "runtime": runner.kind,
                "version": runner.version,
                "ops": ops,
                "delegated": "DELEGATE" in ops,
                "provider": getattr(runner, "provider", None),
            },
            indent=2,
        )
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default=None, help="artifact folder (default: where run.py is)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("verify", help="check the artifact's integrity (exit 3 when it is broken)")
    p = sub.add_parser("predict", help="label and class probabilities per image")
    p.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    p.add_argument("--format", choices=("json", "csv"), default="json")
    p.add_argument("--out", default=None, help="write here instead of stdout")
    p.add_argument("--raw", action="store_true", help="add the raw output tensor as stored")
    p.add_argument("--threads", type=int, default=None)
    b = sub.add_parser("bench", help="latency, memory and (with --data) accuracy, as JSON")
    b.add_argument("--seconds", type=float, default=5.0, help="time budget for the timed runs")
    b.add_argument("--runs", type=int, default=None, help="a fixed number of timed runs instead")
    b.add_argument("--warmup", type=int, default=5, help="untimed runs after the first")
    b.add_argument("--threads", type=int, default=None)
    b.add_argument("--data", default=None, help="folder with one subfolder of images per class")
    b.add_argument("--limit", type=int, default=None, help="at most this many images per class")
    b.add_argument("--no-memory", action="store_true", help="skip the fresh-process memory probe")
    b.add_argument("--label", default="artifact")
    b.add_argument("--out", default=None, help="write the JSON here instead of stdout")
    o = sub.add_parser("ops", help="runtime, version and op list as JSON")
    o.add_argument("--threads", type=int, default=None)
    t = sub.add_parser("time", help="latency and peak RSS of bare model files, each in its own process")
    t.add_argument("files", nargs="+", help=".tflite / .onnx files")
    t.add_argument("--rounds", type=int, default=2, help="times each file is timed, interleaved")
    t1 = sub.add_parser("_time1", help=argparse.SUPPRESS)
    t1.add_argument("file")
    for q in (t, t1):
        q.add_argument("--seconds", type=float, default=3.0, help="time budget for the timed runs")
        q.add_argument("--runs", type=int, default=None, help="a fixed number of timed runs instead")
        q.add_argument("--warmup", type=int, default=5, help="untimed runs after the first")
        q.add_argument("--threads", type=int, default=None)
    t.add_argument("--out", default=None, help="write the JSON here instead of stdout")
    m = sub.add_parser("_memprobe", help=argparse.SUPPRESS)
    m.add_argument("--mode", choices=("empty", "model"), required=True)
    m.add_argument("--threads", type=int, required=True)
    m.add_argument("--runs", type=int, default=20)
    return parser


COMMANDS = {
    "verify": cmd_verify,
    "predict": cmd_predict,
    "bench": cmd_bench,
    "ops": cmd_ops,
    "time": cmd_time,
    "_time1": cmd_time1,
    "_memprobe": cmd_memprobe,
}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    folder = Path(args.dir) if args.dir else Path(__file__).resolve().parent
    for name in ("seconds", "runs", "threads", "limit", "warmup", "rounds"):
        value = getattr(args, name, None)
        if value is not None and (value < 0 or (value == 0 and name != "warmup")):
            print(f"error: --{name} must be positive, got {value}", file=sys.stderr)
            return EXIT_USAGE
    try:
        return COMMANDS[args.command](folder, args)
    except EdgeXrayError as e:  # IntegrityError: 3, other bad input: 2 (runtime/errors.py)
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
