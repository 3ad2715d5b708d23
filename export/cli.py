"""`edgexray export`: checkpoint -> ONNX / TFLite files + parity.json."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from edgexray.runtime.errors import EdgeXrayError

# only what the option defaults and --help text need; the rest loads when the command runs
from .calibration import DEFAULT_COUNT
from .formats import FORMATS, PRECISIONS
from .parity import DEFAULT_MAX_ACCURACY_DROP
from .quantize_onnx import SCHEMES
from .tflite import DEFAULT_TIMEOUT_S

log = logging.getLogger(__name__)

DEFAULT_EVAL_N = 200  # parity images when neither --split nor --n is given


@click.command("export")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option(
    "--formats", default="onnx,tflite", show_default=True, help=f"Comma-separated: {', '.join(FORMATS)}."
)
@click.option(
    "--precisions",
    default="fp32,int8",
    show_default=True,
    help=f"Comma-separated: {', '.join(PRECISIONS)}; each is built for every format that supports it.",
)
@click.option(
    "--calib",
    type=click.Path(path_type=Path),
    help="Training images (one sub-folder per class) for INT8 calibration, needed for "
    "int8 and for tflite (default: the train split of the data folder the "
    "checkpoint records).",
)
@click.option(
    "--calib-count",
    default=DEFAULT_COUNT,
    show_default=True,
    type=click.IntRange(min=1),
    help="Calibration images, stratified by class (all, with a warning, when fewer).",
)
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    help="Images for the parity check (default: the test split of the data folder the "
    "checkpoint records, as `evaluate` uses; else the --calib folder minus the "
    "calibration images).",
)
@click.option(
    "--split",
    type=click.Choice(["train", "val", "test"]),
    help="Use this split of the splits file as parity images.",
)
@click.option(
    "--splits",
    "splits_path",
    type=click.Path(path_type=Path),
    help="splits.json for --split (default: next to the checkpoint).",
)
@click.option(
    "--n",
    "n_eval",
    type=int,
    help=f"Parity images sampled from --data (default {DEFAULT_EVAL_N} when no --split).",
)
@click.option(
    "--max-accuracy-drop",
    default=DEFAULT_MAX_ACCURACY_DROP,
    show_default=True,
    type=float,
    help="Percentage points a reduced-precision file may lose.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    help="Output folder (default: export/ next to the checkpoint).",
)
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@click.option("--opset", default=17, show_default=True, type=int, help="ONNX opset.")
@click.option("--dynamic-batch", is_flag=True, help="ONNX with a dynamic batch dimension.")
@click.option(
    "--onnx-scheme",
    type=click.Choice(["auto", *SCHEMES]),
    default="auto",
    show_default=True,
    help="ONNX INT8 types (activations+weights, -rr = 7-bit "
    "weights); auto measures every scheme on this CPU and keeps the fastest accurate one.",
)
@click.option(
    "--onnx-calib-method",
    type=click.Choice(["minmax", "entropy", "percentile"]),
    default="minmax",
    show_default=True,
    help="ONNX Runtime calibration method.",
)
@click.option(
    "--tflite-timeout",
    default=DEFAULT_TIMEOUT_S,
    show_default=True,
    type=float,
    help="Seconds the TFLite conversion may take.",
)
def export(
    checkpoint,
    formats,
    precisions,
    calib,
    calib_count,
    data,
    split,
    splits_path,
    n_eval,
    max_accuracy_drop,
    out_dir,
    force,
    opset,
    dynamic_batch,
    onnx_scheme,
    onnx_calib_method,
    tflite_timeout,
):
    """Export CHECKPOINT to ONNX / TFLite and check every file against the PyTorch model."""
    from edgexray.checkpoint import load_checkpoint
    from edgexray.fsutil import refuse_existing

    from .calibration import CalibrationSet, recorded_data, records_data, train_calibration
    from .exporter import export_model
    from .formats import export_plan

    plan = export_plan(formats, precisions)  # unknown names fail before anything heavy
    if split and n_eval:
        raise EdgeXrayError("--split and --n both given; choose one source of parity images")
    if max_accuracy_drop < 0:
        raise EdgeXrayError(
            f"--max-accuracy-drop {max_accuracy_drop}; must be >= 0 (percentage points, e.g. 1.0)"
        )
    out_dir = out_dir or Path(checkpoint).parent / "export"
    refuse_existing(out_dir, force, "export output folder", folder=True)
    ckpt = load_checkpoint(checkpoint)
    needs_calib = any(f == "tflite" or p == "int8" for f, p in plan)
    # without --data/--split, parity runs on the held-out split of the checkpoint's own data
    recorded_parity = data is None and not split and records_data(ckpt)
    # ONNX INT8 "auto" measures its scheme on the val split of the checkpoint's data, if any
    chooses = ("onnx", "int8") in plan and onnx_scheme == "auto"
    recorded = None
    if needs_calib and calib is None or recorded_parity or chooses and records_data(ckpt):
        recorded = recorded_data(
            ckpt,
            "int8 and tflite exports need --calib DIR (training "
            "images, one sub-folder per class), or export --formats onnx "
            "--precisions fp32",
        )
    calib_set = None
    if calib is not None:
        _check_folder(calib, "--calib")
        calib_set = CalibrationSet.from_folder(calib, ckpt.preprocess, count=calib_count)
    elif needs_calib:
        calib_set = train_calibration(recorded, ckpt.preprocess, calib_count)
    if recorded_parity:
        inputs, labels, source = _recorded_parity(ckpt, recorded, n_eval)
    else:
        inputs, labels, source = _parity_data(
            ckpt,
            data or calib,
            split,
            splits_path or Path(checkpoint).parent / "splits.json",
            n_eval,
            calib_set,
        )
    choice_inputs, choice_labels, choice_source = _choice_data(ckpt, recorded if chooses else None)
    result = export_model(
        ckpt.model,
        out_dir,
        class_names=ckpt.class_names,
        preprocess=ckpt.preprocess,
        eval_inputs=inputs,
        eval_labels=labels,
        formats=formats,
        precisions=precisions,
        calib=calib_set,
        max_accuracy_drop=max_accuracy_drop,
        opset=opset,
        dynamic_batch=dynamic_batch,
        onnx_calib_method=onnx_calib_method,
        onnx_scheme=onnx_scheme,
        tflite_timeout_s=tflite_timeout,
        metadata={"arch": ckpt.arch, "model_options": ckpt.model_options},
        info={
            "checkpoint": str(checkpoint),
            "arch": ckpt.arch,
            "parity_data": source,
            **({"choice_data": choice_source or source} if chooses else {}),
        },
        choice_inputs=choice_inputs,
        choice_labels=choice_labels,
        force=force,
    )
    _print_table(result.report)
    click.echo(f"wrote {result.out_dir}")
    if not result.passed:
        failed = [
            f"{e['file']}: {'; '.join(e['parity']['failures'])}"
            for e in result.report["files"]
            if not e["parity"]["passed"]
        ]
        raise EdgeXrayError(
            "parity check failed for "
            + " | ".join(failed)
            + f"; details in {result.out_dir / 'parity.json'}. Try more "
            "calibration images, per-channel quantization, or another precision"
        )


def _check_folder(path: Path, option: str) -> None:
    if not path.is_dir():
        what = "is a file" if path.exists() else "does not exist"
        raise EdgeXrayError(
            f"{option} {str(path)!r} {what}; expected a folder of images with one sub-folder per class"
        )


def _choice_data(ckpt, data):
    """(inputs, labels, description) of the val split of the checkpoint's data, where the
    quantization choices are made (as `edgexray build` makes them); Nones without one: the
    parity images then decide."""
    if data is None or len(data.labels["val"]) == 0:
        return None, None, None
    source = {
        "split": "val",
        "splits": str(data.splits_path) if data.splits_path else None,
        "root": str(data.index.root),
        "recorded_in_checkpoint": True,
    }
    return ckpt.preprocess.normalize(data.arrays["val"]), data.labels["val"], source


def _recorded_parity(ckpt, data, n_eval):
    """The test split of the checkpoint's data (`n_eval` of it, stratified, when given)."""
    from .calibration import stratified_sample

    gray, labels = data.arrays["test"], data.labels["test"]
    if n_eval is not None and not 1 <= n_eval <= len(labels):
        raise EdgeXrayError(
            f"--n {n_eval}: the test split of the checkpoint's data has "
            f"{len(labels)} images; use 1..{len(labels)}"
        )
    if len(labels) == 0:
        raise EdgeXrayError(
            "the test split of the checkpoint's data is empty; pass --data DIR with --n for the parity check"
        )
    if n_eval is not None:
        idx = stratified_sample(labels, n_eval, seed=1)
        gray, labels = gray[idx], labels[idx]
    source = {
        "split": "test",
        "splits": str(data.splits_path) if data.splits_path else None,
        "root": str(data.index.root),
        "recorded_in_checkpoint": True,
    }
    return ckpt.preprocess.normalize(gray), labels, source


def _parity_data(ckpt, root, split, splits_path, n_eval, calib_set):
    """(inputs NCHW float32, labels, description) of the images the files are checked on."""
    import numpy as np

    from edgexray.data import load_arrays, read_splits, scan_image_folder

    from .calibration import stratified_sample

    if split:
        stored = read_splits(splits_path)
        root = Path(root) if root else Path(stored.root)
        relpaths = stored.splits[split]
        if not relpaths:
            raise EdgeXrayError(
                f"split {split!r} in {str(splits_path)!r} is empty; choose another --split or use --n"
            )
        class_names = stored.class_names
        labels = np.asarray([class_names.index(p.split("/")[0]) for p in relpaths])
        source = {"split": split, "splits": str(splits_path), "root": str(root)}
    else:
        if root is None:
            raise EdgeXrayError(
                "no parity images: pass --data DIR (with --split or --n) or "
                "--calib DIR; the checkpoint does not record its data folder"
            )
        _check_folder(Path(root), "--data")
        index = scan_image_folder(root)
        class_names = index.class_names
        exclude = (
            set(calib_set.paths)
            if calib_set is not None and Path(calib_set.root).resolve() == Path(root).resolve()
            else set()
        )
        pool = [(p, label) for p, label in index.items if p not in exclude]
        n = min(DEFAULT_EVAL_N, len(pool)) if n_eval is None else n_eval
        if not pool:
            raise EdgeXrayError(
                f"{str(root)!r} has no images left for the parity check once the "
                f"{len(exclude)} calibration images are excluded; pass --data DIR "
                "(held-out images) or a smaller --calib-count"
            )
        if n < 1 or n > len(pool):
            raise EdgeXrayError(
                f"--n {n}: {str(root)!r} has {len(pool)} images available for the "
                f"parity check (calibration images excluded); use 1..{len(pool)}"
            )
        picked = stratified_sample([label for _, label in pool], n, seed=1)
        relpaths = [pool[i][0] for i in picked]
        labels = np.asarray([pool[i][1] for i in picked])
        source = {"sampled": n, "root": str(root), "calibration_images_excluded": bool(exclude)}
    if tuple(class_names) != tuple(ckpt.class_names):
        raise EdgeXrayError(
            f"parity images have classes {list(class_names)}, the checkpoint "
            f"{list(ckpt.class_names)}; use the data the model was trained on"
        )
    gray = load_arrays(root, relpaths, ckpt.preprocess.size)
    inputs = ckpt.preprocess.normalize(gray)
    return inputs, labels, source


def _print_table(report: dict) -> None:
    click.echo(
        f"{'file':<22} {'max|diff|':>10} {'agree':>7} {'acc ref':>8} {'acc':>8} {'drop pp':>8}  status"
    )
    for e in report["files"]:
        p = e["parity"]
        click.echo(
            f"{e['file']:<22} {p['max_abs_diff']:>10.2e} {p['top1_agreement']:>7.4f} "
            f"{p['reference']['accuracy']:>8.4f} {p['candidate']['accuracy']:>8.4f} "
            f"{p['accuracy_drop_pp']:>8.2f}  {'ok' if p['passed'] else 'FAILED'}"
        )
