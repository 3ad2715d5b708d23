"""ShuffleNetV2 prunes: every width its channel shuffle never sees (the 1x1 -> depthwise -> 1x1
middle of each block, the stem, the last conv) shrinks exactly; the spine is left as built."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgexray.models import create_model
from edgexray.prune import graph, measure
from edgexray.prune.importance import IN_FNS
from edgexray.prune.prune import PruneConfig, prune_model

SIZE = 32
ARCH = "shufflenet_v2_x1_0_cbam"


def _stage_outputs(model, x):
    return graph.spine_widths(model, x)


def test_pruned_channels_are_exactly_the_ones_removed():
    """Zero every consumer weight of half the channels of each prunable group: the network no
    longer uses them, so removing them must leave the output unchanged (a wrong index mapping
    across the shuffle would not)."""
    torch.manual_seed(0)
    model = create_model(ARCH, width=0.25).eval()
    x = torch.randn(2, 1, SIZE, SIZE)
    DG = graph.build_graph(model, x[:1])
    groups = graph.prunable_groups(model, DG, graph.module_stages(model, x[:1]))
    names = {g.name for g in groups}
    assert "conv1.0" in names and "conv5.0" in names
    assert sum(n.endswith("branch2.3") for n in names) == 16  # every block's middle width
    # no group holds a layer whose output meets the shuffle (a block's branch outputs)
    assert not any(m.endswith(("branch1.2", "branch2.5")) for g in groups for m in g.members)
    cuts = []
    with torch.no_grad():
        for g in groups:
            idxs = list(range(0, g.channels, 2))
            group = DG.get_pruning_group(g.group[0].dep.target.module, g.group[0].dep.handler, idxs)
            for dep, mapped in group:
                layer = dep.target.module
                if dep.handler in IN_FNS and not (isinstance(layer, nn.Conv2d) and layer.groups > 1):
                    layer.weight[:, mapped] = 0
            cuts.append((g, idxs))
        want = model(x)
        spine = _stage_outputs(model, x[:1])
        for g, idxs in cuts:
            graph.prune_group(DG, g, idxs)
        got = model(x)
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    assert _stage_outputs(model, x[:1]) == spine  # the shuffled spine is as built
    assert model.stage3[2].branch2[3].out_channels == 14 and model.conv5[0].out_channels == 512


def test_shufflenet_prunes_exports_and_reloads(tmp_path):
    import onnxruntime as ort

    from edgexray.checkpoint import load_checkpoint, save_checkpoint
    from edgexray.export.onnx import torch2onnx
    from edgexray.runtime.preprocess import Preprocess

    torch.manual_seed(0)
    model = create_model(ARCH, width=0.25).eval()
    x = torch.randn(2, 1, SIZE, SIZE)
    shape = (1, 1, SIZE, SIZE)
    before = measure.onnx_count(torch2onnx(model, tmp_path / "a.onnx", input_shape=shape, simplify=False))
    res = prune_model(model, x[:1], PruneConfig(method="l1", schedule="one-shot", ratio=0.5, round_to=1))
    assert res.report["reduction"]["macs"] > 0.3 and res.report["reduction"]["params"] > 0.3
    assert res.report["spine_widths"]["before"] == res.report["spine_widths"]["after"]
    with torch.no_grad():
        out = model.eval()(x).numpy()
    assert out.shape == (2, 2)
    path = torch2onnx(model, tmp_path / "b.onnx", input_shape=shape, simplify=False)
    after = measure.onnx_count(path)
    # measured on the exported files: -30% of the MACs and parameters at least
    assert after["macs"] < 0.7 * before["macs"] and after["params"] < 0.7 * before["params"], (before, after)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    ort_out = np.concatenate([sess.run(None, {name: x[i : i + 1].numpy()})[0] for i in range(2)])
    assert np.abs(ort_out - out).max() < 1e-4
    ckpt = save_checkpoint(
        tmp_path / "m.pt",
        model,
        arch=ARCH,
        model_options={"num_classes": 2, "in_chans": 1, "width": 0.25},
        class_names=["NORMAL", "PNEUMONIA"],
        preprocess=Preprocess(size=SIZE, channels=1, mean=(0.5,), std=(0.25,)),
    )
    back = load_checkpoint(ckpt).model
    with torch.no_grad():
        assert torch.equal(back(x), model(x))


def test_onnx_count_matches_a_hand_count(tmp_path):
    from edgexray.export.onnx import torch2onnx

    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    got = measure.onnx_count(torch2onnx(model, tmp_path / "m.onnx", input_shape=(1, 1, 8, 8), simplify=False))
    assert got == {"params": 4 * 9 + 256 * 3 + 3, "macs": 4 * 64 * 9 + 256 * 3}


def test_cli_prunes_a_shufflenet_checkpoint(tiny_checkpoint, tmp_path):
    """`edgexray prune` on a shufflenet_v2_x1_0_cbam checkpoint (the tiny run's data and splits)."""
    import json

    from click.testing import CliRunner

    from edgexray.checkpoint import load_checkpoint, save_checkpoint
    from edgexray.cli import main

    base = load_checkpoint(tiny_checkpoint)
    torch.manual_seed(0)
    path = save_checkpoint(
        tmp_path / "s.pt",
        create_model(ARCH, width=0.25, num_classes=3),
        arch=ARCH,
        model_options={"num_classes": 3, "in_chans": 1, "width": 0.25},
        class_names=base.class_names,
        preprocess=base.preprocess,
        extra=base.extra,
    )
    r = CliRunner().invoke(
        main,
        ["prune", str(path), "--round-to", "1", "--latency-runs", "3", "--out", str(tmp_path / "p")],
        catch_exceptions=False,
    )
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "p" / "prune_report.json").read_text())
    assert rep["reduction"]["macs"] > 0.2 and rep["reduction"]["params"] > 0.2
    # cbam gates sit on the shuffled spine: the branch widths are scored by their consumers
    assert {g["scoring"] for g in rep["groups"]} == {"consumer L1 (no gate reaches these channels)"}
    back = load_checkpoint(tmp_path / "p" / "model.pt")
    g = next(g for g in rep["groups"] if g["name"] == "stage2.1.branch2.3")
    assert g["channels_after"] < g["channels_before"] == 16
    assert back.model.stage2[1].branch2[3].out_channels == g["channels_after"]
    assert back.model(torch.zeros(back.input_shape)).shape == (1, 3)
