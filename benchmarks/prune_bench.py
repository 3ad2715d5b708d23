"""CBAM-guided vs L1 pruning on real chest X-rays (a benchmark script, not a test).

Trains a resnet18_cbam on a class-balanced subset of ../shared/data/chest-xray-pneumonia, prunes
it with `cbam` and with `l1` to the same MAC target (default: 70% of the MACs removed), fine-tunes
both the same way (the checkpoint's own training settings) and prints one table: held-out test
and val accuracy, parameters, MACs, checkpoint size and measured CPU latency for the unpruned
and both pruned models. Everything lands in --out (checkpoints, prune reports, bench.json/.md).

    python benchmarks/prune_bench.py                      # ~10-15 min on 2 free cores
    python benchmarks/prune_bench.py --images 300 --size 96 --epochs 4 --finetune-epochs 2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "chest-xray-pneumonia" / "train"


def subset(data: Path, per_class: int, seed: int, into: Path) -> Path:
    """A folder of symlinks to `per_class` randomly drawn images of each class (no copies)."""
    import random

    rng = random.Random(seed)
    for cls in sorted(p for p in data.iterdir() if p.is_dir()):
        files = sorted(f for f in cls.iterdir() if f.is_file() and not f.name.startswith("."))
        (into / cls.name).mkdir(parents=True)
        for f in rng.sample(files, min(per_class, len(files))):
            (into / cls.name / f.name).symlink_to(f.resolve())
    return into


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="class-per-folder images")
    ap.add_argument("--images", type=int, default=750, help="images per class (default 750)")
    ap.add_argument("--size", type=int, default=128, help="input side in pixels")
    ap.add_argument("--width", type=float, default=1.0, help="channel multiplier")
    ap.add_argument("--epochs", type=int, default=6, help="training epochs")
    ap.add_argument("--finetune-epochs", type=int, default=3, help="fine-tune epochs after pruning")
    ap.add_argument("--target-macs", type=float, default=0.7, help="fraction of MACs removed")
    ap.add_argument("--methods", default="cbam,l1")
    ap.add_argument("--threads", type=int, default=1, help="latency threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--group-regex", help="patient key of the file names (default: detected)")
    ap.add_argument("--no-group", action="store_true", help="split images independently")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "prune_bench")
    ap.add_argument(
        "--checkpoint",
        type=Path,
        help="reuse OUT/train/model.pt of an earlier run with the same --images/--seed (skips training)",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    os.environ.setdefault("OMP_NUM_THREADS", "2")

    import torch

    from edgexray.checkpoint import load_checkpoint
    from edgexray.data import SplitConfig
    from edgexray.prune import PruneConfig, measure, prune_checkpoint
    from edgexray.prune.stage import evaluate, load_data
    from edgexray.train import ModelConfig, TrainConfig, train_folder

    if not args.data.is_dir():
        print(f"data folder {args.data} not found; pass --data DIR", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        folder = subset(args.data, args.images, args.seed, Path(tmp) / "xrays")
        if args.checkpoint:
            ckpt_path = args.checkpoint
        else:
            ckpt_path = train_folder(
                folder,
                args.out / "train",
                ModelConfig(arch="resnet18_cbam", size=args.size, width=args.width),
                TrainConfig(epochs=args.epochs, seed=args.seed),
                split_cfg=SplitConfig(group_regex=args.group_regex, auto_group=not args.no_group),
                force=True,
            ).checkpoint
        splits = ckpt_path.parent / "splits.json"  # the same images in the same splits every time
        base = load_checkpoint(ckpt_path)
        data = load_data(base, folder, splits, progress=False)
        x = torch.zeros(base.input_shape)
        rows = [
            {
                "model": "unpruned",
                **measure.count(base.model, x),
                "bytes": ckpt_path.stat().st_size,
                "latency_ms": measure.cpu_latency_ms(base.model, x, runs=50, threads=args.threads),
                "val": evaluate(base.model, data.val, data.class_names)["accuracy"],
                "test": evaluate(base.model, data.test, data.class_names)["accuracy"],
            }
        ]
        for method in args.methods.split(","):
            cfg = PruneConfig(
                method=method,
                schedule="target",
                target_macs=args.target_macs,
                finetune_epochs=args.finetune_epochs,
                seed=args.seed,
            )
            res = prune_checkpoint(
                ckpt_path,
                args.out / f"pruned-{method}",
                cfg,
                data_dir=folder,
                splits=splits,
                latency_runs=50,
                force=True,
            )
            m = load_checkpoint(res.checkpoint).model
            acc = res.report["accuracy"]
            rows.append(
                {
                    "model": f"{method} -{args.target_macs:.0%} MACs",
                    **measure.count(m, x),
                    "bytes": res.checkpoint.stat().st_size,
                    "latency_ms": measure.cpu_latency_ms(m, x, runs=50, threads=args.threads),
                    "val": acc["val_finetuned"]["accuracy"]
                    if acc["val_finetuned"]
                    else acc["val_pruned"]["accuracy"],
                    "val_pruned_no_ft": acc["val_pruned"]["accuracy"],
                    "test": acc["test_after"]["accuracy"],
                }
            )
    n = {
        s: len(v)
        for s, v in (("train", data.train.dataset), ("val", data.val.dataset), ("test", data.test.dataset))
    }
    lines = [
        f"resnet18_cbam, width {base.model_options['width']}, {base.preprocess.size} px, {args.images} images/class "
        f"(train/val/test {n['train']}/{n['val']}/{n['test']}), {args.epochs} epochs, "
        f"{args.finetune_epochs} fine-tune epochs; latency: PyTorch CPU, batch 1, "
        f"{args.threads} thread(s), p50 and min of 50; {time.time() - t0:.0f} s total",
        "",
        "| model | test acc | val acc | params | MACs | checkpoint | latency p50 (min) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {100 * r['test']:.2f}% | {100 * r['val']:.2f}% | "
            f"{r['params']:,} | {r['macs']:,} | {r['bytes'] / 1e6:.2f} MB | "
            f"{r['latency_ms']['p50']:.2f} ({r['latency_ms']['min']:.2f}) ms |"
        )
    table = "\n".join(lines)
    print(table)
    (args.out / "bench.md").write_text(table + "\n")
    (args.out / "bench.json").write_text(
        json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
