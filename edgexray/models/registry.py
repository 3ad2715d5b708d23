"""The model registry: every architecture plain, with CBAM (`<name>_cbam`) and with SE (`<name>_se`).

A builder takes (num_classes, in_chans, width, attention) and returns an nn.Module; attention is
None, "cbam" or "se". Pretrained ImageNet weights come from torchvision's cache or a local file.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edgexray.runtime.errors import EdgeXrayError, first_line, unknown_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArchSpec:
    name: str  # registered name, e.g. "resnet18_cbam"
    base: str  # architecture without attention, e.g. "resnet18"
    attention: str | None  # None, "cbam" or "se"
    builder: Callable[..., nn.Module]
    tv_weights: str | None  # torchvision weights enum, e.g. "ResNet18_Weights.IMAGENET1K_V1"


_REGISTRY: dict[str, ArchSpec] = {}


def register(
    base: str,
    builder: Callable[..., nn.Module],
    *,
    attentions=(None, "cbam", "se"),
    tv_weights: str | None = None,
) -> None:
    for attention in attentions:
        name = f"{base}_{attention}" if attention else base
        _REGISTRY[name] = ArchSpec(name, base, attention, builder, tv_weights)


def list_models(attention: str | None | bool = False) -> list[str]:
    """All names, or only those with the given attention ("cbam", "se", None for plain)."""
    return sorted(n for n, s in _REGISTRY.items() if attention is False or s.attention == attention)


def model_info(name: str) -> ArchSpec:
    if name not in _REGISTRY:
        raise unknown_name("architecture", name, _REGISTRY)
    return _REGISTRY[name]


def create_model(
    name: str,
    num_classes: int = 2,
    in_chans: int = 1,
    width: float = 1.0,
    pretrained: bool = False,
    weights: str | Path | None = None,
) -> nn.Module:
    """Build a registered architecture; optionally load ImageNet weights (torchvision cache or
    a local state-dict file), adapting the first conv to `in_chans`."""
    spec = model_info(name)
    if num_classes < 2:
        raise EdgeXrayError(f"num_classes={num_classes}; a classifier needs at least 2 classes")
    if in_chans not in (1, 3):
        raise EdgeXrayError(f"in_chans={in_chans}; allowed: 1 (grayscale) or 3 (RGB-replicated)")
    if not 0 < width <= 4:
        raise EdgeXrayError(f"width={width}; allowed: 0 < width <= 4 (1.0 = the published size)")
    model = spec.builder(num_classes=num_classes, in_chans=in_chans, width=width, attention=spec.attention)
    if pretrained or weights:
        if width != 1.0:
            raise EdgeXrayError(f"pretrained weights need width=1.0, got width={width}")
        load_pretrained(model, _pretrained_state(spec, weights))
    return model


def _pretrained_state(spec: ArchSpec, weights) -> dict:
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise EdgeXrayError(
                f"weights file {str(path)!r} not found; pass a torchvision "
                f"state-dict file (.pth) for {spec.base}"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch.load raises many types on a damaged or foreign file
            raise EdgeXrayError(
                f"weights file {str(path)!r} cannot be read as weights "
                f"({first_line(e)}); pass a torchvision state-dict file (.pth) "
                f"for {spec.base}, or drop --weights"
            ) from None
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        if (
            not isinstance(state, dict)
            or not state
            or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
        ):
            raise EdgeXrayError(
                f"weights file {str(path)!r} is not a state dict (a dict of "
                f"tensors); pass a torchvision .pth file for {spec.base}"
            )
        return state
    if not spec.tv_weights:
        raise EdgeXrayError(
            f"no ImageNet weights are known for {spec.base}; train from scratch or pass --weights FILE"
        )
    from torchvision.models import get_weight

    try:
        return get_weight(spec.tv_weights).get_state_dict(progress=False)
    except Exception as e:  # offline machine without the torchvision cache
        raise EdgeXrayError(
            f"could not load {spec.tv_weights} ({e.__class__.__name__}); on an "
            "offline machine download the .pth elsewhere and pass --weights FILE"
        ) from e


# torchvision's DenseNet .pth files keep pre-1.0 names ("denselayer1.norm.1.weight" for
# "denselayer1.norm1.weight"); torchvision renames them on load, and so do we.
_LEGACY_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def load_pretrained(model: nn.Module, state: dict) -> None:
    """Copy every tensor whose name and shape match; adapt the first conv's input channels;
    leave attention gates and a classifier of another class count at their initialization."""
    own = model.state_dict()
    loaded = 0
    for key, value in state.items():
        key = _LEGACY_DENSENET_KEY.sub(r"\1\2", key)
        if key not in own:
            continue
        target = own[key]
        if value.shape == target.shape:
            own[key] = value
        elif (
            value.ndim == 4
            and value.shape[1] == 3
            and target.shape[1] == 1
            and value.shape[0] == target.shape[0]
        ):
            own[key] = value.sum(dim=1, keepdim=True)  # RGB filters -> one gray filter
        else:
            continue
        loaded += 1
    if loaded == 0:
        raise EdgeXrayError(
            "the weights file matched none of the model's layers; is it for another architecture?"
        )
    model.load_state_dict(own)
    log.info("loaded %d pretrained tensors", loaded)


def _register_builtin() -> None:
    from edgexray.models import resnet

    register("resnet18", resnet.resnet18, tv_weights="ResNet18_Weights.IMAGENET1K_V1")
    register("resnet50", resnet.resnet50, tv_weights="ResNet50_Weights.IMAGENET1K_V1")
    try:  # the torchvision-based families (edgexray/models/zoo.py)
        zoo = importlib.import_module("edgexray.models.zoo")
    except ModuleNotFoundError as e:
        if e.name != "edgexray.models.zoo":
            raise
    else:
        zoo.register_all(register)


_register_builtin()
