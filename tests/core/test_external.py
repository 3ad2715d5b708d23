"""`--test-data`: an external, patient-disjoint test folder scored by every model of a build, the
shipped one through its artifact's run.py; and the build's patient-grouped splits."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from model_factories import KERMANY, patient_of

from edgexray.cli import main
from edgexray.pipeline import BuildConfig, build
from edgexray.runtime.errors import EdgeXrayError


@pytest.mark.slow
def test_build_splits_by_detected_patient_key(chest_build):
    summary, base = chest_build
    splits = json.loads((base / "out" / "build-rpi4" / "train" / "splits.json").read_text())
    assert splits["grouping"]["key"] == KERMANY.pattern
    assert splits["grouping"]["source"].startswith("detected")
    ids = {s: {patient_of(r) for r in v} for s, v in splits["splits"].items()}
    assert all(ids.values())
    assert not (ids["train"] & ids["val"] or ids["train"] & ids["test"] or ids["val"] & ids["test"])
    assert splits["grouping"]["groups"] == len(set().union(*ids.values()))
    manifest = json.loads((Path(summary["artifact"]) / "manifest.json").read_text())
    assert manifest["grouping"]["key"] == KERMANY.pattern
    assert summary["grouping"]["groups"] == splits["grouping"]["groups"]


@pytest.mark.slow
def test_external_block_for_every_model_equals_run_py(chest_build, tmp_path):
    summary, base = chest_build
    folder = Path(summary["artifact"])
    manifest = json.loads((folder / "manifest.json").read_text())
    ext = manifest["external"]
    assert ext["n"] >= 60 and min(ext["counts"].values()) >= 30  # whole patients
    assert ext["used_for_choices"] is False
    assert ext["overlap_with_training_folder"]["external_images_duplicating_training_folder"] == 0
    labels = [row["label"] for row in manifest["models"]]
    assert len(labels) >= 5
    for row in manifest["models"]:
        e = row["external"]
        assert 0 <= e["accuracy"] <= 1 and e["accuracy_ci95"][0] <= e["accuracy"] <= e["accuracy_ci95"][1]
        assert set(e["per_class"]) == {"NORMAL", "PNEUMONIA"}
    shipped = next(row for row in manifest["models"] if row.get("shipped"))["external"]

    out = tmp_path / "pred.csv"
    r = subprocess.run(
        [sys.executable, "run.py", "predict", str(base / "external"), "--format", "csv", "--out", str(out)],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == ext["n"]
    truth = [Path(row["image"]).parent.name for row in rows]
    said = [row["label"] for row in rows]
    assert shipped["accuracy"] == pytest.approx(np.mean([t == s for t, s in zip(truth, said)]))
    for cls in ("NORMAL", "PNEUMONIA"):
        hits = [s == cls for t, s in zip(truth, said) if t == cls]
        assert shipped["per_class"][cls]["sensitivity"] == pytest.approx(np.mean(hits))

    assert "External test set (other patients)" in (folder / "report.html").read_text()
    assert summary["external"]["models"]["shipped artifact (run.py)"]["accuracy"] == pytest.approx(
        shipped["accuracy"]
    )


@pytest.mark.slow
def test_evaluate_test_data_matches_build(chest_build, tmp_path):
    summary, base = chest_build
    ckpt = base / "out" / "build-rpi4" / "train" / "model.pt"
    r = CliRunner().invoke(
        main, ["evaluate", str(ckpt), "--test-data", str(base / "external"), "--out", str(tmp_path / "ev")]
    )
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["split"] == "external" and m["n"] == summary["external"]["n"]
    assert "ci95" in m and m["external"]["used_for_choices"] is False
    assert m["accuracy"] == pytest.approx(summary["external"]["models"]["unpruned FP32 PyTorch"]["accuracy"])


def test_test_data_with_other_classes_is_refused(synth_dir, tmp_path):
    other = tmp_path / "other"
    for cls in ("cats", "dogs"):
        (other / cls).mkdir(parents=True)
        (other / cls / "a.png").symlink_to(next((synth_dir / "normal").glob("*.png")))
    with pytest.raises(EdgeXrayError, match="has classes .*cats.* trained on"):
        build(
            BuildConfig(
                target="rpi4",
                data_dir=str(synth_dir),
                out=str(tmp_path / "out"),
                test_data=str(other),
                verify_arm=False,
            )
        )
    assert not list((tmp_path / "out").glob("rpi4-*"))  # refused before training: nothing shipped
    r = CliRunner().invoke(
        main,
        [
            "build",
            "--data",
            str(synth_dir),
            "--out",
            str(tmp_path / "o2"),
            "--test-data",
            str(tmp_path / "missing"),
        ],
    )
    assert r.exit_code == 2 and "--test-data" in r.output and "is not a folder" in r.output
    r = CliRunner().invoke(main, ["build", "--out", str(tmp_path / "o3"), "--test-data", str(other)])
    assert r.exit_code == 2 and "needs --data" in r.output
