"""`--method l1-unstructured`: global magnitude pruning of single weights, one-shot and in rounds
with fine-tuning between, masks made permanent, and a report that says what it does not gain."""

from __future__ import annotations

import json

import torch
from click.testing import CliRunner

from edgexray.checkpoint import load_checkpoint
from edgexray.cli import main
from edgexray.models import create_model
from edgexray.prune.prune import PruneConfig, prune_model
from edgexray.prune.unstructured import prunable_weights

SIZE = 32


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_one_shot_zeroes_the_smallest_weights_globally():
    torch.manual_seed(0)
    model = create_model("resnet18_cbam", width=0.25)
    keys = set(model.state_dict())
    weights = torch.cat([m.weight.detach().abs().flatten() for _, m in prunable_weights(model)])
    x = torch.randn(1, 1, SIZE, SIZE)
    res = prune_model(model, x, PruneConfig(method="l1-unstructured", ratio=0.5))
    rep = res.report
    assert set(model.state_dict()) == keys  # masks made permanent: no weight_orig / weight_mask
    after = torch.cat([m.weight.detach().flatten() for _, m in prunable_weights(model)])
    zeroed = weights[after == 0]
    assert abs(rep["sparsity"] - 0.5) < 1e-4 and abs(float((after == 0).float().mean()) - 0.5) < 1e-4
    assert zeroed.max() <= weights[after != 0].min()  # global: the smallest |w| of all layers
    fractions = rep["layers_zero_fraction"]
    assert max(fractions.values()) - min(fractions.values()) > 0.3  # not a per-layer 50%
    assert rep["before"]["macs"] == rep["after"]["macs"] and rep["reduction"]["params"] == 0
    assert rep["after"]["stored_bytes"] == rep["before"]["stored_bytes"]
    assert rep["after"]["zipped_bytes"] < 0.8 * rep["before"]["zipped_bytes"]
    assert "do not improve" in rep["note"]


def test_rounds_prune_the_remaining_weights_and_keep_zeros_through_finetuning():
    torch.manual_seed(0)
    model = create_model("resnet18_cbam", width=0.25)
    calls = []

    def finetune(m, r):  # moves every weight: a zero must stay zero while its mask is on
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.01)
        calls.append(r)
        return m

    res = prune_model(
        model,
        torch.randn(1, 1, SIZE, SIZE),
        PruneConfig(method="l1-unstructured", ratio=0.2, rounds=3),
        finetune=finetune,
    )
    assert calls == [1, 2, 3]
    got = [round(r["sparsity"], 4) for r in res.report["rounds"]]
    assert got == [0.2, 0.36, 0.488]  # 1 - 0.8^k
    zeros = sum(int((m.weight == 0).sum()) for _, m in prunable_weights(model))
    total = sum(m.weight.numel() for _, m in prunable_weights(model))
    assert abs(zeros / total - 0.488) < 1e-4


def test_cli_iterative_report_and_compare(tiny_checkpoint, tmp_path):
    out = tmp_path / "u"
    r = _run(
        "prune",
        tiny_checkpoint,
        "--method",
        "l1-unstructured",
        "--ratio",
        "0.2",
        "--rounds",
        "2",
        "--finetune-epochs",
        "1",
        "--latency-runs",
        "3",
        "--out",
        out,
    )
    assert r.exit_code == 0, r.output
    assert "zeroed 36.0% of the weights" in r.output and "no speed-up expected" in r.output
    rep = json.loads((out / "prune_report.json").read_text())
    assert len(rep["accuracy"]["finetune"]) == 2 and rep["schedule"] == "iterative, 2 rounds"
    files = rep["files"]
    assert files["after_zipped_bytes"] < files["before_zipped_bytes"]
    md = (out / "prune_report.md").read_text()
    for text in (
        "Zero fraction per layer",
        "| layer4.1.conv2 |",
        "weights zipped",
        "checkpoint file zipped",
        "MACs and latency do not improve",
    ):
        assert text in md, text
    ckpt = load_checkpoint(out / "model.pt")
    w = ckpt.model.layer4[1].conv2.weight
    assert float((w == 0).float().mean()) > 0.2
    r = _run(
        "prune",
        tiny_checkpoint,
        "--compare",
        "l1,l1-unstructured",
        "--schedule",
        "one-shot",
        "--latency-runs",
        "3",
        "--out",
        tmp_path / "c",
    )
    assert r.exit_code == 0, r.output
    rows = {row["method"]: row for row in json.loads((tmp_path / "c" / "compare.json").read_text())["rows"]}
    un, l1 = rows["l1-unstructured"], rows["l1"]
    assert un["macs"] == rows["unpruned"]["macs"] and l1["macs"] < un["macs"]
    # the same parameter budget: as many weights zeroed as l1 removed parameters
    assert abs(un["reduction"]["nonzero_weights"] - l1["reduction"]["params"]) < 0.01
    assert "non-zero weights" in r.output and "do not run it faster" in r.output


def test_cli_refusals(tiny_checkpoint, tmp_path):
    r = _run(
        "prune",
        tiny_checkpoint,
        "--method",
        "l1-unstructured",
        "--target-macs",
        "0.5",
        "--out",
        tmp_path / "a",
    )
    assert r.exit_code == 2 and "removes no MACs" in r.output and "--ratio" in r.output
    r = _run("prune", tiny_checkpoint, "--method", "l1", "--rounds", "3", "--out", tmp_path / "b")
    assert r.exit_code == 2 and "--steps" in r.output
    r = _run("prune", tiny_checkpoint, "--method", "l1-unstuctured", "--out", tmp_path / "c")
    assert r.exit_code == 2 and "did you mean 'l1-unstructured'" in r.output
    assert not any(tmp_path.iterdir())
