"""Benchmarks on this machine: an artifact through its own run.py (the code the device runs),
or any model file through a host runner (PyTorch, ONNX Runtime incl. CUDA/TensorRT, LiteRT).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np

from edgexray import __version__
from edgexray.bench.memory import file_size, measure_memory
from edgexray.bench.runtimes import load_runner, runtime_for_suffix
from edgexray.fsutil import sha256_file
from edgexray.runtime.accuracy import evaluate, labeled_images, load_batch
from edgexray.runtime.environment import environment
from edgexray.runtime.errors import EdgeXrayError, IntegrityError
from edgexray.runtime.latency import Stopwatch, measure_latency
from edgexray.runtime.preprocess import Preprocess
from edgexray.runtime.record import bench_document, bench_entry, schema_problems

log = logging.getLogger(__name__)

PRODUCER = f"edgexray {__version__}"
MAX_UNZIPPED_BYTES = 4 << 30  # an artifact zip that unpacks to more is refused (zip bomb)


def is_artifact(path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "manifest.json").is_file()


def unzip_artifact(zip_path, dest) -> Path:
    """Unpack an artifact's .zip (as `edgexray build` writes it) into `dest`; -> the folder
    holding manifest.json. Paths outside the zip's folder and zip bombs are refused."""
    zip_path, dest = Path(zip_path), Path(dest)
    try:
        with zipfile.ZipFile(zip_path) as z:
            infos = z.infolist()
            outside = [
                i.filename
                for i in infos
                if PurePosixPath(i.filename).is_absolute()
                or ".." in PurePosixPath(i.filename).parts
                or "\\" in i.filename
            ]
            if outside:
                raise EdgeXrayError(
                    f"{str(zip_path)!r} holds paths outside its folder ({outside[:3]}); refusing to unpack it"
                )
            if sum(i.file_size for i in infos) > MAX_UNZIPPED_BYTES:
                raise EdgeXrayError(
                    f"{str(zip_path)!r} unpacks to more than "
                    f"{MAX_UNZIPPED_BYTES >> 30} GiB; no artifact is that large"
                )
            z.extractall(dest)
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as e:
        raise EdgeXrayError(f"{str(zip_path)!r} is not a readable zip ({e})") from None
    found = sorted(p.parent for p in dest.rglob("manifest.json"))
    if len(found) != 1:
        raise EdgeXrayError(
            f"{str(zip_path)!r} holds {len(found)} artifacts (folders with "
            "manifest.json), need exactly one; pass the .zip `edgexray build` "
            "wrote, or the artifact folder"
        )
    return found[0]


def run_py_args(
    *, seconds=5.0, runs=None, threads=None, data=None, limit=None, memory=True, warmup=5, label="artifact"
) -> list:
    """The `run.py bench` options for these settings (local and remote runs share them)."""
    args = ["--seconds", str(seconds), "--warmup", str(warmup), "--label", label]
    if runs:
        args += ["--runs", str(runs)]
    if threads:
        args += ["--threads", str(threads)]
    if limit:
        args += ["--limit", str(limit)]
    if not memory:
        args.append("--no-memory")
    return args + (["--data", str(data)] if data else [])


def parse_run_py_output(proc: subprocess.CompletedProcess, where: str, out_text: str | None) -> dict:
    """Turn a finished `run.py bench` into a checked bench document, or a clear error."""
    stderr = (proc.stderr or "").strip()
    last = [line for line in stderr.splitlines() if line.startswith("error:")] or stderr.splitlines()[-1:]
    if proc.returncode == IntegrityError.exit_code:
        message = last[-1][len("error:") :].strip() if last else "the artifact failed its integrity check"
        raise IntegrityError(f"run.py on {where}: {message}")
    if proc.returncode != 0:
        raise EdgeXrayError(
            f"run.py bench on {where} failed (exit {proc.returncode}): {last[-1] if last else '(no message)'}"
        )
    try:
        doc = json.loads(out_text if out_text is not None else proc.stdout)
    except ValueError as e:
        raise EdgeXrayError(f"run.py bench on {where} wrote no valid JSON ({e})") from None
    problems = schema_problems(doc)
    if problems:
        raise EdgeXrayError(
            f"run.py bench on {where} wrote results that do not follow "
            "edgexray.bench/1: " + "; ".join(problems)
        )
    return doc


def bench_artifact(artifact, *, python: str | None = None, timeout: float = 1800, **options) -> dict:
    """Run `python ARTIFACT/run.py bench` in a fresh process here; returns its bench document.

    options: seconds, runs, threads, data, limit, memory, warmup, label (see run_py_args).
    """
    artifact = Path(artifact)
    if not is_artifact(artifact) or not (artifact / "run.py").is_file():
        raise EdgeXrayError(
            f"{str(artifact)!r} is not an artifact folder (it needs manifest.json "
            "and run.py); pass the folder `edgexray build` or `edgexray export "
            "--bundle` wrote, or a model file with --runtime"
        )
    if options.get("data"):
        options["data"] = Path(options["data"]).resolve()
    return run_py_here(
        artifact / "run.py", ["bench", *run_py_args(**options)], python=python, timeout=timeout
    )


def run_py_here(run_py, args: list, *, python: str | None = None, timeout: float = 1800) -> dict:
    """`python RUN_PY ARGS --out results.json` in a fresh process here, in run.py's folder, as a
    checked bench document (`run.py bench` of an artifact, `run.py time` of bare files)."""
    run_py = Path(run_py).resolve()
    with tempfile.TemporaryDirectory(prefix="edgexray-bench-") as tmp:
        out = Path(tmp) / "results.json"
        cmd = [python or sys.executable, str(run_py), *args, "--out", str(out)]
        log.info("running %s", " ".join(cmd))
        try:
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=run_py.parent,
                env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
            )
        except subprocess.TimeoutExpired:
            raise EdgeXrayError(
                f"run.py {args[0]} did not finish within {timeout:.0f} s; raise --timeout or lower --seconds"
            ) from None
        text = out.read_text(encoding="utf-8") if out.is_file() else None
        return parse_run_py_output(proc, "this machine", text)


def guess_precision(runner) -> str:
    if runner.input_spec.dtype in ("int8", "uint8"):
        return "int8"
    if any(op in ("QuantizeLinear", "QLinearConv", "DynamicQuantizeLinear") for op in runner.ops()):
        return "int8"
    return "fp16" if runner.input_spec.dtype == "float16" else "fp32"


def model_context(runner, preprocess=None, class_names=None) -> tuple:
    """(Preprocess, class names) for a model: given ones win, else the file's own metadata."""
    meta = getattr(runner, "metadata", None) or {}
    if preprocess is None and "preprocess" in meta:
        preprocess = Preprocess.from_dict(meta["preprocess"])
    if class_names is None and "class_names" in meta:
        class_names = list(meta["class_names"])
    return preprocess, class_names


def latency_input(runner, preprocess, items) -> np.ndarray:
    """A real image when there is evaluation data, else fixed noise of the model's input shape."""
    if items:
        return load_batch([items[0][0]], preprocess)
    shape = [d if d > 0 else 1 for d in runner.input_spec.shape]
    if runner.input_spec.layout == "NHWC":
        shape = [shape[0], shape[3], shape[1], shape[2]]
    return np.random.default_rng(0).normal(size=shape).astype(np.float32)


def bench_model(
    path,
    kind: str | None = None,
    *,
    label: str | None = None,
    seconds: float = 5.0,
    runs: int | None = None,
    warmup: int = 5,
    threads: int | None = None,
    data=None,
    limit: int | None = None,
    memory: bool = True,
    preprocess: Preprocess | None = None,
    class_names=None,
    output_kind="logits",
    precision: str | None = None,
    temperature: float = 1.0,
    decision: tuple | None = None,
) -> dict:
    """One bench entry for a model file measured in this process (memory in fresh ones).
    `temperature` and `decision` (positive class index, threshold): an artifact's, applied to
    the --data figures as its run.py predict applies them."""
    path = Path(path)
    kind = kind or runtime_for_suffix(path.suffix)
    with Stopwatch() as load:
        runner = load_runner(kind, path, threads)
    preprocess, class_names = model_context(runner, preprocess, class_names)
    items = None
    if data:
        if preprocess is None or class_names is None:
            raise EdgeXrayError(
                f"{str(path)!r} carries no preprocess/class names, so it cannot be "
                "scored on --data; bench it inside an artifact or export it with "
                "edgexray (which writes them into the ONNX metadata)"
            )
        items = labeled_images(data, class_names, limit)
    x = latency_input(runner, preprocess, items)
    latency = measure_latency(
        lambda: runner.predict(x),
        seconds=0.0 if runs else seconds,
        warmup=warmup,
        min_runs=runs or 10,
        max_runs=runs or 10000,
        load_ms=load.ms,
    )
    accuracy = None
    if items:
        accuracy, _ = evaluate(
            runner,
            items,
            preprocess,
            class_names,
            output_kind,
            data_label=str(data),
            temperature=temperature,
            decision=decision,
        )
    mem = measure_memory(kind, path, runner.threads) if memory else None
    return bench_entry(
        label=label or path.name,
        model_file=path.name,
        model_sha256=sha256_file(path),
        size_bytes=file_size(path),
        runtime=kind,
        runtime_version=runner.version,
        device=runner.device,
        precision=precision or guess_precision(runner),
        threads=runner.threads,
        batch=1,
        input=runner.input_spec.to_dict(),
        latency_ms=latency,
        memory_mb=mem,
        accuracy=accuracy,
    )


def bench_artifact_with(artifact, kind: str, **options) -> dict:
    """An artifact's model measured by a host runner of the caller's choice (e.g. a CUDA EP);
    the files are verified against the manifest first."""
    from edgexray.runtime.integrity import checked_manifest

    manifest = checked_manifest(artifact)
    model = manifest["model"]
    return bench_model(
        Path(artifact) / model["file"],
        kind,
        preprocess=Preprocess.from_dict(manifest["preprocess"]),
        class_names=manifest["class_names"],
        precision=model.get("precision"),
        output_kind=manifest["output"].get("kind", "logits"),
        **artifact_decision(manifest),
        **options,
    )


def artifact_decision(manifest: dict) -> dict:
    """{temperature, decision}: how the artifact's run.py predict turns outputs into labels."""
    d = manifest.get("decision")
    return {
        "temperature": float((manifest.get("calibration") or {}).get("temperature", 1.0)),
        "decision": (manifest["class_names"].index(d["positive_class"]), float(d["threshold"]))
        if d
        else None,
    }


def single_document(entry: dict) -> dict:
    return bench_document([entry], environment(), PRODUCER)
