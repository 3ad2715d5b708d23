"""The entry points: can this host verify (`arm_verification_available`), and verify an artifact
on emulated aarch64 against this host (`verify_artifact`)."""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path

from edgexray.bench.arm.artifact import RunFailed, artifact_target, input_digests, read_manifest, run_artifact
from edgexray.bench.arm.cache import ArmCache
from edgexray.bench.arm.comparison import FLOAT_TOLERANCE, check, compare_reference, compare_sides
from edgexray.bench.arm.guest import (
    CORES,
    GUEST_PROBE,
    GUEST_TIMEOUT_S,
    Guest,
    check_cpu,
    guest_machine,
    qemu_version,
)
from edgexray.bench.arm.host import check_host, host_version, run_command, utc_now
from edgexray.bench.arm.inputs import INPUT_SEED, real_inputs, synthetic_images
from edgexray.fsutil import atomic_write_json
from edgexray.runtime.errors import EdgeXrayError
from edgexray.runtime.registry import manifest_runtimes, runtime_for_manifest

log = logging.getLogger(__name__)

EMULATED_NOTE = "emulated, not device speed"


def arm_verification_available(
    runtime: str = "litert", version: str | None = None, cache_dir: str | os.PathLike | None = None
) -> tuple[bool, str]:
    """(True, "") when this host can verify, else (False, why). Cheap: starts no emulation."""
    try:
        if not version and runtime in manifest_runtimes():
            version = runtime_for_manifest(runtime).version
        check_host(runtime, version or "", ArmCache(cache_dir))
    except EdgeXrayError as e:
        return False, str(e)
    except OSError as e:  # e.g. a cache folder this user may not read
        return False, f"ARM verification cannot use its cache: {e}"
    return True, ""


def verify_artifact(
    artifact_dir: str | os.PathLike,
    cpu: str | None = None,
    write: bool = True,
    cache_dir: str | os.PathLike | None = None,
    tolerance: float = FLOAT_TOLERANCE,
    on_unavailable: str = "raise",
    real_images=(),
) -> dict:
    """Run the artifact's run.py on this host and on emulated aarch64 and compare.

    Checks: the guest is aarch64 and sees the target core; the op lists are equal and (LiteRT)
    the XNNPACK delegate is applied on both sides; raw outputs are identical (integer outputs),
    or differ by kernel rounding only (at most KERNEL_ROUNDING_STEPS quantization steps with
    every label equal), or are within `tolerance` (float); labels are equal; and both sides
    agree with the reference
    outputs recorded in the manifest by the first passing verification (a model swapped
    afterwards is caught even when its checksum was updated). With write=True the result is
    stored in manifest.json under "arm_verification" (the first pass also stores
    "arm_reference"). A host that cannot verify raises EdgeXrayError, or with
    on_unavailable="skip" gives a "skipped" result saying why; a run.py that fails on either
    side gives "failed". Nothing is reported as passed that did not run.

    `real_images`: paths of real images (e.g. held-out ones at build time), run and compared
    besides the synthetic ones so that rounding is judged on what the model really sees; they
    are never copied into the manifest, whose reference holds the synthetic inputs only.
    """
    if on_unavailable not in ("raise", "skip"):
        raise EdgeXrayError(f"on_unavailable={on_unavailable!r}; allowed: 'raise', 'skip'")
    artifact_dir = Path(artifact_dir).resolve()  # run.py runs with the artifact as its cwd
    manifest = read_manifest(artifact_dir)
    target = artifact_target(manifest)
    cpu = cpu or target["cpu"]
    if cpu in CORES or target["arch"] == "aarch64":
        check_cpu(cpu)  # a mistyped --cpu is an error even for a non-ARM artifact
    result = {
        "status": "skipped",
        "reason": "",
        "cpu": cpu,
        "midr_part": f"0x{CORES[cpu][0]:03x}" if cpu in CORES else None,
        "guest_machine": None,
        "runtime": {"name": target["runtime"], "version": target["version"]},
        "checks": {},
        "max_abs_diff": None,
        "tolerance": tolerance,
        "checked_at": utc_now(),
    }
    if target["arch"] != "aarch64":
        result["reason"] = f"the target is {target['arch']}, not ARM: nothing to emulate"
        return _finish(artifact_dir, manifest, result, write)
    if target["device_runtime"] not in manifest_runtimes():
        result["reason"] = (
            f"the target runs the model with {target['device_runtime']}, which CPU "
            f"emulation cannot check (it checks {', '.join(manifest_runtimes())})"
        )
        return _finish(artifact_dir, manifest, result, write)
    checks = result["checks"]
    with tempfile.TemporaryDirectory(prefix="edgexray-verify-") as tmp:
        work = Path(tmp)
        (work / "images").mkdir()
        images = synthetic_images(work / "images")
        result["inputs"] = {"kind": "synthetic", "count": len(images), "seed": INPUT_SEED}
        images += real_inputs(real_images, work / "images")
        result["real_images"] = len(images) - result["inputs"]["count"]
        try:
            with guest_machine(
                target["runtime"], target["version"], cpu, cache_dir, target["cores"]
            ) as guest:
                sides = _run_both(guest, artifact_dir, images, work, result)
        except EdgeXrayError as e:
            if on_unavailable == "raise":
                raise
            result["reason"] = f"this host cannot run ARM verification: {e}"
            return _finish(artifact_dir, manifest, result, write)
    if sides is not None:
        compare_sides(sides, target, tolerance, result)
        compare_reference(sides["host"][1], artifact_dir, manifest, target, tolerance, result, write)
    failed = [name for name, c in checks.items() if not c["passed"]]
    result["status"] = "failed" if failed else "passed"
    stand_in = result.get("qemu_cpu") not in (None, cpu)
    result["reason"] = (
        "; ".join(f"{n}: {checks[n]['detail']}" for n in failed)
        if failed
        else f"run.py gives the same results on emulated {cpu} (aarch64"
        + (f", QEMU model {result['qemu_cpu']}" if stand_in else "")
        + ") as on this host"
        + (f" ({checks['outputs_match']['detail']})" if result.get("kernel_rounding") else "")
    )
    return _finish(artifact_dir, manifest, result, write)


def _run_both(guest: Guest, artifact_dir: Path, images: list[Path], work: Path, result: dict):
    """Probe the guest, run run.py on both sides: {"host"|"guest": (ops, predictions)} or None
    when run.py failed somewhere (recorded as a failed check)."""
    package = runtime_for_manifest(result["runtime"]["name"]).package
    result["qemu"] = qemu_version(guest.qemu)
    result["qemu_cpu"] = guest.cpu
    probe = run_command(
        guest.command(["-c", GUEST_PROBE, package]),
        env=guest.env(),
        timeout=GUEST_TIMEOUT_S,
        what="the aarch64 guest's python3",
    )
    info = json.loads(probe.stdout)
    result["guest_machine"] = info["machine"]
    result["guest_python"] = info["python"]
    result["runtime"].update(host_version=host_version(package), guest_version=info["runtime"])
    result["numpy"] = {"host": host_version("numpy"), "guest": info["numpy"]}
    result["checks"]["guest_is_aarch64"] = check(
        info["machine"] == "aarch64" and info["cpu_part"] == result["midr_part"],
        f"guest platform.machine()={info['machine']!r}, /proc/cpuinfo CPU part {info['cpu_part']}",
    )
    sides = {}
    host_env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")  # nothing written into the artifact
    for side, prefix, env in (
        ("host", [sys.executable], host_env),
        ("guest", guest.command([]), guest.env()),
    ):
        log.info("running run.py on the %s%s", side, " (emulated, slow)" if side == "guest" else "")
        try:
            ops, preds, seconds = run_artifact(prefix, artifact_dir, images, work, env, side)
        except RunFailed as e:
            result["checks"][f"runs_on_{side}"] = check(False, str(e))
            return None
        result["checks"][f"runs_on_{side}"] = check(True, f"run.py ops and predict ran on the {side}")
        if side == "guest":
            result["emulated_seconds"] = {"guest_predict": round(seconds, 1), "note": EMULATED_NOTE}
        sides[side] = (ops, preds)
        try:
            result.setdefault("input_sha256", {})[side] = input_digests(
                prefix, artifact_dir, images, env, side
            )
        except (EdgeXrayError, ValueError) as e:
            result["checks"]["same_inputs"] = check(False, f"the input probe failed: {e}")
    return sides


def _finish(artifact_dir: Path, manifest: dict, result: dict, write: bool) -> dict:
    """The result, stored in manifest.json as "arm_verification" when `write`."""
    if write:
        manifest["arm_verification"] = result
        atomic_write_json(artifact_dir / "manifest.json", manifest)
    return result
