"""Training and evaluation: the real loop on real chest X-rays, the CLI, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgexray.checkpoint import load_checkpoint
from edgexray.cli import main
from edgexray.runtime.metrics import classification_metrics

PLOTS = ("confusion_matrix.png", "roc.png", "pr.png", "training_curves.png", "class_distribution.png")


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def chest_subset(chest_dir, tmp_path_factory):
    """120 real images per class, linked (not copied) into an ImageFolder."""
    root = tmp_path_factory.mktemp("chest") / "xrays"
    for cls in ("NORMAL", "PNEUMONIA"):
        (root / cls).mkdir(parents=True)
        for f in sorted((chest_dir / cls).iterdir())[:120]:
            (root / cls / f.name).symlink_to(f)
    return root


@pytest.mark.slow
def test_short_training_on_chest_xrays_beats_majority_and_evaluate_writes_everything(chest_subset, tmp_path):
    out = tmp_path / "run"
    r = run(
        "train",
        "--data",
        chest_subset,
        "--arch",
        "resnet18_cbam",
        "--width",
        "0.5",
        "--size",
        "96",
        "--epochs",
        "6",
        "--batch-size",
        "16",
        "--out",
        out,
    )
    assert r.exit_code == 0, r.output
    ckpt = load_checkpoint(out / "model.pt")
    assert ckpt.arch == "resnet18_cbam" and ckpt.class_names == ("NORMAL", "PNEUMONIA")
    splits = json.loads((out / "splits.json").read_text())
    val_labels = [p.split("/")[0] for p in splits["splits"]["val"]]
    majority = max(val_labels.count(c) for c in set(val_labels)) / len(val_labels)
    assert ckpt.metrics["val_accuracy"] > majority + 0.1, (ckpt.metrics, majority)
    assert (out / "metrics.csv").read_text().count("\n") >= 2
    assert any((out / "tensorboard").iterdir())

    r = run("evaluate", out / "model.pt", "--gradcam", "2")
    assert r.exit_code == 0, r.output
    ev = out / "eval-test"
    m = json.loads((ev / "metrics.json").read_text())
    for key in (
        "accuracy",
        "macro_precision",
        "macro_recall",
        "macro_f1",
        "roc_auc",
        "pr_auc",
        "confusion_matrix",
    ):
        assert m[key] is not None, key
    for c in ("NORMAL", "PNEUMONIA"):
        assert 0 <= m["per_class"][c]["sensitivity"] <= 1
        assert 0 <= m["per_class"][c]["specificity"] <= 1
    assert m["n"] == len(splits["splits"]["test"]) and m["synthetic"] is False
    for name in PLOTS:
        assert (ev / name).stat().st_size > 1000, name
    assert len(list((ev / "gradcam").glob("*.png"))) == 2


def test_evaluate_tta_and_split_on_tiny_checkpoint(tiny_checkpoint, tmp_path):
    r = run("evaluate", tiny_checkpoint, "--split", "val", "--tta", "--out", tmp_path / "ev")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["split"] == "val" and m["tta"] is True and m["synthetic"] is True
    lo, hi = m["ci95"]["accuracy"]  # 95% bootstrap interval around the point estimate
    assert lo <= m["accuracy"] <= hi and m["ci95"]["n_units"] > 0
    assert len(m["per_class"]) == 3 and np.asarray(m["confusion_matrix"]).shape == (3, 3)


def test_metrics_match_scikit_learn():
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    probs = rng.dirichlet(np.ones(3), 200) + np.eye(3)[y] * 0.3
    probs /= probs.sum(1, keepdims=True)
    m = classification_metrics(y, probs, ["a", "b", "c"])
    assert m["macro_f1"] == pytest.approx(f1_score(y, probs.argmax(1), average="macro"))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr"))
    assert m["pr_auc"] == pytest.approx(
        np.mean([average_precision_score(y == k, probs[:, k]) for k in range(3)])
    )
    spec_b = ((y != 1) & (probs.argmax(1) != 1)).sum() / (y != 1).sum()
    assert m["per_class"]["b"]["specificity"] == pytest.approx(spec_b)


# --- bad input: one clear message, exit status 2, nothing overwritten -------------------------


def test_missing_data_folder(tmp_path):
    r = run("train", "--data", tmp_path / "nope", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "error:" in r.output and "nope" in r.output
    assert "Traceback" not in r.output


def test_unknown_architecture_suggests(synth_dir, tmp_path):
    r = run("train", "--data", synth_dir, "--arch", "resnet18_cbma", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "resnet18_cbam" in r.output


def test_existing_output_refused_without_force(synth_dir, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = run("train", "--data", synth_dir, "--out", out)
    assert r.exit_code == 2 and "--force" in r.output
    assert (out / "keep.txt").read_text() == "mine"


def test_checkpoint_of_other_class_count(tiny_checkpoint, tmp_path):
    from edgexray.synth import synthesize

    two = synthesize(tmp_path / "two", classes=2, per_class=10, size=(48, 48), progress=False)
    r = run("evaluate", tiny_checkpoint, "--data", two, "--out", tmp_path / "ev")
    assert r.exit_code == 2 and "classes" in r.output


def test_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a checkpoint")
    r = run("evaluate", bad, "--out", tmp_path / "ev")
    assert r.exit_code == 2 and "corrupt" in r.output


def test_bad_split_fractions(synth_dir, tmp_path):
    r = run("train", "--data", synth_dir, "--split", "0.5,0.5", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "0.6,0.2,0.2" in r.output


def test_help_on_every_command_and_version():
    r = run("--version")
    assert r.exit_code == 0 and "edgexray, version" in r.output
    assert run("--help").exit_code == 0
    for name, cmd in main.commands.items():
        r = run(name, "--help")
        assert r.exit_code == 0 and "Usage" in r.output, name
        for sub in getattr(cmd, "commands", {}):
            assert run(name, sub, "--help").exit_code == 0, (name, sub)


def test_checkpoint_of_another_architecture(tiny_checkpoint):
    from edgexray.runtime.errors import EdgeXrayError

    with pytest.raises(EdgeXrayError, match="holds a resnet18_cbam model, not vgg16_cbam"):
        load_checkpoint(tiny_checkpoint, arch="vgg16_cbam")
