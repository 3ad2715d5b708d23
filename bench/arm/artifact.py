"""The artifact under verification: its manifest and target, and its run.py run on one side
(host or guest) through run.py's command line."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from edgexray.bench.arm.guest import DEFAULT_CPU, GUEST_TIMEOUT_S
from edgexray.bench.arm.host import run_command
from edgexray.fsutil import sha256_file
from edgexray.runtime.errors import EdgeXrayError
from edgexray.runtime.registry import manifest_runtimes, runtime_for_manifest


class RunFailed(Exception):
    """run.py itself failed (a verification failure, not a host problem)."""


def read_manifest(artifact_dir: Path) -> dict:
    """The artifact's manifest.json, after checking that it is an artifact with a run.py."""
    path = artifact_dir / "manifest.json"
    if not path.is_file():
        raise EdgeXrayError(
            f"{artifact_dir} is not an edgexray artifact: it has no manifest.json; "
            "pass the folder that `edgexray build` wrote"
        )
    if not (artifact_dir / "run.py").is_file():
        raise EdgeXrayError(f"artifact {artifact_dir} has no run.py; rebuild it with edgexray build")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise EdgeXrayError(f"{path} is not valid JSON ({e}); rebuild the artifact") from None


def artifact_target(manifest: dict) -> dict:
    """{"arch", "cpu", "cores", "runtime", "version", "model"} of the artifact's target device."""
    profile = manifest.get("profile") or {}
    model = manifest.get("model") or {}
    runtime = model.get("runtime") or profile.get("runtime")
    info = runtime_for_manifest(runtime) if runtime in manifest_runtimes() else None
    package, pinned = (info.package, info.version) if info else (None, None)
    # the version the device gets is the one in the profile's install line
    match = (
        re.search(rf"{re.escape(package)}==([\w.]+)", str(profile.get("install", ""))) if package else None
    )
    return {
        "arch": profile.get("arch") or manifest.get("arch") or "aarch64",
        "cpu": profile.get("cpu_core") or DEFAULT_CPU,
        "cores": int(profile.get("cores") or 4),
        "runtime": runtime,
        "device_runtime": profile.get("runtime") or runtime,
        "version": match.group(1) if match else pinned,
        "model": model.get("file"),
    }


def model_sha(artifact_dir: Path, target: dict) -> str | None:
    """sha256 of the artifact's model file (None: no such file)."""
    path = artifact_dir / str(target["model"])
    return sha256_file(path) if target["model"] and path.is_file() else None


def run_artifact(
    cmd_prefix: list[str], artifact_dir: Path, images: list[Path], work: Path, env: dict | None, side: str
) -> tuple[dict, list, float]:
    """run.py ops, then run.py predict on `images`: (ops JSON, predictions, predict seconds)."""
    run_py = str(artifact_dir / "run.py")
    try:
        return _run_artifact(run_py, cmd_prefix, artifact_dir, images, work, env, side)
    except EdgeXrayError as e:
        raise RunFailed(str(e)) from None


def _run_artifact(run_py, cmd_prefix, artifact_dir, images, work, env, side):
    ops = run_command(
        [*cmd_prefix, run_py, "ops"],
        env=env,
        cwd=artifact_dir,
        timeout=GUEST_TIMEOUT_S,
        what=f"run.py ops on the {side}",
    )
    out = work / f"predict-{side}.json"
    t0 = time.monotonic()
    run_command(
        [*cmd_prefix, run_py, "predict", *map(str, images), "--format", "json", "--raw", "--out", str(out)],
        env=env,
        cwd=artifact_dir,
        timeout=GUEST_TIMEOUT_S,
        what=f"run.py predict on the {side}",
    )
    seconds = time.monotonic() - t0
    try:
        return json.loads(ops.stdout), _predictions(json.loads(out.read_text())), seconds
    except (ValueError, OSError, KeyError, TypeError) as e:
        raise EdgeXrayError(
            f"run.py on the {side} did not write the JSON its contract promises "
            f"({e}); docs/ARCHITECTURE.md 'Artifact run.py command line'"
        ) from None


# The model input run.py makes of each image (decoded, pre-processed, quantized), as sha256 per
# file name: equal on both sides means any output difference comes from the kernels alone.
INPUT_PROBE = """
import hashlib, importlib.util, json, sys
spec = importlib.util.spec_from_file_location("edgexray_run_py", sys.argv[1])
run = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = run
spec.loader.exec_module(run)
folder = run.Path(sys.argv[1]).resolve().parent
manifest = run.checked_manifest(folder)
runner, pre = run.load_model(folder, manifest, 1), run._preprocess(manifest)
print(json.dumps({run.Path(p).name: hashlib.sha256(run.np.ascontiguousarray(
    runner.prepare(run.load_batch([p], pre))).tobytes()).hexdigest() for p in sys.argv[2:]}))
"""


def input_digests(cmd_prefix: list[str], artifact_dir: Path, images: list[Path], env, side: str) -> dict:
    """{image file name: sha256 of the input tensor run.py feeds the model}."""
    proc = run_command(
        [*cmd_prefix, "-c", INPUT_PROBE, str(artifact_dir / "run.py"), *map(str, images)],
        env=env,
        cwd=artifact_dir,
        timeout=GUEST_TIMEOUT_S,
        what=f"run.py's pre-processing on the {side}",
    )
    return json.loads(proc.stdout)


def _predictions(doc: dict) -> list[dict]:
    """run.py's predictions JSON -> [{"image": file name, "label", "raw"}] in input order."""
    return [
        {"image": Path(p["image"]).name, "label": p["label"], "raw": p["raw"]} for p in doc["predictions"]
    ]
