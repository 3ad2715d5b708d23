"""`edgexray data eda`: the report's numbers on real chest X-rays with a planted copy, and bit
depths of the synthetic set (8- and 16-bit PNGs)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from click.testing import CliRunner

from edgexray.cli import main

PER_CLASS = 15


def chest_slice(chest_dir: Path, root: Path, per_class: int) -> dict[str, int]:
    """Symlink the first `per_class` images of each class of the chest folder into `root`."""
    counts = {}
    for class_dir in sorted(p for p in chest_dir.iterdir() if p.is_dir()):
        (root / class_dir.name).mkdir(parents=True)
        for name in sorted(os.listdir(class_dir))[:per_class]:
            os.symlink(class_dir / name, root / class_dir.name / name)
        counts[class_dir.name] = per_class
    return counts


def test_eda_report_on_chest_xrays(chest_dir, tmp_path):
    data = tmp_path / "chest"
    counts = chest_slice(chest_dir, data, PER_CLASS)
    original = sorted((data / "NORMAL").iterdir())[0]
    planted = data / "NORMAL" / original.name.replace(".jpeg", "-copy.jpeg")
    shutil.copy(original, planted)  # same patient key (IM-NNNN-), a true byte copy
    counts["NORMAL"] += 1
    out = tmp_path / "eda"
    r = CliRunner().invoke(main, ["data", "eda", str(data), "--out", str(out), "--size", "64"])
    assert r.exit_code == 0, r.output
    for name in (
        "report.html",
        "eda.json",
        "images.csv",
        "class_balance.png",
        "image_sizes.png",
        "intensity.png",
        "groups.png",
    ):
        assert (out / name).stat().st_size > 0, name
    doc = json.loads((out / "eda.json").read_text())
    assert doc["class_counts"] == counts and doc["images"] == sum(counts.values())
    headers = doc["headers"]["all"]
    assert sum(headers["modes"].values()) == doc["images"] == sum(headers["bit_depths"].values())
    assert set(headers["formats"]) == {"JPEG"} and headers["width"]["min"] > 64
    dup = doc["duplicates"]
    pair = sorted(f"NORMAL/{p.name}" for p in (original, planted))
    assert dup["exact_duplicate_clusters"] >= 1 and dup["conflicting_labels"] == 0
    assert pair in [sorted(e["images"]) for e in dup["examples"]]
    groups = doc["groups"]
    assert groups["source"].startswith("detected: Kermany")
    assert sum(groups["groups_per_class"].values()) >= groups["groups"] > 1
    assert groups["images"] == doc["images"]
    for name in counts:
        hist = doc["intensity"]["per_class"][name]["histogram"]
        assert abs(sum(hist) / len(hist) - 1) < 1e-6  # a density over [0, 1]
    html = (out / "report.html").read_text()
    assert "Class balance" in html and "Duplicates" in html and 'src="intensity.png"' in html
    rows = (out / "images.csv").read_text().splitlines()
    assert len(rows) == 1 + doc["images"]
    # the same folder again: refused without --force, one error line, exit 2
    r = CliRunner().invoke(main, ["data", "eda", str(data), "--out", str(out)])
    assert r.exit_code == 2 and r.output.count("error:") == 1 and "--force" in r.output


def test_eda_bit_depths_of_synthetic_pngs_and_bad_input(tmp_path):
    from edgexray.eda import EdaConfig, write_eda
    from edgexray.synth import SIXTEEN_BIT_EVERY, synthesize

    data = synthesize(tmp_path / "syn", classes=2, per_class=10, size=32, seed=0, progress=False)
    doc = write_eda(data, tmp_path / "eda", EdaConfig(size=32), progress=False)
    depths = doc["headers"]["all"]["bit_depths"]
    assert depths == {"8": 20 - 20 // SIXTEEN_BIT_EVERY, "16": 20 // SIXTEEN_BIT_EVERY}
    assert doc["synthetic"] and doc["groups"]["key"] is None
    assert "SYNTHETIC" in (tmp_path / "eda" / "report.html").read_text()
    r = CliRunner().invoke(main, ["data", "eda", str(tmp_path / "missing"), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and r.output.startswith("error: image folder")
    assert not (tmp_path / "x").exists()
