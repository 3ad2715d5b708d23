"""`edgexray compare-archs`: two small architectures on one patient-grouped split of real chest
X-rays; one table row per architecture, measured and scored on the same test images."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from click.testing import CliRunner

from edgexray.cli import main

ARCHS = ("squeezenet1_1", "mobilenet_v2")


def chest_slice(chest_dir: Path, root: Path, per_class: int) -> None:
    """Symlink the first `per_class` images of each class of the chest folder into `root`."""
    for class_dir in sorted(p for p in chest_dir.iterdir() if p.is_dir()):
        (root / class_dir.name).mkdir(parents=True)
        for name in sorted(os.listdir(class_dir))[:per_class]:
            os.symlink(class_dir / name, root / class_dir.name / name)


def test_compare_archs_table_on_chest_xrays(chest_dir, tmp_path):
    data = tmp_path / "chest"
    chest_slice(chest_dir, data, 24)
    out = tmp_path / "cmp"
    args = [
        "compare-archs",
        "--data",
        str(data),
        "--archs",
        ",".join(ARCHS),
        "--size",
        "32",
        "--width",
        "0.25",
        "--epochs",
        "1",
        "--latency-seconds",
        "0.2",
        "--latency-threads",
        "1",
        "--out",
        str(out),
    ]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    for name in (
        "comparison.md",
        "comparison.csv",
        "comparison.json",
        "comparison.png",
        "splits.json",
        *(f"{a}/model.pt" for a in ARCHS),
    ):
        assert (out / name).stat().st_size > 0, name
    doc = json.loads((out / "comparison.json").read_text())
    assert [row["arch"] for row in doc["rows"]] == list(ARCHS)
    shared = json.loads((out / "splits.json").read_text())["splits"]
    assert shared["test"] and doc["grouping"]["source"].startswith("detected")
    for arch in ARCHS:  # every architecture trained on the one split
        assert json.loads((out / arch / "splits.json").read_text())["splits"] == shared
    n_test = len(shared["test"])
    for row in doc["rows"]:
        assert row["params"] > 0 and row["macs"] > 0 and row["latency_p50_ms"] > 0
        lo, hi = row["test_accuracy_ci95"]
        assert 0 <= lo <= row["test_accuracy"] <= hi <= 1
        assert row["interval_unit"] == "group" and 1 < row["interval_units"] <= n_test
        assert sum(c["support"] for c in row["test_per_class"].values()) == n_test
        assert row["epochs_run"] == 1 and row["latency_threads"] == 1
    assert doc["rows"][0]["params"] != doc["rows"][1]["params"]
    assert isinstance(doc["host"]["cpu_isa"], list)
    table = (out / "comparison.md").read_text()
    assert all(f"| {a} |" in table for a in ARCHS) and "Nothing chosen on test" in table
    with open(out / "comparison.csv") as f:
        assert [row["arch"] for row in csv.DictReader(f)] == list(ARCHS)
    r = CliRunner().invoke(main, args)  # not replaced without --force
    assert r.exit_code == 2 and "--force" in r.output


def test_compare_archs_bad_input(tmp_path):
    r = CliRunner().invoke(
        main, ["compare-archs", "--data", str(tmp_path), "--archs", "nope", "--out", str(tmp_path / "o")]
    )
    assert r.exit_code == 2 and r.output.startswith("error: unknown architecture 'nope'")
    r = CliRunner().invoke(
        main,
        [
            "compare-archs",
            "--data",
            str(tmp_path),
            "--archs",
            "resnet18",
            "--split",
            "0.8,0.2,0",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert r.exit_code == 2 and "test split" in r.output
    assert not (tmp_path / "o").exists()
