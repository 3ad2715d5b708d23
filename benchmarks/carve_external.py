"""Carve a patient-disjoint external test folder out of an ImageFolder, as symlinks.

    python benchmarks/carve_external.py ../shared/data/chest-xray-pneumonia/train /tmp/chest \
        --fraction 0.12 --seed 0

writes /tmp/chest/train/<class>/ and /tmp/chest/external/<class>/: every patient (the Kermany
key, as `edgexray build` detects it) goes wholly to one side, a seeded `fraction` of patients to
external. Then `edgexray build --data /tmp/chest/train --test-data /tmp/chest/external ...`.
Nothing is copied: the links point at the original images.
"""

from __future__ import annotations

import argparse
import os
import random
import re
from pathlib import Path

KERMANY = re.compile(r"((?:person\d+)|(?:NORMAL2-)?IM-\d+)[-_]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--fraction", type=float, default=0.12)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.out.exists():
        raise SystemExit(f"error: {args.out} exists; pass a new folder")
    files = {c.name: sorted(os.listdir(c)) for c in sorted(args.src.iterdir()) if c.is_dir()}
    patients = sorted({KERMANY.search(f).group(1) for names in files.values() for f in names})
    external = set(random.Random(args.seed).sample(patients, round(args.fraction * len(patients))))
    counts = {"train": 0, "external": 0}
    for cls, names in files.items():
        for side in counts:
            (args.out / side / cls).mkdir(parents=True)
        for name in names:
            side = "external" if KERMANY.search(name).group(1) in external else "train"
            (args.out / side / cls / name).symlink_to((args.src / cls / name).resolve())
            counts[side] += 1
    print(f"{len(patients)} patients, {len(external)} external; images {counts}")


if __name__ == "__main__":
    main()
