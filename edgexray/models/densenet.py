"""DenseNet-121 on torchvision's class, a gate on each dense block's concatenated output."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn
from torchvision.models.densenet import DenseNet

from edgexray.models.attention import make_attention
from edgexray.models.common import scaled
from edgexray.models.layers import adapt_first_conv


def densenet121(num_classes: int, in_chans: int, width: float, attention: str | None) -> nn.Module:
    growth, init = scaled(32, width), scaled(64, width)
    blocks = (6, 12, 24, 16)
    model = DenseNet(growth_rate=growth, block_config=blocks, num_init_features=init, num_classes=num_classes)
    model.features.conv0 = adapt_first_conv(model.features.conv0, in_chans)
    if attention:
        # A new `attentionN` entry right after `denseblockN` (before its transition): torchvision's
        # names stay, and a _DenseBlock (a ModuleDict whose forward feeds every child) is untouched.
        layers, channels = OrderedDict(), init
        for name, module in model.features.named_children():
            layers[name] = module
            if name.startswith("denseblock"):
                i = int(name[len("denseblock") :])
                channels += blocks[i - 1] * growth
                layers[f"attention{i}"] = make_attention(attention, channels)
            elif name.startswith("transition"):
                channels //= 2
        model.features = nn.Sequential(layers)
    return model
