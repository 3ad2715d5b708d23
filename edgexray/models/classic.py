"""Plain conv stacks with a fully connected head: VGG16 (with batch norm) and AlexNet.

torchvision's VGG/AlexNet classes hard-code 512/256 input and 4096 hidden features in the
head, so these mirror their module names (`features.N`, `avgpool`, `classifier.N`, hence
torchvision weights load) with widths that scale. The gate sits on each conv stage's output,
in the max-pool's slot (`features.6` becomes `features.6.attn` + `features.6.pool`).
"""

from __future__ import annotations

from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from edgexray.models.attention import make_attention
from edgexray.models.common import scaled
from edgexray.models.layers import AdaptiveAvgPool2d, adapt_first_conv, gate_then


def _gate_stages(features: nn.Sequential, attention: str | None) -> nn.Sequential:
    """Put a gate before every max-pool, sized by the last conv before it."""
    channels = None
    for i, m in enumerate(features):
        if isinstance(m, nn.Conv2d):
            channels = m.out_channels
        elif isinstance(m, nn.MaxPool2d):
            features[i] = gate_then(make_attention(attention, channels), m)
    return features


def _head(
    in_features: int, hidden: int, num_classes: int, dropout: float = 0.5, dropout_first: bool = False
) -> nn.Sequential:
    layers = [
        nn.Linear(in_features, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, hidden),
        nn.ReLU(inplace=True),
    ]
    if dropout_first:  # AlexNet: Dropout, Linear, ReLU, Dropout, Linear, ReLU, Linear
        layers = [nn.Dropout(dropout)] + layers
    else:  # VGG: Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers, nn.Linear(hidden, num_classes))


class ConvStackNet(nn.Module):
    """features -> adaptive avg pool to `pool` x `pool` -> flatten -> classifier."""

    def __init__(self, features: nn.Sequential, pool: int, classifier: nn.Sequential):
        super().__init__()
        self.features = features
        self.avgpool = AdaptiveAvgPool2d(pool)
        self.classifier = classifier

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def vgg16(num_classes: int, in_chans: int, width: float, attention: str | None) -> nn.Module:
    """VGG16 with batch norm (torchvision `vgg16_bn`, config "D")."""
    cfg = [v if v == "M" else scaled(v, width) for v in cfgs["D"]]
    features = make_layers(cfg, batch_norm=True)
    features[0] = adapt_first_conv(features[0], in_chans)
    model = ConvStackNet(
        _gate_stages(features, attention), 7, _head(cfg[-2] * 7 * 7, scaled(4096, width), num_classes)
    )
    for m in model.modules():  # torchvision's VGG initialization
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
    return model


def alexnet(num_classes: int, in_chans: int, width: float, attention: str | None) -> nn.Module:
    """AlexNet (torchvision's one-GPU variant: 64-192-384-256-256 filters)."""
    c = [scaled(v, width) for v in (64, 192, 384, 256, 256)]
    features = nn.Sequential(
        nn.Conv2d(in_chans, c[0], 11, 4, 2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(c[0], c[1], 5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(c[1], c[2], 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(c[2], c[3], 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(c[3], c[4], 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2),
    )
    return ConvStackNet(
        _gate_stages(features, attention),
        6,
        _head(c[4] * 6 * 6, scaled(4096, width), num_classes, dropout_first=True),
    )
