"""`edgexray prune` end to end on a tiny trained checkpoint: files, reports, refusals, errors."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from edgexray.checkpoint import load_checkpoint, save_checkpoint
from edgexray.cli import main


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_prune_writes_a_smaller_checkpoint_and_reports(tiny_checkpoint, tmp_path):
    out = tmp_path / "pruned"
    r = _run(
        "prune",
        tiny_checkpoint,
        "--method",
        "cbam",
        "--finetune-epochs",
        "1",
        "--latency-runs",
        "5",
        "--out",
        out,
    )
    assert r.exit_code == 0, r.output
    assert "params" in r.output and "val accuracy" in r.output
    rep = json.loads((out / "prune_report.json").read_text())
    assert rep["reduction"]["params"] >= 0.559 and rep["reduction"]["macs"] >= 0.389
    assert rep["files"]["after_bytes"] < rep["files"]["before_bytes"]
    m = rep["measured"]
    assert m["after"]["params"] < m["before"]["params"] and m["after"]["latency_ms"]["p50"] > 0
    acc = rep["accuracy"]
    for key in ("val_before", "val_pruned", "val_finetuned", "test_after"):
        assert 0 <= acc[key]["accuracy"] <= 1 and acc[key]["n"] > 0
    assert acc["finetune"][0]["epochs"] == 1
    md = (out / "prune_report.md").read_text()
    assert "| layer4 |" in md and "cbam-gate" in md
    ckpt = load_checkpoint(out / "model.pt")
    assert ckpt.model.layer4[1].bn2.num_features == rep["spine_widths"]["after"]["layer4"]
    assert ckpt.extra["prune"]["method"] == "cbam"
    x = torch.zeros(ckpt.input_shape)
    assert ckpt.model(x).shape == (1, len(ckpt.class_names))
    again = _run("prune", tiny_checkpoint, "--out", out)  # nothing is overwritten without --force
    assert again.exit_code == 2 and "--force" in again.output


def test_prune_errors_exit_2_without_traceback(tiny_checkpoint, tmp_path):
    r = _run("prune", tiny_checkpoint, "--schedule", "one-shot", "--ratio", "1.5", "--out", tmp_path / "a")
    assert r.exit_code == 2 and "ratio=1.5 is outside (0, 1)" in r.output
    assert "Traceback" not in r.output
    r = _run("prune", tiny_checkpoint, "--target-macs", "0.99", "--round-to", "1", "--out", tmp_path / "b")
    assert r.exit_code == 2 and "cannot be reached" in r.output
    # a plain model: cbam has nothing to read; the message names the fix
    plain = load_checkpoint(tiny_checkpoint)
    from edgexray.models import create_model

    model = create_model("resnet18", **plain.model_options)
    path = save_checkpoint(
        tmp_path / "plain.pt",
        model,
        arch="resnet18",
        model_options=plain.model_options,
        class_names=plain.class_names,
        preprocess=plain.preprocess,
        extra=plain.extra,
    )
    r = _run("prune", path, "--out", tmp_path / "c")
    assert r.exit_code == 2 and "use --method l1" in r.output
    # calibration data gone
    gone = save_checkpoint(
        tmp_path / "gone.pt",
        plain.model,
        arch=plain.arch,
        model_options=plain.model_options,
        class_names=plain.class_names,
        preprocess=plain.preprocess,
        extra={"data_dir": str(tmp_path / "nope")},
    )
    r = _run("prune", gone, "--out", tmp_path / "d")
    assert r.exit_code == 2 and "missing calibration images" in r.output and "--data DIR" in r.output
    assert not (tmp_path / "d").exists()


@pytest.mark.slow
def test_sensitivity_and_compare(tiny_checkpoint, tmp_path):
    r = _run(
        "prune", tiny_checkpoint, "--sensitivity", "--sensitivity-ratios", "0.5", "--out", tmp_path / "s"
    )
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "s" / "sensitivity.json").read_text())
    assert set(rep["stages"]) == {"stage 1", "stage 2", "stage 3", "stage 4"}
    assert all(len(rows) == 1 for rows in rep["stages"].values())
    assert (tmp_path / "s" / "sensitivity.png").stat().st_size > 1000
    r = _run(
        "prune",
        tiny_checkpoint,
        "--compare",
        "cbam,l1",
        "--schedule",
        "one-shot",
        "--latency-runs",
        "3",
        "--out",
        tmp_path / "c",
    )
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert [row["method"] for row in rep["rows"]] == ["unpruned", "cbam", "l1"]
    macs = {row["method"]: row["macs"] for row in rep["rows"]}
    assert len({macs[m] for m in ("cbam", "l1")}) == 1  # same target for all
    assert macs["cbam"] < macs["unpruned"]
    assert (tmp_path / "c" / "compare.png").stat().st_size > 1000
    r = _run("prune", tiny_checkpoint, "--compare", "cbam,l2", "--out", tmp_path / "x")
    assert r.exit_code == 2 and "did you mean 'l1'" in r.output
