"""CLI commands of the core stages: data, train, evaluate, build. Heavy imports stay inside the
commands so `edgexray --help` is fast."""

from __future__ import annotations

from pathlib import Path

import click

from edgexray.cliparams import SEED, SIZE, WIDTH, number, ssh_client_options
from edgexray.recipes import RECIPES
from edgexray.runtime.errors import EdgeXrayError

RECIPE_NAMES = list(RECIPES)


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(v) for v in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3:
        raise EdgeXrayError(f"--split {text!r}; expected three fractions train,val,test such as 0.6,0.2,0.2")
    return parts


@click.group()
def data() -> None:
    """Data helpers (synthetic X-rays, dataset EDA)."""


@data.command("synth")
@click.argument("out", type=click.Path(file_okay=False))
@click.option(
    "--classes",
    type=int,
    default=3,
    show_default=True,
    help="2 (normal/osteoporosis) or 3 (normal/osteopenia/osteoporosis).",
)
@click.option("--per-class", type=int, default=100, show_default=True, help="Images per class.")
@click.option(
    "--size",
    default="96-160",
    show_default=True,
    help="Image side in pixels: N, or a range LO-HI drawn per image.",
)
@click.option("--seed", type=int, default=0, show_default=True, callback=SEED)
@click.option("--force", is_flag=True, help="Replace an existing OUT folder.")
def synth(out, classes, per_class, size, seed, force):
    """Write SYNTHETIC radiograph-like bone images (ImageFolder layout) to OUT."""
    from edgexray.synth import synthesize

    lo, _, hi = size.partition("-")
    try:
        size_arg = (int(lo), int(hi or lo))
    except ValueError:
        raise EdgeXrayError(f"--size {size!r}; expected N or LO-HI, e.g. 128 or 96-160") from None
    path = synthesize(out, classes=classes, per_class=per_class, size=size_arg, seed=seed, force=force)
    click.echo(f"wrote {classes * per_class} synthetic images to {path}")


@data.command("eda")
@click.argument("data_dir", metavar="DIR", type=click.Path())
@click.option(
    "--out",
    default="runs/eda",
    show_default=True,
    type=click.Path(),
    help="Report folder: report.html, PNGs, eda.json, images.csv.",
)
@click.option(
    "--size",
    type=int,
    default=128,
    show_default=True,
    callback=SIZE,
    help="Side the images are decoded to for intensity histograms and duplicates.",
)
@click.option(
    "--group-regex",
    help=r"Patient key of the file names, e.g. '(person\d+)_' "
    "(default: detected, see `train --help`).",
)
@click.option("--force", is_flag=True, help="Replace an existing report folder.")
def eda(data_dir, out, size, group_regex, force):
    """Dataset EDA of DIR: class balance, sizes, modes, bit depths, intensities, duplicates,
    patient groups; writes OUT/report.html with its PNGs, eda.json and images.csv."""
    from edgexray.eda import EdaConfig, format_eda, write_eda

    doc = write_eda(data_dir, out, EdaConfig(size=size, group_regex=group_regex), force=force)
    click.echo(format_eda(doc))
    click.echo(f"wrote {Path(out) / 'report.html'}")


def _list_archs(ctx, param, value):
    if value and not ctx.resilient_parsing:
        from edgexray.models import list_models

        click.echo("\n".join(list_models()))
        ctx.exit()


@click.command()
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(),
    help="ImageFolder: one sub-folder of images per class.",
)
@click.option("--arch", default="resnet18_cbam", show_default=True, help="Architecture (see --list-archs).")
@click.option(
    "--list-archs",
    is_flag=True,
    is_eager=True,
    expose_value=False,
    callback=_list_archs,
    help="List the architectures and exit.",
)
@click.option(
    "--out",
    default="runs/train",
    show_default=True,
    type=click.Path(),
    help="Output folder: model.pt, splits.json, metrics.csv, tensorboard/.",
)
@click.option(
    "--size", type=int, default=128, show_default=True, callback=SIZE, help="Input side in pixels (16-1024)."
)
@click.option(
    "--channels",
    type=click.Choice(["1", "3"]),
    default="1",
    show_default=True,
    help="Model input channels (3 = gray repeated, for ImageNet weights).",
)
@click.option(
    "--width",
    type=float,
    default=1.0,
    show_default=True,
    callback=WIDTH,
    help="Channel multiplier (0 < width <= 4).",
)
@click.option("--pretrained", is_flag=True, help="ImageNet weights from torchvision.")
@click.option("--weights", type=click.Path(), help="Local ImageNet state-dict file (offline).")
@click.option("--norm", type=click.Choice(["zscore", "imagenet"]), default="zscore", show_default=True)
@click.option(
    "--intensity",
    type=click.Choice(["none", "standardize", "equalize"]),
    default="none",
    show_default=True,
    help="Per-image intensity step before --norm (run.py applies it too): standardize "
    "(mean/std of each image) or equalize (histogram equalization).",
)
@click.option(
    "--recipe",
    type=click.Choice(RECIPE_NAMES),
    default="default",
    show_default=True,
    help="Named training defaults (README 'Defaults that generalize'); options given here win.",
)
@click.option("--epochs", type=int, default=8, show_default=True, callback=number(1, 10000, example="8"))
@click.option(
    "--batch-size", type=int, default=32, show_default=True, callback=number(1, 65536, example="32")
)
@click.option(
    "--lr", type=float, default=1e-3, show_default=True, callback=number(0, 10, lo_open=True, example="0.001")
)
@click.option("--optimizer", type=click.Choice(["adam", "adamw", "sgd"]), default="adamw", show_default=True)
@click.option(
    "--schedule",
    type=click.Choice(["cosine", "cosine-restarts", "constant"]),
    default="cosine",
    show_default=True,
)
@click.option(
    "--label-smoothing", type=float, default=0.0, show_default=True, callback=number(0, 0.99, example="0.1")
)
@click.option("--loss", type=click.Choice(["ce", "focal"]), default="ce", show_default=True)
@click.option("--class-weighted", is_flag=True, help="Inverse-frequency class weights in the loss.")
@click.option("--oversample", is_flag=True, help="Weighted sampler that balances classes.")
@click.option(
    "--mixup",
    type=float,
    default=0.0,
    show_default=True,
    callback=number(0, 100, example="0.2"),
    help="MixUp alpha (0 = off).",
)
@click.option(
    "--noise",
    type=float,
    default=0.0,
    show_default=True,
    callback=number(0, 1, example="0.02"),
    help="Augmentation noise std.",
)
@click.option(
    "--blur",
    type=float,
    default=0.0,
    show_default=True,
    callback=number(0, 20, example="1.0"),
    help="Max augmentation blur sigma.",
)
@click.option(
    "--cutout",
    type=float,
    default=0.0,
    show_default=True,
    callback=number(0, 1, example="0.5"),
    help="Coarse dropout: probability of filling one square (1/4 of the side) with the image mean.",
)
@click.option(
    "--photometric",
    type=float,
    default=1.0,
    show_default=True,
    callback=number(0, 4, example="2"),
    help="Factor on the brightness/contrast/gamma jitter (0 = none).",
)
@click.option("--no-flip", is_flag=True, help="No random left-right flip (chest films are not symmetric).")
@click.option("--no-augment", is_flag=True, help="Train without augmentation.")
@click.option(
    "--patience",
    type=int,
    default=5,
    show_default=True,
    callback=number(1, 10000, example="5"),
    help="Early-stopping patience.",
)
@click.option(
    "--monitor",
    type=click.Choice(["val_loss", "val_accuracy", "val_macro_f1", "val_roc_auc"]),
    default="val_loss",
    show_default=True,
)
@click.option("--split", default="0.6,0.2,0.2", show_default=True, help="train,val,test fractions.")
@click.option(
    "--group-regex",
    help=r"Keep images sharing this regex's first group (e.g. a "
    r"patient id '(person\d+)_') in one split. Default: a "
    "patient key detected in the file names (personN_, IM-NNNN-, "
    "patientN) or DICOM PatientID.",
)
@click.option("--no-group", is_flag=True, help="Split images independently (no patient key).")
@click.option("--splits", type=click.Path(), help="Reuse an existing splits.json.")
@click.option("--seed", type=int, default=0, show_default=True, callback=SEED)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--strict", is_flag=True, help="Fail on an unreadable image instead of skipping it.")
@click.option("--force", is_flag=True, help="Overwrite an existing output folder.")
def train(
    data_dir,
    arch,
    out,
    size,
    channels,
    width,
    pretrained,
    weights,
    norm,
    intensity,
    recipe,
    epochs,
    batch_size,
    lr,
    optimizer,
    schedule,
    label_smoothing,
    loss,
    class_weighted,
    oversample,
    mixup,
    noise,
    blur,
    cutout,
    photometric,
    no_flip,
    no_augment,
    patience,
    monitor,
    split,
    group_regex,
    no_group,
    splits,
    seed,
    device,
    strict,
    force,
):
    """Train a classifier on an image folder; writes OUT/model.pt and its splits."""
    from edgexray.data import AugmentConfig, SplitConfig
    from edgexray.models import model_info
    from edgexray.recipes import recipe2configs
    from edgexray.train import ModelConfig, TrainConfig, train_folder

    model_info(arch)  # unknown names fail before any image is read
    train_frac, val_frac, test_frac = _fractions(split)
    model_cfg, train_cfg, augment = recipe2configs(
        recipe,
        ModelConfig(
            arch=arch,
            size=size,
            channels=int(channels),
            width=width,
            pretrained=pretrained,
            weights=weights,
            norm=norm,
            intensity=intensity,
        ),
        TrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            optimizer=optimizer,
            schedule=schedule,
            label_smoothing=label_smoothing,
            loss=loss,
            class_weighted=class_weighted,
            oversample=oversample,
            mixup_alpha=mixup,
            patience=patience,
            monitor=monitor,
            seed=seed,
            device=device,
        ),
        None
        if no_augment
        else AugmentConfig(
            noise=noise,
            blur=blur,
            mixup_alpha=mixup,
            cutout=cutout,
            photometric=photometric,
            hflip=not no_flip,
        ),
    )
    run = train_folder(
        data_dir,
        out,
        model_cfg,
        train_cfg,
        split_cfg=SplitConfig(
            train_frac, val_frac, test_frac, seed=seed, group_regex=group_regex, auto_group=not no_group
        ),
        augment=augment,
        splits=splits,
        strict=strict,
        force=force,
    )
    from edgexray import distributed

    ctx = distributed.context()
    distributed.shutdown()  # under torchrun: every rank is done; rank 0 wrote the checkpoint
    if not ctx.is_main:
        return
    best = run.result.history[run.result.best_epoch - 1]
    click.echo(
        f"best epoch {run.result.best_epoch}: val accuracy {best['val_accuracy']:.4f}, "
        f"val loss {best['val_loss']:.4f}"
    )
    click.echo(f"checkpoint: {run.checkpoint}")


@click.command()
@click.argument("ckpt", type=click.Path())
@click.option(
    "--data",
    "data_dir",
    type=click.Path(),
    help="Image folder (default: the one the checkpoint was trained on, same splits).",
)
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="test", show_default=True)
@click.option("--out", type=click.Path(), help="Output folder (default: <ckpt folder>/eval-<split>).")
@click.option("--tta", is_flag=True, help="Test-time augmentation (average over --tta-views).")
@click.option(
    "--tta-views",
    default="mirror",
    show_default=True,
    help="TTA view set (edgexray.evaluate.TTA_SETS): mirror, shifts, shift-scale, all.",
)
@click.option(
    "--gradcam",
    type=int,
    default=0,
    show_default=True,
    callback=number(0, 100000, example="8"),
    help="Write Grad-CAM overlays for N test images.",
)
@click.option(
    "--test-data",
    type=click.Path(),
    help="Evaluate on this external folder (same class folders) instead of a split.",
)
@click.option(
    "--shift",
    is_flag=True,
    help="Also score a shifted copy of the same images (gamma, contrast, blur, noise, resolution, "
    "exposure: as films from another site differ) and report both.",
)
@click.option(
    "--shift-seed", type=int, default=0, show_default=True, help="Seed of the --shift perturbations."
)
@click.option("--force", is_flag=True, help="Overwrite an existing output folder.")
def evaluate(ckpt, data_dir, split, out, tta, tta_views, gradcam, test_data, shift, shift_seed, force):
    """Accuracy, macro F1, per-class sensitivity/specificity, ROC/PR-AUC, plots, Grad-CAM."""
    from edgexray.evaluate import evaluate_checkpoint

    out = out or str(Path(ckpt).parent / ("eval-external" if test_data else f"eval-{split}"))
    m = evaluate_checkpoint(
        ckpt,
        out,
        data_dir=data_dir,
        split=split,
        tta=tta,
        gradcam=gradcam,
        force=force,
        test_data=test_data,
        shift=shift,
        shift_seed=shift_seed,
        tta_views=tta_views,
    )
    click.echo(format_metrics(m))
    if shift:
        click.echo(format_shifted(m, m["shifted"]))
    if test_data:
        from edgexray.external import format_lines

        doc = dict(m["external"], models={"checkpoint": m})
        click.echo("\n".join(f"{k}: {v}" for k, v in format_lines(doc)))
    click.echo(f"wrote {Path(out) / 'metrics.json'}")


def format_shifted(normal: dict, shifted: dict) -> str:
    """The shifted copy's figures beside the normal ones, with their 95% intervals."""

    def figure(value, ci):
        if value is None:
            return "n/a"
        return f"{value:.4f}" + ("" if ci is None else f" [{ci[0]:.4f}, {ci[1]:.4f}]")

    cfg = ", ".join(f"{k} {v:g}" for k, v in shifted["shift"].items())
    lines = [
        f"shifted copy (seed {shifted['shift_seed']}; {cfg}):",
        format_metrics(shifted),
        f"{'95% intervals':<24}{'normal':>28}{'shifted':>28}",
        f"{'accuracy':<24}{figure(normal['accuracy'], normal['ci95']['accuracy']):>28}"
        f"{figure(shifted['accuracy'], shifted['ci95']['accuracy']):>28}",
    ]
    for name in shifted["per_class"]:
        for key in ("sensitivity", "specificity"):
            a, b = normal["per_class"][name][key], shifted["per_class"][name][key]
            ci_a, ci_b = normal["ci95"]["per_class"][name][key], shifted["ci95"]["per_class"][name][key]
            lines.append(f"{name + ' ' + key:<24}{figure(a, ci_a):>28}{figure(b, ci_b):>28}")
    drop, ci = shifted["drop"]["accuracy_drop_pp"], shifted["drop"]["accuracy_drop_interval_pp"]
    span = "" if ci is None else f" [{ci[0]:.1f}, {ci[1]:.1f}]"
    lines.append(f"accuracy drop on the shifted copy: {drop:.1f} pp{span} (paired, same images)")
    return "\n".join(lines)


def format_metrics(m: dict) -> str:
    from edgexray.runtime.metrics import rule_brief

    auc = "n/a" if m["roc_auc"] is None else f"{m['roc_auc']:.4f}"
    lines = [
        f"{m['split']} split, {m['n']} images: accuracy {m['accuracy']:.4f}, "
        f"macro F1 {m['macro_f1']:.4f}, ROC-AUC {auc} (labels by {rule_brief(m.get('decision_rule'))})",
        f"{'class':<16}{'sensitivity':>12}{'specificity':>12}{'support':>9}",
    ]
    for name, c in m["per_class"].items():
        lines.append(f"{name:<16}{c['sensitivity']:>12.4f}{c['specificity']:>12.4f}{c['support']:>9}")
    return "\n".join(lines)


@click.command()
@click.option(
    "--target",
    default="rpi4",
    show_default=True,
    help="Device profile name (`edgexray devices list`) or path to your own TOML.",
)
@click.option(
    "--data",
    "data_dir",
    type=click.Path(),
    help="Image folder to train on. Without --data and --checkpoint: SYNTHETIC demo data.",
)
@click.option("--checkpoint", type=click.Path(), help="Trained checkpoint (skips training).")
@click.option(
    "--out",
    default="artifacts",
    show_default=True,
    type=click.Path(),
    help="Where the artifact folder + zip and the build-<target>/ work folder go.",
)
@click.option("--arch", default="resnet18_cbam", show_default=True)
@click.option(
    "--size",
    type=click.IntRange(min=8),
    callback=SIZE,
    help="Input side (default: the profile's input_size; demo 96).",
)
@click.option(
    "--width", type=click.FloatRange(min=0, min_open=True), default=1.0, callback=WIDTH, show_default=True
)
@click.option("--pretrained", is_flag=True, help="ImageNet weights from torchvision.")
@click.option("--weights", type=click.Path(), help="Local ImageNet weights file (offline).")
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    callback=number(1, 10000, example="8"),
)
@click.option(
    "--finetune-epochs",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    callback=number(0, 10000, example="3"),
)
@click.option(
    "--max-accuracy-drop",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    callback=number(0, 100, example="1.0"),
    help="Percentage points allowed below the unpruned FP32 model (held-out split).",
)
@click.option(
    "--latency-budget-ms",
    type=click.FloatRange(min=0, min_open=True),
    callback=number(0, lo_open=True, example="50"),
    help="Host latency goal (ms, this machine) for the pruning search.",
)
@click.option("--precisions", help="Comma list overriding the profile's precisions (fallback order).")
@click.option(
    "--calib-count",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="INT8 calibration images from the training split (all, when fewer).",
)
@click.option(
    "--bench-seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=3.0,
    callback=number(0, 3600, lo_open=True, example="3"),
    show_default=True,
)
@click.option("--no-verify-arm", is_flag=True, help="Skip the emulated-ARM check.")
@click.option(
    "--group-regex",
    help=r"Patient key of the file names for the splits, e.g. "
    r"'(person\d+)_' (default: detected, see `train --help`).",
)
@click.option("--no-group", is_flag=True, help="Split images independently (no patient key).")
@click.option(
    "--test-data",
    type=click.Path(),
    help="External test folder (other patients, same class folders): every model is "
    "scored on it at the end; never used for a choice.",
)
@click.option(
    "--positive-class",
    help="Operating point: the class whose decision threshold is chosen on val (with --target-sensitivity).",
)
@click.option(
    "--target-sensitivity",
    type=float,
    help="Sensitivity in (0, 1] the positive class's threshold reaches on val, e.g. 0.95.",
)
@click.option(
    "--recipe",
    type=click.Choice(RECIPE_NAMES),
    default="default",
    show_default=True,
    help="Named training defaults (README 'Defaults that generalize'); ignored with --checkpoint.",
)
@click.option(
    "--remote",
    metavar="ssh://user@host[:port]",
    help="The target device: every candidate file is timed there (run.py time over SSH) and "
    "the fastest within the budget ships.",
)
@ssh_client_options
@click.option("--seed", type=int, default=0, show_default=True, callback=SEED)
@click.option("--force", is_flag=True, help="Replace an existing artifact and build folder.")
def build(
    target,
    data_dir,
    checkpoint,
    out,
    arch,
    size,
    width,
    pretrained,
    weights,
    epochs,
    finetune_epochs,
    max_accuracy_drop,
    latency_budget_ms,
    precisions,
    calib_count,
    bench_seconds,
    no_verify_arm,
    group_regex,
    no_group,
    test_data,
    positive_class,
    target_sensitivity,
    recipe,
    remote,
    remote_python,
    identity,
    ssh_options,
    seed,
    force,
):
    """Train or load, prune, fine-tune, export, check, benchmark and bundle for a device."""
    from edgexray.pipeline import BuildConfig, format_summary
    from edgexray.pipeline import build as run_build

    cfg = BuildConfig(
        target=target,
        data_dir=data_dir,
        checkpoint=checkpoint,
        out=out,
        arch=arch,
        size=size,
        width=width,
        pretrained=pretrained,
        weights=weights,
        epochs=epochs,
        finetune_epochs=finetune_epochs,
        max_accuracy_drop=max_accuracy_drop,
        latency_budget_ms=latency_budget_ms,
        precisions=tuple(p.strip() for p in precisions.split(",")) if precisions else None,
        calib_count=calib_count,
        bench_seconds=bench_seconds,
        verify_arm=not no_verify_arm,
        group_regex=group_regex,
        group=not no_group,
        test_data=test_data,
        positive_class=positive_class,
        target_sensitivity=target_sensitivity,
        recipe=recipe,
        remote=remote,
        remote_python=remote_python,
        identity=identity,
        ssh_options=tuple(ssh_options),
        seed=seed,
        force=force,
    )
    summary = run_build(cfg)
    click.echo(format_summary(summary))


@click.command("compare-archs")
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(),
    help="ImageFolder: one sub-folder of images per class.",
)
@click.option("--archs", required=True, help="Comma list of architectures (see `train --list-archs`).")
@click.option(
    "--out",
    default="runs/compare-archs",
    show_default=True,
    type=click.Path(),
    help="Output folder: comparison.md/.csv/.json/.png, splits.json, <arch>/model.pt.",
)
@click.option(
    "--size",
    type=int,
    default=128,
    show_default=True,
    callback=SIZE,
    help="Input side in pixels (16-1024), every architecture.",
)
@click.option(
    "--width",
    type=float,
    default=1.0,
    show_default=True,
    callback=WIDTH,
    help="Channel multiplier, every architecture.",
)
@click.option("--epochs", type=int, default=8, show_default=True, callback=number(1, 10000, example="8"))
@click.option(
    "--batch-size", type=int, default=32, show_default=True, callback=number(1, 65536, example="32")
)
@click.option("--split", default="0.6,0.2,0.2", show_default=True, help="train,val,test fractions.")
@click.option(
    "--group-regex",
    help=r"Patient key of the file names for the splits, e.g. "
    r"'(person\d+)_' (default: detected, see `train --help`).",
)
@click.option("--no-group", is_flag=True, help="Split images independently (no patient key).")
@click.option(
    "--latency-seconds",
    type=float,
    default=2.0,
    show_default=True,
    callback=number(0, 600, lo_open=True, example="2"),
    help="Timed batch-1 CPU calls per architecture.",
)
@click.option(
    "--latency-threads",
    type=int,
    callback=number(1, 1024, example="1"),
    help="PyTorch CPU threads while timing (default: PyTorch's count on this host).",
)
@click.option("--seed", type=int, default=0, show_default=True, callback=SEED)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Training device (latency is timed on the CPU).",
)
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
def compare_archs(
    data_dir,
    archs,
    out,
    size,
    width,
    epochs,
    batch_size,
    split,
    group_regex,
    no_group,
    latency_seconds,
    latency_threads,
    seed,
    device,
    force,
):
    """Train several architectures on the same patient-grouped splits; one table and plot.

    Accuracy and ROC-AUC on the test split with 95% intervals, params, MACs and host
    latency; nothing is chosen on test."""
    from edgexray.compare_archs import CompareConfig, format_comparison
    from edgexray.compare_archs import compare_archs as run_compare

    cfg = CompareConfig(
        archs=tuple(a.strip() for a in archs.split(",") if a.strip()),
        size=size,
        width=width,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        split=_fractions(split),
        group_regex=group_regex,
        group=not no_group,
        latency_seconds=latency_seconds,
        latency_threads=latency_threads,
        device=device,
    )
    doc = run_compare(data_dir, out, cfg, force=force)
    click.echo(format_comparison(doc))
    click.echo(f"wrote {Path(out) / 'comparison.md'}")
