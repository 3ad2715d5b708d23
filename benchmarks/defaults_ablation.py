"""Which training defaults hold up on other sites' films: a one-factor-at-a-time ablation (issue 11.9).

Carves whole patients of ../shared/data/chest-xray-pneumonia/train into a small folder (symlinks,
the classes in their own proportions), splits it by patient (the Kermany key is detected), and
trains a small model once per row: the baseline, then one setting changed at a time (input size,
epochs, photometric jitter, per-image intensity step, left-right flip, class weighting, label
smoothing). Every model is scored on the patient-grouped validation split and on its shifted copy
(edgexray.shift: gamma, contrast, blur, noise, resolution, exposure, as another site's films
differ): accuracy, NORMAL and PNEUMONIA recall and ROC-AUC, 95% intervals over patients. Prints a
markdown table with the CPU and its ISA flags and the wall time of each row; writes JSON.

    nice -n 19 python benchmarks/defaults_ablation.py --images 900 --out /tmp/ablation  # <= 37 min, 2 cores
    python benchmarks/defaults_ablation.py --only baseline,recipe-robust --train-seed 1  # some rows
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from chest_subset import DEFAULT_DATA, cell, natural_counts, whole_patients


@dataclass(frozen=True)
class Variant:
    """One row: the baseline with these changes (fields of ModelConfig, TrainConfig, AugmentConfig),
    or a named recipe (edgexray.recipes) applied to the baseline."""

    name: str
    change: str  # what differs from the baseline, for the table
    model: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    augment: dict = field(default_factory=dict)
    recipe: str = "default"


def variants(size: int, epochs: int) -> list[Variant]:
    return [
        Variant("baseline", f"{size} px, {epochs} epochs, plain defaults"),
        Variant("size", f"input {size * 3 // 2} px", model={"size": size * 3 // 2}),
        Variant("epochs", f"{epochs * 2} epochs", train={"epochs": epochs * 2}),
        Variant("photometric-0", "no photometric jitter", augment={"photometric": 0.0}),
        Variant(
            "photometric-2",
            "photometric x2 + gamma 0.2",
            augment={"photometric": 2.0, "gamma": 0.2},
        ),
        Variant("standardize", "per-image standardization", model={"intensity": "standardize"}),
        Variant("equalize", "per-image histogram equalization", model={"intensity": "equalize"}),
        Variant("no-flip", "no left-right flip", augment={"hflip": False}),
        Variant("class-weighted", "class-weighted loss", train={"class_weighted": True}),
        Variant("label-smoothing", "label smoothing 0.1", train={"label_smoothing": 0.1}),
        Variant("recipe-robust", "the `robust` recipe (edgexray.recipes)", recipe="robust"),
    ]


def train_and_score(variant: Variant, folder: Path, out: Path, base, shift_seed: int) -> dict:
    """Train one variant; its val and shifted-val metrics (intervals over patients) and wall time."""
    from edgexray.checkpoint import load_checkpoint
    from edgexray.data.splits import split_group_ids
    from edgexray.recipes import recipe2configs
    from edgexray.shift import shifted_metrics
    from edgexray.train import train_folder

    model_cfg, train_cfg, augment, split_cfg = base
    model_cfg, train_cfg, augment = recipe2configs(
        variant.recipe,
        replace(model_cfg, **variant.model),
        replace(train_cfg, **variant.train),
        replace(augment, **variant.augment),
    )
    start = time.perf_counter()
    trained = train_folder(
        folder, out / variant.name, model_cfg, train_cfg, split_cfg, augment=augment, progress=False
    )
    train_s = time.perf_counter() - start
    ckpt = load_checkpoint(trained.checkpoint)
    data = trained.data
    scored = shifted_metrics(
        ckpt.model,
        data.arrays["val"],
        data.labels["val"],
        ckpt.preprocess,
        list(data.class_names),
        seed=shift_seed,
        groups=split_group_ids(data, "val"),
    )
    return {
        "variant": asdict(variant),
        "configs": {"model": asdict(model_cfg), "train": train_cfg.to_dict(), "augment": augment.to_dict()},
        "preprocess": ckpt.preprocess.to_dict(),
        "best_epoch": trained.result.best_epoch,
        "train_s": round(train_s, 1),
        "wall_s": round(time.perf_counter() - start, 1),
        "n_train": int(len(data.labels["train"])),
        **scored,
    }


def figures(m: dict) -> list[str]:
    """accuracy, recall of each class and AUC, with their 95% intervals."""
    ci = m["ci95"]
    recalls = [
        cell(m["per_class"][c]["sensitivity"], ci["per_class"][c]["sensitivity"]) for c in m["per_class"]
    ]
    return [cell(m["accuracy"], ci["accuracy"]), *recalls, cell(m["roc_auc"], ci["roc_auc"])]


def markdown_table(rows: list[dict]) -> str:
    names = list(rows[0]["normal"]["per_class"])
    cols = ["acc", *[f"{c} recall" for c in names], "AUC"]
    head = (
        "| row | change | "
        + " | ".join(f"val {c}" for c in cols)
        + " | "
        + " | ".join(f"shifted {c}" for c in cols)
        + " | wall s |"
    )
    lines = [head, "|---|---|" + "---|" * (2 * len(cols) + 1)]
    for r in rows:
        v = r["variant"]
        lines.append(
            f"| {v['name']} | {v['change']} | "
            + " | ".join(figures(r["normal"]))
            + " | "
            + " | ".join(figures(r["shifted"]))
            + f" | {r['wall_s']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--images", type=int, default=900, help="about this many images, whole patients")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--val", type=float, default=0.4, help="validation fraction (the rest trains)")
    ap.add_argument("--shift-seed", type=int, default=0)
    ap.add_argument("--train-seed", type=int, default=0, help="training seed (the split stays seed 0)")
    ap.add_argument("--only", help="comma list of row names (default: every row)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from edgexray.data import AugmentConfig, SplitConfig
    from edgexray.runtime.environment import cpu_isa, cpu_model
    from edgexray.train import ModelConfig, TrainConfig

    torch.set_num_threads(args.threads)
    out = args.out or Path(tempfile.mkdtemp(prefix="edgexray-defaults-ablation-"))
    folder = whole_patients(args.data, natural_counts(args.data, args.images), out / "data")
    base = (
        ModelConfig(arch="resnet18_cbam", size=args.size, width=args.width),
        TrainConfig(
            epochs=args.epochs, batch_size=32, device="cpu", seed=args.train_seed, patience=args.epochs + 1
        ),
        AugmentConfig(),
        SplitConfig(train=1 - args.val, val=args.val, test=0.0, seed=0),
    )
    chosen = variants(args.size, args.epochs)
    if args.only:
        wanted = args.only.split(",")
        unknown = set(wanted) - {v.name for v in chosen}
        if unknown:
            raise SystemExit(f"unknown rows {sorted(unknown)}; allowed: {[v.name for v in chosen]}")
        chosen = [v for v in chosen if v.name in wanted]
    cpu = {"model": cpu_model(), "isa": list(cpu_isa()), "torch_threads": args.threads}
    started = time.perf_counter()
    rows = []
    for variant in chosen:
        rows.append(train_and_score(variant, folder, out / "runs", base, args.shift_seed))
        print(f"{variant.name}: {rows[-1]['wall_s']:.0f} s", flush=True)
        report = {
            "cpu": cpu,
            "args": {k: str(v) for k, v in vars(args).items()},
            "total_s": round(time.perf_counter() - started, 1),
            "rows": rows,
        }
        (out / "ablation.json").write_text(json.dumps(report, indent=1, default=str))
    first = rows[0]
    print(f"\nCPU: {cpu['model']}; ISA: {' '.join(cpu['isa']) or 'unknown'}; torch threads {args.threads}")
    print(
        f"resnet18_cbam width {args.width}; {first['n_train']} training images, "
        f"{first['normal']['n']} val images ({first['normal']['ci95']['n_units']} patients), whole "
        f"patients in the folder's class proportions; 95% intervals over patients; shifted = "
        f"edgexray.shift.ShiftConfig() seed {args.shift_seed}; training seed {args.train_seed}; "
        f"total {report['total_s'] / 60:.1f} min"
    )
    print()
    print(markdown_table(rows))
    print(f"\n(JSON and runs in {out})")


if __name__ == "__main__":
    main()
