"""CBAM-guided structured pruning: the spine shrinks, every _cbam/_se architecture prunes, exports
to ONNX with equal outputs and round-trips through a checkpoint; bad input is explained."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgexray.models import create_model, list_models
from edgexray.prune import graph
from edgexray.prune.importance import get_importance, list_importances
from edgexray.prune.prune import PruneConfig, prune_model
from edgexray.runtime.errors import EdgeXrayError

SIZE = 32


@pytest.fixture(scope="module")
def xray_batches(chest_dir):
    """16 real chest X-rays (8 per class) at 64 px as calibration batches of (x, y)."""
    from edgexray.imageio import read_gray
    from edgexray.runtime.preprocess import resize_square

    xs, ys = [], []
    for label, cls in enumerate(("NORMAL", "PNEUMONIA")):
        for p in sorted((chest_dir / cls).iterdir())[:8]:
            xs.append(resize_square(read_gray(p), 64))
            ys.append(label)
    x = torch.from_numpy((np.stack(xs)[:, None] - 0.5) / 0.25).float()
    y = torch.tensor(ys)
    return [(x[:8], y[:8]), (x[8:], y[8:])]


def _resized(batches, size):
    return [(torch.nn.functional.interpolate(x, size=(size, size), mode="area"), y) for x, y in batches]


def test_resnet18_cbam_progressive_shrinks_the_spine(xray_batches):
    torch.manual_seed(0)
    model = create_model("resnet18_cbam", width=0.5)
    batches = _resized(xray_batches, SIZE)
    x = batches[0][0][:1]
    res = prune_model(model, x, PruneConfig(), batches)  # default: cbam, progressive
    rep = res.report
    before, after = rep["spine_widths"]["before"], rep["spine_widths"]["after"]
    assert list(before) == ["layer1", "layer2", "layer3", "layer4"]
    for stage in before:  # the residual spine itself shrinks, not only the inner convs
        assert after[stage] < before[stage], (stage, before, after)
    # widths really are what the layers hold, multiples of 8, by the stage's ratio
    assert after == {"layer1": 24, "layer2": 40, "layer3": 64, "layer4": 104}
    assert model.layer4[1].bn2.num_features == 104 and model.fc.in_features == 104
    assert model.layer4[1].attn.channel.mlp[2].out_channels == 104  # the gate shrank with them
    assert model.layer4[1].attn.channel.mlp[0].out_channels == 16  # its hidden width did not
    assert model.fc.out_features == 2  # the classifier's output never shrinks
    assert rep["reduction"]["params"] >= 0.559  # the seed paper's -55.9% parameters
    assert rep["reduction"]["macs"] >= 0.389  # and -38.9% MACs
    spine = {
        g["name"]: g
        for g in rep["groups"]
        if any(m.endswith("downsample.0") or m == "conv1" for m in g["members"])
    }
    assert len(spine) == 4 and all(g["scoring"] == "cbam-gate (2 gates)" for g in spine.values())
    inner = [g for g in rep["groups"] if g["name"].endswith(".conv1") and g["name"] != "conv1"]
    assert inner and all(g["scoring"] == "attention-weighted consumer magnitude" for g in inner)
    assert model(x).shape == (1, 2)


def test_without_pass_through_the_spine_is_silently_skipped():
    """Regression for DESIGN.md: torch-pruning alone drops every CBAM spine group."""
    import torch_pruning as tp

    model = create_model("resnet18_cbam", width=0.25)
    x = torch.randn(1, 1, SIZE, SIZE)
    plain = tp.DependencyGraph().build_dependency(model, x, verbose=False)
    ours = graph.build_graph(model, x)

    def half_of_layer2_spine(DG):  # the group torch-pruning would prune, and its check
        group = DG.get_pruning_group(
            model.layer2[0].downsample[0], tp.prune_conv_out_channels, list(range(16))
        )
        return DG.check_pruning_group(group), {DG._module2name.get(d.target.module) for d, _ in group}

    ok, _ = half_of_layer2_spine(plain)
    assert not ok  # dropped without a warning: the spine would never shrink
    ok, members = half_of_layer2_spine(ours)
    assert (
        ok
        and {
            "layer2.0.conv2",
            "layer2.1.conv2",
            "layer3.0.conv1",
            "layer2.1.attn.spatial",
            "layer2.1.attn.channel.mlp.2",
        }
        <= members
    )


def test_cbam_importance_is_the_mean_gate_value(xray_batches):
    model = create_model("resnet18_cbam", width=0.25).eval()
    x = xray_batches[0][0][:1]
    DG = graph.build_graph(model, x)
    crit = get_importance("cbam")
    crit.prepare(model, xray_batches, DG, x)
    gate = model.layer3[1].attn.channel
    values = []
    h = gate.sigmoid.register_forward_hook(lambda m, i, o: values.append(o.detach()))
    with torch.no_grad():
        for xb, _ in xray_batches:
            model(xb)
    h.remove()
    expected = torch.cat(values).mean(dim=(0, 2, 3)).double()
    assert torch.allclose(crit.gate_mean[gate.mlp[2]], expected, atol=1e-6)
    stages = graph.module_stages(model, x)
    spine = next(
        g for g in graph.prunable_groups(model, DG, stages) if "layer3.1.attn.channel.mlp.2" in g.members
    )
    score = crit(spine.group)
    gates = [model.layer3[0].attn.channel.mlp[2], gate.mlp[2]]
    want = sum(crit.gate_mean[g] / crit.gate_mean[g].mean() for g in gates) / 2
    assert torch.allclose(score.double(), want, atol=1e-5)


ATTENTION_ARCHS = list_models("cbam") + list_models("se")
PRUNABLE = [a for a in ATTENTION_ARCHS if not a.startswith("shufflenet")]  # test_prune_shufflenet.py


@pytest.mark.slow
@pytest.mark.parametrize("arch", PRUNABLE)
def test_every_attention_arch_prunes_exports_and_reloads(arch, xray_batches, tmp_path):
    import onnxruntime as ort

    from edgexray.checkpoint import load_checkpoint, save_checkpoint
    from edgexray.export.onnx import torch2onnx
    from edgexray.runtime.preprocess import Preprocess

    torch.manual_seed(0)
    model = create_model(arch, width=0.25)
    size = 64 if arch.startswith("alexnet") else SIZE  # AlexNet's stride-4 stem + 3 pools need 64
    batches = _resized(xray_batches, size)
    x = batches[0][0][:2]
    method = "cbam" if arch.endswith("_cbam") else "se"
    cfg = PruneConfig(method=method, schedule="one-shot", ratio=0.5, round_to=1, calib_images=8)
    res = prune_model(model, x[:1], cfg, batches)
    # each group keeps half its channels: a layer between two pruned groups keeps ~1/4 of its
    # MACs; stem, classifier and gates keep more, so at least a half of all MACs must go
    assert res.report["reduction"]["macs"] >= 0.5, res.report["reduction"]
    assert res.report["after"]["macs"] < res.report["before"]["macs"]
    model.eval()
    with torch.no_grad():
        out = model(x).numpy()
    assert out.shape == (2, 2)
    onnx_path = torch2onnx(model, tmp_path / "m.onnx", input_shape=(1, 1, size, size), simplify=False)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    ort_out = np.concatenate([sess.run(None, {name: x[i : i + 1].numpy()})[0] for i in range(2)])
    assert np.abs(ort_out - out).max() < 1e-4
    ckpt = save_checkpoint(
        tmp_path / "m.pt",
        model,
        arch=arch,
        model_options={"num_classes": 2, "in_chans": 1, "width": 0.25},
        class_names=["NORMAL", "PNEUMONIA"],
        preprocess=Preprocess(size=size, channels=1, mean=(0.5,), std=(0.25,)),
    )
    back = load_checkpoint(ckpt).model
    assert graph.conv_widths(back) == graph.conv_widths(model)
    with torch.no_grad():
        assert torch.equal(back(x), model(x))


def test_every_criterion_prunes_and_records_how(xray_batches):
    batches = _resized(xray_batches, SIZE)
    x = batches[0][0][:1]
    for name in list_importances():
        torch.manual_seed(0)
        arch = "resnet18_se" if name == "se" else "resnet18_cbam"
        model = create_model(arch, width=0.25)
        res = prune_model(model, x, PruneConfig(method=name, schedule="one-shot", ratio=0.5), batches)
        assert res.report["reduction"]["macs"] > 0.5, name
        assert all(name in g["scoring"] or "consumer" in g["scoring"] for g in res.report["groups"]), (
            name,
            res.report["groups"],
        )


def test_importance_picks_the_channels_it_scores_highest(xray_batches):
    """Channels kept are exactly the top-scored ones of each group (cbam)."""
    batches = _resized(xray_batches, SIZE)
    x = batches[0][0][:1]
    model = create_model("resnet18_cbam", width=0.25).eval()
    DG = graph.build_graph(model, x)
    crit = get_importance("cbam")
    crit.prepare(model, batches, DG, x)
    gate_mean = crit.gate_mean[model.layer4[1].attn.channel.mlp[2]].clone()
    score = (
        gate_mean / gate_mean.mean()
        + crit.gate_mean[model.layer4[0].attn.channel.mlp[2]]
        / crit.gate_mean[model.layer4[0].attn.channel.mlp[2]].mean()
    ) / 2
    keep = torch.sort(torch.argsort(score, descending=True)[:64]).values
    expected_w = model.layer4[1].bn2.weight.detach()[keep].clone()
    prune_model(model, x, PruneConfig(schedule="one-shot", ratio=0.5), batches)
    assert torch.equal(model.layer4[1].bn2.weight.detach(), expected_w)


@pytest.mark.slow
def test_target_search_lands_within_one_point():
    model = create_model("resnet18_cbam", width=1.0)
    x = torch.randn(1, 1, SIZE, SIZE)
    res = prune_model(model, x, PruneConfig(method="l1", schedule="target", target_macs=0.7))
    assert abs(res.report["reduction"]["macs"] - 0.7) <= 0.01
    assert res.report["target"]["kind"] == "macs"
    res = prune_model(
        create_model("resnet18_cbam", width=0.5), x, PruneConfig(method="l1", target_params=0.6, round_to=1)
    )
    assert abs(res.report["reduction"]["params"] - 0.6) <= 0.01


def test_iterative_steps_call_finetune_between(xray_batches):
    batches = _resized(xray_batches, SIZE)
    x = batches[0][0][:1]
    calls = []

    def finetune(model, step):
        calls.append((step, model.layer4[0].conv2.out_channels))
        return model

    res = prune_model(
        create_model("resnet18_cbam", width=0.25),
        x,
        PruneConfig(schedule="one-shot", ratio=0.5, steps=2, round_to=1),
        batches,
        finetune=finetune,
    )
    assert calls == [(1, 96), (2, 64)]
    assert [s["finetuned"] for s in res.report["steps"]] == [True, True]


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"ratio": 1.0, "schedule": "one-shot"}, r"ratio=1.0 is outside \(0, 1\)"),
        ({"ratio": 0.0, "schedule": "one-shot"}, r"ratio=0.0 is outside \(0, 1\)"),
        ({"target_macs": 1.5}, r"target_macs=1.5 is outside"),
        ({"method": "cbm"}, r"unknown pruning method 'cbm'; did you mean 'cbam'"),
        ({"schedule": "progresive"}, r"did you mean 'progressive'"),
        ({"schedule": "target"}, r"needs target_macs or target_params"),
        ({"stage_ratios": (0.2, 0.3)}, r"need 4 fractions"),
    ],
)
def test_bad_config_is_explained(kw, match):
    with pytest.raises(EdgeXrayError, match=match):
        PruneConfig(**kw).validate()


def test_unreachable_target_is_explained():
    model = create_model("resnet18_cbam", width=0.25)
    with pytest.raises(EdgeXrayError, match=r"cannot be reached: at most .* max_ratio=0.5"):
        prune_model(
            model, torch.randn(1, 1, SIZE, SIZE), PruneConfig(method="l1", target_macs=0.95, max_ratio=0.5)
        )


def test_cbam_on_a_model_without_gates_names_the_fix(xray_batches):
    batches = _resized(xray_batches, SIZE)
    with pytest.raises(EdgeXrayError, match=r"use --method l1 .* _cbam architecture"):
        prune_model(create_model("resnet18", width=0.25), batches[0][0][:1], PruneConfig(), batches)
    with pytest.raises(EdgeXrayError, match=r"use --method se"):
        prune_model(create_model("resnet18_se", width=0.25), batches[0][0][:1], PruneConfig(), batches)


def test_missing_calibration_data_is_explained():
    x = torch.randn(1, 1, SIZE, SIZE)
    with pytest.raises(EdgeXrayError, match=r"needs calibration images but none were given"):
        prune_model(create_model("resnet18_cbam", width=0.25), x, PruneConfig())
    with pytest.raises(EdgeXrayError, match=r"yielded none"):
        prune_model(create_model("resnet18_cbam", width=0.25), x, PruneConfig(), [])
