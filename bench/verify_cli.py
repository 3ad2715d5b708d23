"""`edgexray verify ARTIFACT`: run the artifact on emulated ARM and compare it with this host."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgexray.bench.arm import CORES, EMULATED_NOTE, FLOAT_TOLERANCE, verify_artifact
from edgexray.fsutil import atomic_write_json
from edgexray.runtime.errors import CheckFailed

# later results go here: manifest.json stays as sealed at build time (docs/ARCHITECTURE.md)
RESULT_FILE = "arm_verification.json"


@click.command()
@click.argument("artifact", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--cpu",
    type=click.Choice(sorted(CORES)),
    default=None,
    help="Core to emulate. Default: the artifact's target profile (rpi4: cortex-a72).",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where the arm64 userland and wheels are cached. "
    "Default: ~/.cache/edgexray/arm64 (XDG_CACHE_HOME honoured).",
)
@click.option(
    "--tolerance",
    type=click.FloatRange(min=0),
    default=FLOAT_TOLERANCE,
    show_default=True,
    help="Max abs output difference for float models (int8 outputs: identical, or at most "
    "2 quantization steps apart with identical labels: kernel rounding).",
)
@click.option("--no-write", is_flag=True, help=f"Do not store the result in ARTIFACT/{RESULT_FILE}.")
def verify(artifact, cpu, cache_dir, tolerance, no_write):
    """Run ARTIFACT's run.py on the aarch64 instruction set under QEMU and compare with this host.

    \b
    Checks that the guest really is aarch64 with the target's core, that the op lists match
    with the XNNPACK delegate applied on both sides, that outputs are identical (int8; x86 and
    NEON kernels may round differently: up to 2 quantization steps with identical labels pass
    and are reported as kernel rounding) or within --tolerance (float), that the labels
    match, and that the outputs still equal those
    of the artifact's first passing verification (at build time): a model file swapped later
    is caught. The first run prepares an arm64 Debian userland and the runtime's aarch64
    wheels (needs root and the network once, about 350 MB); later runs reuse the cache.
    The artifact's integrity is checked first (exit 3 when a file or manifest field was
    changed). The result goes into ARTIFACT/arm_verification.json; manifest.json keeps the
    sealed build-time result. Emulated timings are not device speed. Exit status 4 when a
    check fails.
    """
    from edgexray.runtime.integrity import checked_manifest

    if (Path(artifact) / "manifest.json").is_file():  # else verify_artifact says what is missing
        checked_manifest(artifact)  # IntegrityError (exit 3): never verify a changed artifact
    result = verify_artifact(artifact, cpu=cpu, write=False, cache_dir=cache_dir, tolerance=tolerance)
    if not no_write:
        atomic_write_json(Path(artifact) / RESULT_FILE, result)
    click.echo(json.dumps(result, indent=2))
    for name, check in result["checks"].items():
        click.echo(f"  {'ok  ' if check['passed'] else 'FAIL'} {name}: {check['detail']}", err=True)
    seconds = (result.get("emulated_seconds") or {}).get("guest_predict")
    if seconds is not None:
        click.echo(f"  guest predict took {seconds} s ({EMULATED_NOTE})", err=True)
    summary = f"ARM verification {result['status']} on emulated {result['cpu']}: {result['reason']}"
    if result["status"] == "failed":
        raise CheckFailed(summary)
    click.echo(summary, err=True)
