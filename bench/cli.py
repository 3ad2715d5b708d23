"""`edgexray bench` and `edgexray compare`."""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import click

from edgexray.cliparams import ssh_client_options
from edgexray.fsutil import refuse_existing
from edgexray.runtime.errors import EdgeXrayError

log = logging.getLogger(__name__)

_positive = click.IntRange(min=1)
_seconds = click.FloatRange(min=0.0, min_open=True)


@dataclass(frozen=True)
class BenchRequest:
    """`edgexray bench`'s options as click parsed them."""

    target: Path  # artifact folder, its .zip, or a model file
    data: Path | None  # evaluation images (adds accuracy)
    test_data: Path | None  # an external folder of other patients (adds the "external" block)
    runtime: str | None  # run a model file (or an artifact's model) with this runtime
    seconds: float | None
    runs: int | None
    threads: int | None
    limit: int | None  # evaluation images per class at most
    no_memory: bool
    timeout: float
    remotes: tuple  # ssh:// URLs (--remote, repeatable)
    hosts_file: Path | None  # one ssh:// URL per line
    parallel: int  # fleet: devices measured at once
    remote_python: str
    identity: str | None
    ssh_options: tuple  # KEY=VALUE
    connect_timeout: int
    out: Path | None
    force: bool


def _emit(doc: dict, out, force: bool) -> None:
    """Reports into `out` and the table on stdout; without --out the JSON on stdout."""
    from edgexray.bench.results import markdown_table, write_results

    if out:
        from edgexray.bench.external import table_lines

        written = write_results(doc, out, force=force)
        click.echo(markdown_table(doc), nl=False)
        for line in table_lines(doc.get("external")):
            click.echo(line)
        click.echo(f"wrote {', '.join(sorted(written))} to {out}", err=True)
    else:
        click.echo(json.dumps(doc, indent=2))


@click.command("bench")
@click.argument("target", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--data",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Evaluation images, one subfolder per class (adds accuracy).",
)
@click.option(
    "--test-data",
    type=click.Path(path_type=Path),
    default=None,
    help="An external folder of other patients (same class folders): the model's figures on it with "
    "95% intervals (over patients when file names carry a patient key) and its overlap with --data.",
)
@click.option(
    "--runtime",
    default=None,
    help="Host runner for the model instead of the artifact's "
    "run.py: torch-cpu, torch-cuda, onnxruntime-cpu, onnxruntime-cuda, "
    "onnxruntime-tensorrt, litert.",
)
@click.option(
    "--seconds", type=_seconds, default=5.0, show_default=True, help="Time budget for the timed runs."
)
@click.option("--runs", type=_positive, default=None, help="A fixed number of timed runs instead.")
@click.option(
    "--threads",
    type=_positive,
    default=None,
    help="Inference threads (default: the artifact's, else all cores).",
)
@click.option("--limit", type=_positive, default=None, help="At most this many images per class.")
@click.option("--no-memory", is_flag=True, help="Skip the fresh-process memory measurement.")
@click.option(
    "--timeout",
    type=_seconds,
    default=1800,
    show_default=True,
    help="Seconds the artifact's run.py bench (and each copy with --remote) may take.",
)
@click.option(
    "--remote",
    "remotes",
    multiple=True,
    metavar="ssh://user@host[:port]",
    help="Run the artifact's run.py on this device over SSH; repeat it for a fleet "
    "(the devices run in parallel, one row each).",
)
@click.option(
    "--hosts",
    "hosts_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A file of ssh URLs, one per line ('#' comments): a fleet bench.",
)
@click.option(
    "--parallel",
    type=click.IntRange(1, 16),
    default=4,
    show_default=True,
    help="At most this many devices at a time in a fleet bench.",
)
@ssh_client_options
@click.option(
    "--connect-timeout",
    type=_positive,
    default=10,
    show_default=True,
    help="Seconds to wait for the SSH connection.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder for results.json, results.md, plots and report.html (default: the JSON on stdout).",
)
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
def bench(**options):
    """Latency, memory and accuracy of an artifact (folder or .zip) or a model file.

    \b
    edgexray bench artifacts/rpi4-resnet18_cbam-int8 --data xrays/test --out bench/
    edgexray bench artifacts/rpi4-... --data xrays/test --test-data other-site/ --out bench/
    edgexray bench artifacts/rpi4-resnet18_cbam-int8.zip
    edgexray bench artifacts/rpi4-... --remote ssh://pi@raspberrypi.local
    edgexray bench model.onnx --runtime onnxruntime-cuda

    edgexray bench artifacts/rpi4-... --hosts hosts.txt --out fleet/

    An artifact's integrity is checked first: exit 3 when a file or manifest field changed.
    A fleet bench (several --remote, or --hosts) writes one row per device, failed ones with
    their error: exit 0 when every device was measured, 4 when some failed (the table and
    reports are written either way).
    """
    from edgexray.bench.fleet import hosts2urls

    req = BenchRequest(**options)
    remotes = list(req.remotes) + (hosts2urls(req.hosts_file) if req.hosts_file else [])
    fleet = len(remotes) > 1 or req.hosts_file is not None
    target = req.target
    with contextlib.ExitStack() as stack:
        if target.is_file() and zipfile.is_zipfile(target):
            from edgexray.bench.local import unzip_artifact

            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="edgexray-bench-zip-"))
            target = unzip_artifact(target, tmp)
        _bench(req, target, remotes, fleet)


def _bench(req: BenchRequest, target: Path, remotes: list, fleet: bool) -> None:
    """target: the artifact folder (a .zip already unpacked) or model file; remotes: ssh URLs."""
    from edgexray.bench import local
    from edgexray.bench.runtimes import runtime_for_suffix

    if req.out:
        refuse_existing(req.out, req.force, "bench output folder")
    if local.is_artifact(target):
        from edgexray.runtime.integrity import checked_manifest

        checked_manifest(target)  # IntegrityError (exit 3) before anything runs
    elif target.is_file() and not req.runtime and runtime_for_suffix(target.suffix) is None:
        raise EdgeXrayError(
            f"cannot tell how to run {str(target)!r}: pass an artifact folder or "
            "its .zip, a model file (.pt, .onnx, .tflite), or --runtime"
        )
    external = None
    if req.test_data is not None:  # scored before timing: a class mismatch stops the bench at once
        from edgexray.bench.external import bench_external

        external = bench_external(target, req.test_data, req.data, req.runtime, req.threads, bool(remotes))
    options = dict(
        seconds=req.seconds, runs=req.runs, threads=req.threads, limit=req.limit, memory=not req.no_memory
    )
    if remotes:
        from edgexray.bench.remote import parse_ssh_url, remote_bench

        if req.runtime:
            raise EdgeXrayError(
                "--runtime cannot be combined with --remote: the device runs the "
                "artifact's own run.py with the runtime its manifest names"
            )
        for option in req.ssh_options:
            if "=" not in option:
                raise EdgeXrayError(
                    f"--ssh-option {option!r} must be KEY=VALUE, e.g. StrictHostKeyChecking=accept-new"
                )
        urls = [
            parse_ssh_url(
                r, identity=req.identity, options=tuple(req.ssh_options), connect_timeout=req.connect_timeout
            )
            for r in remotes
        ]
        if fleet:
            from edgexray.bench.fleet import failed_hosts, fleet_bench

            if not local.is_artifact(target):
                raise EdgeXrayError(
                    f"{str(target)!r} is not an artifact folder; a fleet bench "
                    "runs the folder `edgexray build` wrote"
                )
            doc = fleet_bench(
                target,
                urls,
                max_parallel=req.parallel,
                data=req.data,
                remote_python=req.remote_python,
                timeout=req.timeout,
                **options,
            )
            _emit(_with_external(doc, external), req.out, req.force)
            failed = failed_hosts(doc)
            if failed:
                from edgexray.runtime.errors import CheckFailed

                raise CheckFailed(
                    f"{len(failed)} of {len(urls)} hosts failed ({', '.join(failed)}); "
                    "their rows give the reason, the other hosts were measured"
                )
            return
        doc = remote_bench(
            target, urls[0], data=req.data, remote_python=req.remote_python, timeout=req.timeout, **options
        )
    elif local.is_artifact(target) and not req.runtime:
        doc = local.bench_artifact(target, data=req.data, timeout=req.timeout, **options)
    elif local.is_artifact(target):
        doc = local.single_document(local.bench_artifact_with(target, req.runtime, data=req.data, **options))
    elif target.is_file():
        doc = local.single_document(local.bench_model(target, req.runtime, data=req.data, **options))
    else:
        raise EdgeXrayError(
            f"{str(target)!r} is neither an artifact folder (with manifest.json) "
            "nor a model file (.pt, .onnx, .tflite)"
        )
    _emit(_with_external(doc, external), req.out, req.force)


def _with_external(doc: dict, external: dict | None) -> dict:
    return doc if external is None else {**doc, "external": external}


def _int8_calibration(ckpt, calib, calib_count: int):
    """calib() -> the images that calibrate the ONNX Runtime INT8 baseline (read only when that
    file is not given): --calib, else the train split the checkpoint records."""
    from edgexray.export.calibration import CalibrationSet, recorded_data, train_calibration

    def images():
        if calib is not None:
            return CalibrationSet.from_folder(calib, ckpt.preprocess, count=calib_count)
        need = (
            "making the ONNX Runtime INT8 baseline needs calibration images: pass --calib "
            "TRAIN_DIR (one subfolder per class), or an existing file with --int8-onnx"
        )
        return train_calibration(recorded_data(ckpt, need), ckpt.preprocess, calib_count)

    return images


def _baseline_validation(ckpt, int8_path) -> tuple:
    """(inputs, labels) of the val split the checkpoint records, on which the ONNX Runtime INT8
    baseline's scheme is chosen; (None, None) when the file is given or there is no val split
    (the baseline then uses the scheme accurate on every CPU)."""
    from edgexray.export.calibration import recorded_data, records_data

    if int8_path is not None or not records_data(ckpt):
        return None, None
    data = recorded_data(ckpt, "choosing the INT8 baseline's scheme needs the val split")
    if len(data.labels["val"]) == 0:
        return None, None
    return ckpt.preprocess.normalize(data.arrays["val"]), data.labels["val"]


@click.command("compare")
@click.option(
    "--baseline",
    "baseline_ckpt",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The unpruned checkpoint (.pt) — the reference of every ratio.",
)
@click.option(
    "--artifact",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The shipped artifact folder.",
)
@click.option(
    "--pruned",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The pruned, fine-tuned checkpoint (.pt).",
)
@click.option(
    "--onnx",
    "onnx_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Unpruned FP32 ONNX (default: exported from --baseline).",
)
@click.option(
    "--int8-onnx",
    "int8_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Unpruned ONNX Runtime INT8 (default: quantized with --calib).",
)
@click.option(
    "--calib",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Training images for the ONNX Runtime INT8 calibration (default: the train "
    "split of the data folder --baseline records).",
)
@click.option("--calib-count", type=_positive, default=100, show_default=True)
@click.option(
    "--data",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Held-out evaluation images, one subfolder per class (adds accuracy).",
)
@click.option("--limit", type=_positive, default=None, help="At most this many images per class.")
@click.option(
    "--seconds",
    type=_seconds,
    default=10.0,
    show_default=True,
    help="Timed budget per model, spread over the rounds.",
)
@click.option("--rounds", type=_positive, default=5, show_default=True)
@click.option("--threads", type=_positive, default=None, help="Threads for every model.")
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda"]),
    default="cpu",
    show_default=True,
    help="Where the PyTorch and ONNX baselines run (the artifact runs as shipped).",
)
@click.option("--no-memory", is_flag=True, help="Skip the fresh-process memory measurement.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder for results.json, results.md, plots and report.html.",
)
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
def compare(
    baseline_ckpt,
    artifact,
    pruned,
    onnx_path,
    int8_path,
    calib,
    calib_count,
    data,
    limit,
    seconds,
    rounds,
    threads,
    device,
    no_memory,
    out,
    force,
):
    """The shipped artifact against what a user would run without edgexray.

    \b
    Measured in one run, interleaved: unpruned FP32 PyTorch (the baseline), unpruned FP32
    ONNX Runtime, unpruned INT8 ONNX Runtime, pruned FP32 PyTorch, the artifact.
    """
    from edgexray.bench.compare import compare_models
    from edgexray.bench.compare_set import artifact_contender, compare_set
    from edgexray.checkpoint import load_checkpoint
    from edgexray.export.baselines import unpruned_onnx

    if out:
        refuse_existing(out, force, "compare output folder")
    with tempfile.TemporaryDirectory(prefix="edgexray-compare-") as tmp:
        ckpt = load_checkpoint(baseline_ckpt)
        val_x, val_y = _baseline_validation(ckpt, int8_path)
        baselines = unpruned_onnx(
            ckpt,
            Path(tmp),
            _int8_calibration(ckpt, calib, calib_count),
            onnx_path,
            int8_path,
            val_inputs=val_x,
            val_labels=val_y,
        )
        if baselines.int8_scheme:
            how = "chosen on the val split" if baselines.scheme_choice else "no val split to choose on"
            click.echo(f"unpruned ONNX Runtime INT8: scheme {baselines.int8_scheme} ({how})", err=True)
        models = compare_set(ckpt, baselines, artifact_contender(artifact), pruned=pruned, device=device)
        doc = compare_models(
            models.timed_entries(),
            data,
            seconds=seconds,
            rounds=rounds,
            threads=threads,
            limit=limit,
            memory=not no_memory,
        )
    doc["unpruned_ort_int8_scheme"] = baselines.int8_scheme  # None: --int8-onnx was given
    doc["unpruned_ort_int8_scheme_choice"] = baselines.scheme_choice
    _emit(doc, out, force)
