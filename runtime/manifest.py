"""An artifact's manifest.json ("edgexray.artifact/1"): its schema and what checks it.

The format is described at the top of runtime/run_py.py (run.py's own docstring) and in
docs/ARCHITECTURE.md, "manifest". manifest_problems() lists everything wrong with a manifest;
read_manifest() reads and checks one (EdgeXrayError), or IntegrityError when it is not JSON.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from edgexray.runtime.errors import EdgeXrayError, IntegrityError
from edgexray.runtime.preprocess import Preprocess
from edgexray.runtime.registry import RUNTIMES, manifest_runtimes

MANIFEST_SCHEMA = "edgexray.artifact/1"
MANIFEST_NAME = "manifest.json"
MODEL_RUNTIMES = manifest_runtimes()  # model.runtime -> the suffix of model.file
LAYOUTS = ("NHWC", "NCHW")
TENSOR_DTYPES = ("int8", "uint8", "float32")
OUTPUT_KINDS = ("logits", "probabilities")
# model.execution_provider (ONNX Runtime) -> the runner kind that uses it
EXECUTION_PROVIDERS = {info.providers[0]: name for name, info in RUNTIMES.items() if info.providers}
PROVIDER_FALLBACKS = ("cpu", "none")


def _tensor_problems(where: str, t) -> list:
    if not isinstance(t, dict):
        return [f"{where} must be an object"]
    problems = []
    shape = t.get("shape")
    if not (isinstance(shape, list) and shape and all(isinstance(d, int) for d in shape)):
        problems.append(f"{where}.shape must be a list of integers, got {shape!r}")
    if t.get("dtype") not in TENSOR_DTYPES:
        problems.append(f"{where}.dtype is {t.get('dtype')!r}; allowed: {list(TENSOR_DTYPES)}")
    q = t.get("quantization", "absent")
    if q == "absent":
        problems.append(f"{where}.quantization missing (null for float tensors)")
    elif q is None:
        if t.get("dtype") in ("int8", "uint8"):
            problems.append(f"{where} is {t.get('dtype')} but has no quantization")
    elif not (
        isinstance(q, dict)
        and isinstance(q.get("scale"), (int, float))
        and q["scale"] > 0
        and isinstance(q.get("zero_point"), int)
    ):
        problems.append(f"{where}.quantization must be {{'scale': >0, 'zero_point': int}} or null, got {q!r}")
    return problems


def manifest_problems(manifest) -> list:
    """Everything wrong with a manifest dict, as readable strings ([] when valid)."""
    if not isinstance(manifest, dict):
        return ["manifest must be a JSON object"]
    if manifest.get("schema") != MANIFEST_SCHEMA:
        return [f"schema is {manifest.get('schema')!r}; this run.py reads {MANIFEST_SCHEMA!r}"]
    problems = []
    model = manifest.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("file"), str):
        problems.append("model must be an object with a 'file' string")
    elif model.get("runtime") not in MODEL_RUNTIMES:
        problems.append(f"model.runtime is {model.get('runtime')!r}; allowed: {list(MODEL_RUNTIMES)}")
    elif not model["file"].endswith(MODEL_RUNTIMES[model["runtime"]]):
        problems.append(
            f"model.file {model['file']!r} does not end in "
            f"{MODEL_RUNTIMES[model['runtime']]} for runtime {model['runtime']!r}"
        )
    if isinstance(model, dict) and model.get("runtime") == "onnxruntime":
        if model.get("execution_provider", "CPUExecutionProvider") not in EXECUTION_PROVIDERS:
            problems.append(
                f"model.execution_provider is {model.get('execution_provider')!r}; "
                f"allowed: {list(EXECUTION_PROVIDERS)}"
            )
        if model.get("provider_fallback", "none") not in PROVIDER_FALLBACKS:
            problems.append(
                f"model.provider_fallback is {model.get('provider_fallback')!r}; "
                f"allowed: {list(PROVIDER_FALLBACKS)}"
            )
    problems += _tensor_problems("input", manifest.get("input"))
    problems += _tensor_problems("output", manifest.get("output"))
    inp = manifest.get("input") if isinstance(manifest.get("input"), dict) else {}
    if inp.get("layout") not in LAYOUTS:
        problems.append(f"input.layout is {inp.get('layout')!r}; allowed: {list(LAYOUTS)}")
    out = manifest.get("output") if isinstance(manifest.get("output"), dict) else {}
    if out.get("kind", "logits") not in OUTPUT_KINDS:
        problems.append(f"output.kind is {out.get('kind')!r}; allowed: {list(OUTPUT_KINDS)}")
    names = manifest.get("class_names")
    if not (isinstance(names, list) and len(names) >= 2 and all(isinstance(n, str) for n in names)):
        problems.append(f"class_names must list at least two class names, got {names!r}")
    try:
        pre = Preprocess.from_dict(manifest.get("preprocess") or {})
    except (TypeError, ValueError) as e:
        problems.append(f"preprocess: {e}")
        pre = None
    shape = inp.get("shape")
    if pre is not None and isinstance(shape, list) and len(shape) == 4 and inp.get("layout") in LAYOUTS:
        nchw = inp["layout"] == "NCHW"
        c, h, w = (shape[1], shape[2], shape[3]) if nchw else (shape[3], shape[1], shape[2])
        if (c, h, w) != (pre.channels, pre.size, pre.size):
            problems.append(
                f"input.shape {shape} ({inp['layout']}) does not match preprocess "
                f"size {pre.size} and channels {pre.channels}"
            )
    elif isinstance(shape, list) and len(shape) != 4:
        problems.append(f"input.shape {shape} must have 4 dimensions")
    if (
        isinstance(names, list)
        and isinstance(out.get("shape"), list)
        and out["shape"]
        and out["shape"][-1] != len(names)
    ):
        problems.append(f"output.shape {out['shape']} does not have one value per class {names}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        problems.append("files must map every file of the artifact to {'sha256', 'bytes'}")
    else:
        for name, info in files.items():
            if not (
                isinstance(info, dict)
                and isinstance(info.get("sha256"), str)
                and len(info["sha256"]) == 64
                and isinstance(info.get("bytes"), int)
            ):
                problems.append(f"files[{name!r}] must be {{'sha256': 64 hex chars, 'bytes': int}}")
            if not safe_relpath(name):
                problems.append(f"files key {name!r} must be a relative path inside the artifact")
        if isinstance(model, dict) and model.get("file") not in files:
            problems.append(f"model.file {model.get('file')!r} is not listed in files")
    return problems


def safe_relpath(name: str) -> bool:
    p = PurePosixPath(name)
    return bool(name) and not p.is_absolute() and ".." not in p.parts and "\\" not in name


def read_manifest(folder) -> dict:
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise EdgeXrayError(
            f"{str(path)!r} not found; run.py must sit in an artifact folder next "
            "to its manifest.json (rebuild the artifact with `edgexray build`)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise IntegrityError(f"{str(path)!r} is not valid JSON ({e}); the artifact is damaged") from None
    problems = manifest_problems(manifest)
    if problems:
        raise EdgeXrayError(
            f"{str(path)!r} is not a valid {MANIFEST_SCHEMA} manifest: " + "; ".join(problems)
        )
    return manifest
