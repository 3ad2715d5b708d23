"""SqueezeNet 1.1 on torchvision's class, a gate after each Fire module."""

from __future__ import annotations

from torch import nn
from torchvision.models.squeezenet import Fire, SqueezeNet

from edgexray.models.attention import make_attention
from edgexray.models.common import scaled


class GatedFire(Fire):
    """A Fire module whose concatenated expand output passes through a gate (`.attn`)."""

    def __init__(self, inplanes, squeeze_planes, expand1x1_planes, expand3x3_planes, attention=None):
        super().__init__(inplanes, squeeze_planes, expand1x1_planes, expand3x3_planes)
        self.attn = make_attention(attention, expand1x1_planes + expand3x3_planes)

    def forward(self, x):
        return self.attn(super().forward(x))


def squeezenet1_1(num_classes: int, in_chans: int, width: float, attention: str | None) -> nn.Module:
    def fire(inplanes: int, squeeze: int, expand: int) -> GatedFire:
        e = scaled(expand, width)  # expand1x1 and expand3x3 are equal in SqueezeNet
        return GatedFire(inplanes, scaled(squeeze, width), e, e, attention)

    def out(expand: int) -> int:  # a Fire's output: both expands, concatenated
        return 2 * scaled(expand, width)

    def pool() -> nn.Module:
        return nn.MaxPool2d(3, 2, ceil_mode=True)

    model = SqueezeNet("1_1", num_classes=num_classes)
    # The same layout and indices as torchvision's 1_1 `features`, so ImageNet weights load.
    model.features = nn.Sequential(
        nn.Conv2d(in_chans, scaled(64, width), 3, stride=2),
        nn.ReLU(inplace=True),
        pool(),
        fire(scaled(64, width), 16, 64),
        fire(out(64), 16, 64),
        pool(),
        fire(out(64), 32, 128),
        fire(out(128), 32, 128),
        pool(),
        fire(out(128), 48, 192),
        fire(out(192), 48, 192),
        fire(out(192), 64, 256),
        fire(out(256), 64, 256),
    )
    model.classifier[1] = nn.Conv2d(out(256), num_classes, 1)
    # torchvision's initialization; the gates keep their own.
    convs = [model.features[0]] + [
        c for f in model.features if isinstance(f, Fire) for c in (f.squeeze, f.expand1x1, f.expand3x3)
    ]
    for conv in convs:
        nn.init.kaiming_uniform_(conv.weight)
        nn.init.zeros_(conv.bias)
    nn.init.normal_(model.classifier[1].weight, 0.0, 0.01)
    nn.init.zeros_(model.classifier[1].bias)
    return model
