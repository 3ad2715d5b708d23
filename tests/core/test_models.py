"""Model zoo: every registered architecture builds, runs, scales, loads weights and exports."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from edgexray.models import CBAM, SEGate, create_model, list_models, model_info
from edgexray.models.layers import AdaptiveAvgPool2d
from edgexray.runtime.errors import EdgeXrayError

ALL = list_models()
BASES = sorted({model_info(n).base for n in ALL})
TV_NAME = {"vgg16": "vgg16_bn"}  # our vgg16 is torchvision's vgg16_bn


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def first_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the test machine's cores are shared
    yield
    torch.set_num_threads(threads)


def test_registry_has_every_family_with_attention_variants():
    for base in (
        "resnet18",
        "resnet50",
        "vgg16",
        "mobilenet_v2",
        "efficientnet_b0",
        "efficientnet_b3",
        "densenet121",
        "squeezenet1_1",
        "shufflenet_v2_x1_0",
        "alexnet",
    ):
        assert base in ALL and f"{base}_cbam" in ALL
        # EfficientNet's blocks already hold SE, so it has no _se variant.
        assert (f"{base}_se" in ALL) == (not base.startswith("efficientnet"))


@pytest.mark.parametrize("name", ALL)
def test_builds_and_runs_at_64px(name):
    model = create_model(name, num_classes=3, in_chans=1, width=0.25).eval()
    assert first_conv(model).in_channels == 1
    with torch.no_grad():
        out = model(torch.randn(2, 1, 64, 64))
    assert out.shape == (2, 3) and torch.isfinite(out).all()

    kinds = {type(m) for m in model.modules()}
    attention = model_info(name).attention
    assert (CBAM in kinds) == (attention == "cbam")
    assert (SEGate in kinds) == (attention == "se")

    # `width` scales the network: counted on the meta device, so nothing is allocated.
    with torch.device("meta"):
        half, full = (n_params(create_model(name, num_classes=3, width=w)) for w in (0.5, 1.0))
    assert n_params(model) < half < full


@pytest.mark.parametrize("base", BASES)
def test_three_channel_input(base):
    model = create_model(base, num_classes=3, in_chans=3, width=0.25).eval()
    assert first_conv(model).in_channels == 3
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 3)


@pytest.mark.parametrize("base", BASES)
def test_parameter_names_match_torchvision(base):
    """At width 1.0 with 3 channels and 1000 classes every variant holds exactly torchvision's
    tensors (the gates come on top), so torchvision's ImageNet weights load."""
    with torch.device("meta"):
        reference = torchvision.models.get_model(TV_NAME.get(base, base)).state_dict()
        for name in (n for n in ALL if model_info(n).base == base):
            own = create_model(name, num_classes=1000, in_chans=3).state_dict()
            missing = sorted(k for k in reference if k not in own)
            assert not missing, f"{name} lacks {missing[:5]}"
            for key, value in reference.items():
                assert own[key].shape == value.shape, f"{name} {key}: {own[key].shape} vs {value.shape}"
            extra = set(own) - set(reference)
            if model_info(name).attention:
                assert extra, f"{name} has no gate parameters"
            else:
                assert not extra, f"{name} has tensors torchvision lacks: {sorted(extra)[:5]}"


def _legacy_densenet_names(state: dict) -> dict:
    """The names in torchvision's densenet121 .pth file: `norm.1` for `norm1` and so on."""
    import re

    return {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k): v for k, v in state.items()}


@pytest.mark.parametrize("base", ["mobilenet_v2", "squeezenet1_1", "densenet121"])
def test_pretrained_file_adapts_first_conv(tmp_path, base):
    torch.manual_seed(0)
    rgb = create_model(base, num_classes=1000, in_chans=3, width=1.0).state_dict()
    saved = _legacy_densenet_names(rgb) if base == "densenet121" else rgb
    if base == "densenet121":
        assert saved.keys() != rgb.keys()  # the file really uses the old names
    path = tmp_path / f"{base}.pth"
    torch.save(saved, path)

    gray = create_model(f"{base}_cbam", num_classes=3, in_chans=1, weights=path)
    own = gray.state_dict()
    conv_key = next(k for k, v in rgb.items() if v.ndim == 4)  # the first conv's weight
    assert own[conv_key].shape[1] == 1
    torch.testing.assert_close(own[conv_key], rgb[conv_key].sum(dim=1, keepdim=True))
    copied = [k for k, v in rgb.items() if k != conv_key and k in own and own[k].shape == v.shape]
    assert len(copied) > 0.9 * len(rgb)
    for key in copied:
        torch.testing.assert_close(own[key], rgb[key])


def test_unknown_name_suggests_the_closest():
    with pytest.raises(EdgeXrayError, match="mobilenet_v2"):
        create_model("mobilenetv2")
    with pytest.raises(EdgeXrayError, match="efficientnet_b3"):
        create_model("efficientnet_b3_se")


@pytest.mark.parametrize(
    "kwargs, received",
    [({"num_classes": 1}, "num_classes=1"), ({"in_chans": 2}, "in_chans=2"), ({"width": 0}, "width=0")],
)
def test_bad_arguments(kwargs, received):
    with pytest.raises(EdgeXrayError, match=received):
        create_model("squeezenet1_1_cbam", **kwargs)


@pytest.mark.parametrize("size_in, size_out", [(7, 7), (14, 7), (1, 6), (2, 6), (12, 6)])
def test_adaptive_pool_matches_torch_when_sizes_divide(size_in, size_out):
    x = torch.randn(2, 4, size_in, size_in)
    torch.testing.assert_close(AdaptiveAvgPool2d(size_out)(x), nn.AdaptiveAvgPool2d(size_out)(x))


def test_adaptive_pool_area_average_otherwise():
    x = torch.randn(2, 4, 2, 5)
    y = AdaptiveAvgPool2d(7)(x)
    assert y.shape == (2, 4, 7, 7)
    # every output cell covers the same area, so the mean is kept
    torch.testing.assert_close(y.mean(dim=(2, 3)), x.mean(dim=(2, 3)))


# One per builder: resnet50 and efficientnet_b3 share resnet18's and efficientnet_b0's code.
ONNX_BASES = [b for b in BASES if b not in ("resnet50", "efficientnet_b3")]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter (no onnxscript here)
@pytest.mark.parametrize("base", ONNX_BASES)
def test_cbam_variant_exports_to_onnx(base):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = create_model(f"{base}_cbam", num_classes=3, in_chans=1, width=0.25).eval()
    x = torch.randn(1, 1, 64, 64)
    buf = io.BytesIO()
    torch.onnx.export(model, (x,), buf, opset_version=17, dynamo=False, input_names=["x"])
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * float(np.abs(want).max()))
