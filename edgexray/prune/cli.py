"""`edgexray prune CKPT`: structured channel pruning of a trained checkpoint."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import click

from edgexray.runtime.errors import EdgeXrayError


def _ratios(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise EdgeXrayError(
            f"--stage-ratios {text!r}; expected 4 comma-separated fractions, e.g. 0.2,0.35,0.5,0.6"
        ) from None


@click.command()
@click.argument("checkpoint", type=click.Path())
@click.option(
    "--method",
    default="cbam",
    show_default=True,
    help="Criterion: cbam, se, l1, taylor, bnscale, random, synflow; or l1-unstructured "
    "(zeroes single weights: no MAC or latency gain on dense runtimes).",
)
@click.option(
    "--schedule",
    default="progressive",
    show_default=True,
    help="one-shot (--ratio everywhere), progressive (--stage-ratios), target, or "
    "sensitivity (progressive, stage ratios from a per-layer sensitivity run).",
)
@click.option(
    "--ratio",
    type=float,
    default=0.5,
    show_default=True,
    help="one-shot: fraction of channels removed per group.",
)
@click.option(
    "--stage-ratios",
    default="0.2,0.35,0.5,0.6",
    show_default=True,
    help="progressive: fraction removed in stages 1..4.",
)
@click.option("--target-macs", type=float, help="Remove this fraction of MACs (searched), e.g. 0.5.")
@click.option("--target-params", type=float, help="Remove this fraction of parameters (searched).")
@click.option(
    "--steps", type=int, default=1, show_default=True, help="Iterative steps, fine-tuning after each."
)
@click.option(
    "--rounds",
    type=int,
    default=1,
    show_default=True,
    help="l1-unstructured: rounds, each zeroing --ratio of the remaining weights, "
    "fine-tuned between (e.g. --rounds 4 --ratio 0.2).",
)
@click.option(
    "--finetune-epochs",
    type=int,
    default=0,
    show_default=True,
    help="Fine-tune epochs after each step (0 = none).",
)
@click.option("--finetune-lr", type=float, help="Fine-tune learning rate (default: the training one).")
@click.option(
    "--round-to",
    type=int,
    default=8,
    show_default=True,
    help="Kept channels are a multiple of this (1 = exact).",
)
@click.option(
    "--calib-images",
    type=int,
    default=64,
    show_default=True,
    help="Calibration images for cbam/se/taylor scores.",
)
@click.option(
    "--data",
    "data_dir",
    type=click.Path(),
    help="Image folder (default: the one recorded in the checkpoint).",
)
@click.option("--splits", type=click.Path(), help="splits.json (default: the checkpoint's).")
@click.option("--out", type=click.Path(), help="Output folder (default: next to CHECKPOINT).")
@click.option("--sensitivity", is_flag=True, help="Accuracy vs ratio per stage, with a plot.")
@click.option(
    "--per-layer", is_flag=True, help="--sensitivity: per channel group (layer) instead of per stage."
)
@click.option(
    "--sensitivity-drop",
    type=float,
    default=0.01,
    show_default=True,
    help="--schedule sensitivity: accuracy drop a stage's every layer may show alone.",
)
@click.option(
    "--compare",
    "compare_methods",
    help="Compare methods at the same target, e.g. cbam,l1,taylor,bnscale,random,synflow.",
)
@click.option(
    "--sensitivity-ratios",
    default="0.2,0.4,0.6,0.8",
    show_default=True,
    help="--sensitivity: fractions removed per stage.",
)
@click.option("--latency-runs", type=int, default=30, show_default=True)
@click.option(
    "--latency-threads",
    type=int,
    default=1,
    show_default=True,
    help="CPU threads for latency (1 is steadiest on a shared machine).",
)
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
def prune(
    checkpoint,
    method,
    schedule,
    ratio,
    stage_ratios,
    target_macs,
    target_params,
    steps,
    rounds,
    finetune_epochs,
    finetune_lr,
    round_to,
    calib_images,
    data_dir,
    splits,
    out,
    sensitivity,
    per_layer,
    sensitivity_drop,
    compare_methods,
    sensitivity_ratios,
    latency_runs,
    latency_threads,
    force,
):
    """Remove whole channels from CHECKPOINT so the network physically shrinks.

    \b
    edgexray prune runs/train/model.pt --method cbam --schedule progressive --finetune-epochs 3
    edgexray prune runs/train/model.pt --target-macs 0.7
    edgexray prune runs/train/model.pt --sensitivity
    edgexray prune runs/train/model.pt --compare cbam,l1,taylor,bnscale,random,synflow --target-macs 0.5
    """
    from edgexray.prune.prune import PruneConfig

    seeded = schedule == "sensitivity"
    if seeded:
        if sensitivity or compare_methods:
            raise EdgeXrayError("--schedule sensitivity prunes; run --sensitivity or --compare separately")
        if not 0 <= sensitivity_drop <= 1:
            raise EdgeXrayError(
                f"--sensitivity-drop {sensitivity_drop}; allowed: [0, 1], e.g. 0.01 for one accuracy point"
            )
        schedule = "progressive"
    if per_layer and not sensitivity:
        raise EdgeXrayError("--per-layer goes with --sensitivity (or use --schedule sensitivity)")
    if schedule == "progressive" and (target_macs is not None or target_params is not None):
        schedule = "target"  # a target scales the progressive stage profile
    cfg = PruneConfig(
        method=method,
        schedule=schedule,
        ratio=ratio,
        stage_ratios=_ratios(stage_ratios),
        target_macs=target_macs,
        target_params=target_params,
        steps=steps,
        rounds=rounds,
        finetune_epochs=finetune_epochs,
        round_to=round_to,
        calib_images=calib_images,
    )
    cfg.validate()
    if sensitivity and compare_methods:
        raise EdgeXrayError("--sensitivity and --compare are separate runs; pass one of them")
    default_name = "sensitivity" if sensitivity else "compare" if compare_methods else "pruned"
    out = Path(out) if out else Path(checkpoint).parent / default_name
    ratios = _ratios(sensitivity_ratios) if sensitivity or seeded else None
    if ratios and not all(0 < r < 1 for r in ratios):
        raise EdgeXrayError(f"--sensitivity-ratios {sensitivity_ratios!r}; each must be in (0, 1)")
    if sensitivity or compare_methods:
        _analysis(
            checkpoint,
            cfg,
            data_dir,
            splits,
            out,
            ratios,
            per_layer,
            compare_methods,
            finetune_lr,
            latency_runs,
            latency_threads,
            force,
        )
        return
    from edgexray.prune.stage import prune_checkpoint

    extra_report, extra_files = None, None
    if seeded:
        cfg, extra_report, extra_files = _seed_schedule(
            checkpoint, cfg, data_dir, splits, out, ratios, sensitivity_drop, force
        )
    res = prune_checkpoint(
        checkpoint,
        out,
        cfg,
        data_dir=data_dir,
        splits=splits,
        finetune_lr=finetune_lr,
        latency_runs=latency_runs,
        latency_threads=latency_threads,
        force=force,
        extra_report=extra_report,
        extra_files=extra_files,
    )
    r = res.report
    b, a = r["measured"]["before"], r["measured"]["after"]
    acc = r["accuracy"]
    if r["method"] == "l1-unstructured":
        click.echo(
            f"zeroed {100 * r['sparsity']:.1f}% of the weights of {r['arch']} "
            f"({r['schedule']}): weights zipped {r['before']['zipped_bytes']:,} -> "
            f"{r['after']['zipped_bytes']:,} bytes, as stored {r['before']['stored_bytes']:,} -> "
            f"{r['after']['stored_bytes']:,}, latency p50 {b['latency_ms']['p50']:.2f} -> "
            f"{a['latency_ms']['p50']:.2f} ms (dense: no speed-up expected)"
        )
    else:
        click.echo(
            f"pruned {r['arch']} with {r['method']}: params {b['params']:,} -> {a['params']:,} "
            f"(-{100 * r['reduction']['params']:.1f}%), MACs {b['macs']:,} -> {a['macs']:,} "
            f"(-{100 * r['reduction']['macs']:.1f}%), latency p50 {b['latency_ms']['p50']:.2f} -> "
            f"{a['latency_ms']['p50']:.2f} ms"
        )
    if acc.get("val_before"):
        ft = acc.get("val_finetuned")
        click.echo(
            f"val accuracy {100 * acc['val_before']['accuracy']:.2f}% -> pruned "
            f"{100 * acc['val_pruned']['accuracy']:.2f}%"
            + (f" -> fine-tuned {100 * ft['accuracy']:.2f}%" if ft else "")
        )
    click.echo(f"wrote {res.checkpoint} and {res.out_dir / 'prune_report.md'}")


def _seed_schedule(checkpoint, cfg, data_dir, splits, out, ratios, max_drop, force):
    """Per-layer sensitivity of the checkpoint, then the progressive schedule with the stage ratios
    it supports; returns the config and what joins the prune report (JSON, markdown, plot)."""
    import dataclasses
    import json

    import torch

    from edgexray.checkpoint import load_checkpoint
    from edgexray.fsutil import refuse_existing
    from edgexray.prune import report
    from edgexray.prune.sensitivity import layer_sensitivity, plot_layer_sensitivity, stage_ratios_from
    from edgexray.prune.stage import load_data

    refuse_existing(out, force, "prune output folder", folder=True)  # before the long analysis
    ckpt = load_checkpoint(checkpoint)
    data = load_data(ckpt, data_dir, splits, need="validation data for --schedule sensitivity")
    rep = layer_sensitivity(ckpt.model, torch.zeros(ckpt.input_shape), cfg, data, ratios, ckpt.arch)
    seeded = stage_ratios_from(rep, max_drop)
    rep.update(seeded_stage_ratios=list(seeded), max_drop=max_drop)
    if not any(seeded):
        raise EdgeXrayError(
            f"--schedule sensitivity: no stage tolerates even "
            f"{min(ratios):.0%} pruning with at most {max_drop:.1%} accuracy drop "
            f"(per-layer accuracies in the analysis); raise --sensitivity-drop or "
            "pass smaller --sensitivity-ratios"
        )
    cfg = dataclasses.replace(cfg, stage_ratios=seeded)
    cfg.validate()
    files = {
        "layer_sensitivity.json": json.dumps(rep, indent=2),
        "layer_sensitivity.md": report.layer_sensitivity_markdown(rep),
        "layer_sensitivity.png": plot_layer_sensitivity(rep, None),
    }
    return (
        cfg,
        {
            "sensitivity_seed": {
                "stage_ratios": list(seeded),
                "max_drop": max_drop,
                "ratios": list(ratios),
                "file": "layer_sensitivity.json",
            }
        },
        files,
    )


def _analysis(
    checkpoint,
    cfg,
    data_dir,
    splits,
    out,
    sensitivity,
    per_layer,
    compare_methods,
    finetune_lr,
    latency_runs,
    latency_threads,
    force,
):
    import torch

    from edgexray.checkpoint import load_checkpoint
    from edgexray.fsutil import atomic_write_json, atomic_write_text, refuse_existing, replace_dir
    from edgexray.prune import report
    from edgexray.prune.stage import load_data

    refuse_existing(out, force, "output folder", folder=True)
    methods = None
    if compare_methods:
        from edgexray.prune.compare import parse_methods

        methods = parse_methods(compare_methods)
    ckpt = load_checkpoint(checkpoint)
    data = load_data(ckpt, data_dir, splits, need="validation data")
    example = torch.zeros(ckpt.input_shape)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        if sensitivity and per_layer:
            from edgexray.prune.sensitivity import layer_sensitivity, plot_layer_sensitivity

            rep = layer_sensitivity(ckpt.model, example, cfg, data, ratios=sensitivity, arch=ckpt.arch)
            atomic_write_json(tmp / "layer_sensitivity.json", rep)
            md = report.layer_sensitivity_markdown(rep)
            atomic_write_text(tmp / "layer_sensitivity.md", md)
            plot_layer_sensitivity(rep, tmp / "layer_sensitivity.png")
        elif sensitivity:
            from edgexray.prune.sensitivity import plot_sensitivity, stage_sensitivity

            rep = stage_sensitivity(ckpt.model, example, cfg, data, ratios=sensitivity, arch=ckpt.arch)
            atomic_write_json(tmp / "sensitivity.json", rep)
            md = report.sensitivity_markdown(rep)
            atomic_write_text(tmp / "sensitivity.md", md)
            plot_sensitivity(rep, tmp / "sensitivity.png")
        else:
            from edgexray.prune.compare import compare_methods as run_compare
            from edgexray.prune.compare import plot_compare

            rep = run_compare(ckpt, example, cfg, methods, data, finetune_lr, latency_runs, latency_threads)
            atomic_write_json(tmp / "compare.json", rep)
            md = report.compare_markdown(rep)
            atomic_write_text(tmp / "compare.md", md)
            plot_compare(rep, tmp / "compare.png")
        replace_dir(tmp, out, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    click.echo(md)
    click.echo(f"wrote {out}")
