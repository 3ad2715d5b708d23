"""Shared by the chest benchmarks: a seeded subset of whole patients of the Kermany chest folder
(symlinks, so nothing is copied), and a markdown cell with its 95% interval."""

from __future__ import annotations

import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "chest-xray-pneumonia" / "train"
# Kermany's file names carry the patient: person123_bacteria_456.jpeg, IM-0115-0001.jpeg
PATIENT = re.compile(r"((?:person\d+)|(?:NORMAL2-)?IM-\d+)[-_]")


def class_folders(data: Path) -> list[Path]:
    return sorted(p for p in data.iterdir() if p.is_dir())


def whole_patients(data: Path, per_class, into: Path) -> Path:
    """Symlinks to whole patients' images, spread evenly over each class folder: about
    `per_class` images per class (an int), or per_class[class name] (a dict)."""
    for cls in class_folders(data):
        wanted = per_class[cls.name] if isinstance(per_class, dict) else per_class
        by_patient: dict[str, list[str]] = {}
        for n in sorted(n for n in os.listdir(cls) if PATIENT.search(n)):
            by_patient.setdefault(PATIENT.search(n).group(1), []).append(n)
        patients = sorted(by_patient)
        step = max(1, len(patients) * 2 // max(1, wanted))
        (into / cls.name).mkdir(parents=True)
        n = 0
        for pid in patients[::step]:
            if n >= wanted:
                break
            for name in by_patient[pid]:
                (into / cls.name / name).symlink_to(cls / name)
                n += 1
    return into


def natural_counts(data: Path, images: int) -> dict[str, int]:
    """About `images` images spread over the classes in the folder's own proportions."""
    counts = {cls.name: sum(1 for n in os.listdir(cls) if PATIENT.search(n)) for cls in class_folders(data)}
    total = sum(counts.values())
    return {name: max(1, round(images * n / total)) for name, n in counts.items()}


def cell(value, interval, digits: int = 3) -> str:
    """'0.912 [0.880, 0.940]' (no interval: the value alone; None: n/a)."""
    if value is None:
        return "n/a"
    if not interval or interval[0] is None:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"
