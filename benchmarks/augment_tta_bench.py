"""Cutout (coarse dropout) and test-time augmentation on real chest X-rays (a benchmark, not a test).

Carves whole patients of ../shared/data/chest-xray-pneumonia/train into a small folder (symlinks),
splits it by patient (the Kermany key is detected), trains a baseline and a cutout model the same
way, and scores on validation: the baseline without TTA and with the TTA view sets, the cutout model
without TTA. Prints one table (accuracy and per-class sensitivity with 95% patient-bootstrap
intervals) with the CPU ISA flags; everything else lands in --out.

    nice python benchmarks/augment_tta_bench.py --epochs 6  # ~4.5 min on 2 cores (README table)
    python benchmarks/augment_tta_bench.py --images 1600 --size 128 --epochs 6
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from chest_subset import DEFAULT_DATA, cell, whole_patients


def row(label: str, tta: str, m: dict) -> str:
    ci = m["ci95"]
    sens = " | ".join(
        cell(m["per_class"][c]["sensitivity"], ci["per_class"][c]["sensitivity"]) for c in m["per_class"]
    )
    return f"| {label} | {tta} | {m['n']} | {cell(m['accuracy'], ci['accuracy'])} | {sens} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--images", type=int, default=800, help="about this many images, whole patients")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--cutout", type=float, default=0.5, help="cutout probability of the cutout run")
    ap.add_argument("--tta-views", default="mirror,shift-scale", help="TTA_SETS names to score")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from edgexray.data import AugmentConfig, SplitConfig
    from edgexray.evaluate import evaluate_checkpoint
    from edgexray.runtime.environment import cpu_isa, cpu_model
    from edgexray.train import ModelConfig, TrainConfig, train_folder

    torch.set_num_threads(args.threads)
    out = args.out or Path(tempfile.mkdtemp(prefix="edgexray-augment-tta-"))
    folder = whole_patients(args.data, args.images // 2, out / "data")
    model_cfg = ModelConfig(arch="resnet18_cbam", size=args.size, width=args.width)
    train_cfg = TrainConfig(epochs=args.epochs, batch_size=32, device="cpu", seed=0)
    split_cfg = SplitConfig(train=0.6, val=0.4, test=0.0, seed=0)
    runs = {"baseline": AugmentConfig(), f"cutout {args.cutout}": AugmentConfig(cutout=args.cutout)}
    rows = []
    for i, (label, augment) in enumerate(runs.items()):
        trained = train_folder(
            folder, out / f"run{i}", model_cfg, train_cfg, split_cfg, augment=augment, progress=False
        )
        views = [None] + (args.tta_views.split(",") if i == 0 else [])
        for v in views:
            m = evaluate_checkpoint(
                trained.checkpoint,
                out / f"run{i}" / f"eval-{v or 'none'}",
                split="val",
                tta=v is not None,
                tta_views=v or "mirror",
                progress=False,
            )
            rows.append(row(label, v or "none", m))
    names = list(m["per_class"])
    print(f"CPU: {cpu_model()}; ISA: {' '.join(cpu_isa()) or 'unknown'}; torch threads {args.threads}")
    print(
        f"resnet18_cbam width {args.width}, {args.size} px, {args.epochs} epochs, "
        f"~{args.images} images (whole patients), patient-grouped val; 95% intervals over patients"
    )
    print()
    print("| training | TTA | val n | accuracy [95% CI] | " + " | ".join(f"sens {c}" for c in names) + " |")
    print("|---|---|---|---|" + "---|" * len(names))
    print("\n".join(rows))
    print(f"\n(outputs in {out})")


if __name__ == "__main__":
    main()
