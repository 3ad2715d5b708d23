"""Mobile families on torchvision's classes: MobileNetV2, EfficientNet-B0/B3, ShuffleNetV2.

Gates are appended at the end of an existing Sequential, so every torchvision parameter keeps
its name and ImageNet weights load into the _cbam/_se variants too.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import efficientnet as tv_eff
from torchvision.models import shufflenetv2 as tv_shuffle
from torchvision.models.mobilenetv2 import InvertedResidual as MBv2Block
from torchvision.models.mobilenetv2 import MobileNetV2
from torchvision.models.shufflenetv2 import ShuffleNetV2

from edgexray.models.attention import make_attention
from edgexray.models.common import scaled
from edgexray.models.layers import adapt_first_conv


def mobilenet_v2(num_classes: int, in_chans: int, width: float, attention: str | None) -> nn.Module:
    model = MobileNetV2(num_classes=num_classes, width_mult=width)
    model.features[0][0] = adapt_first_conv(model.features[0][0], in_chans)
    if attention:
        for block in model.features:
            if isinstance(block, MBv2Block):  # gate the block's projection, before `x + conv(x)`
                block.conv.append(make_attention(attention, block.out_channels))
    return model


def _efficientnet(
    arch: str,
    width_mult: float,
    depth_mult: float,
    dropout: float,
    num_classes: int,
    in_chans: int,
    width: float,
    attention: str | None,
) -> nn.Module:
    setting, last_channel = tv_eff._efficientnet_conf(
        arch, width_mult=width_mult * width, depth_mult=depth_mult
    )
    model = tv_eff.EfficientNet(setting, dropout, num_classes=num_classes, last_channel=last_channel)
    model.features[0][0] = adapt_first_conv(model.features[0][0], in_chans)
    if attention:
        for block in model.modules():
            if isinstance(block, tv_eff.MBConv):  # after the projection, before the residual sum
                block.block.append(make_attention(attention, block.out_channels))
    return model


# EfficientNet's MBConv already holds a squeeze-and-excitation gate on its expanded channels,
# so there is no `efficientnet_*_se` (a second SE at the block output would only repeat it);
# `_cbam` adds CBAM at each block output as for the other families.
def efficientnet_b0(num_classes: int, in_chans: int, width: float, attention: str | None) -> nn.Module:
    return _efficientnet("efficientnet_b0", 1.0, 1.0, 0.2, num_classes, in_chans, width, attention)


def efficientnet_b3(num_classes: int, in_chans: int, width: float, attention: str | None) -> nn.Module:
    return _efficientnet("efficientnet_b3", 1.2, 1.4, 0.3, num_classes, in_chans, width, attention)


class ChannelShuffle(nn.Module):
    """torchvision's channel_shuffle as a module: the pruning graph sees one node it can stop at
    (graph.py) instead of a view/transpose/view it cannot trace."""

    def __init__(self, groups: int = 2):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        return tv_shuffle.channel_shuffle(x, self.groups)


class ShuffleBlock(tv_shuffle.InvertedResidual):
    """torchvision's ShuffleNetV2 block (same parameters and names) with the shuffle as a module."""

    def __init__(self, inp: int, oup: int, stride: int):
        super().__init__(inp, oup, stride)
        self.shuffle = ChannelShuffle(2)

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return self.shuffle(out)


def shufflenet_v2_x1_0(num_classes: int, in_chans: int, width: float, attention: str | None) -> nn.Module:
    """ShuffleNetV2 1.0x; `width` scales the stages (1.0 = the published 116/232/464), the
    1024-channel last conv shrinks no further, as in the paper's 0.5x-1.5x models."""
    stages = [24, 116, 232, 464]
    if width != 1.0:  # 116 is no multiple of 8: only width 1.0 gives the published widths
        stages = [scaled(c, width) for c in stages]
    model = ShuffleNetV2(
        [4, 8, 4],
        stages + [scaled(1024, max(width, 1.0))],
        num_classes=num_classes,
        inverted_residual=ShuffleBlock,
    )
    model.conv1[0] = adapt_first_conv(model.conv1[0], in_chans)
    if attention:
        for name, channels in zip(("stage2", "stage3", "stage4"), stages[1:]):
            getattr(model, name).append(make_attention(attention, channels))  # on the stage output
    return model
