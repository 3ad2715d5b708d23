"""Small layers shared by the torchvision-based families (edgexray/models/zoo.py)."""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


def adapt_first_conv(conv: nn.Conv2d, in_chans: int) -> nn.Conv2d:
    """`conv` itself, or a fresh copy of its geometry taking `in_chans` inputs.

    Pretrained RGB filters are summed into the gray filter later by `load_pretrained`.
    """
    if conv.in_channels == in_chans:
        return conv
    new = nn.Conv2d(
        in_chans,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        conv.bias is not None,
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    return new


def gate_then(attn: nn.Module, pool: nn.Module) -> nn.Module:
    """The gate, then the stage's pooling, in the pooling's slot of a Sequential.

    The pooling has no parameters, so every conv/bn keeps torchvision's index (`features.7`).
    """
    if isinstance(attn, nn.Identity):
        return pool
    return nn.Sequential(OrderedDict(attn=attn, pool=pool))


class AdaptiveAvgPool2d(nn.Module):
    """`nn.AdaptiveAvgPool2d(size)` that exports to ONNX for every input size.

    The TorchScript ONNX exporter refuses adaptive pooling unless the input is a multiple of
    the output (a VGG at 64 px reaches its 7x7 pool with 2x2). Here the input is first
    replicated (nearest) by size/gcd, then average-pooled by input/gcd: identical to PyTorch's
    adaptive pool when one size divides the other (224 px VGG/AlexNet: identity; 64 px AlexNet:
    1 -> 6 replication), an area-weighted average otherwise. Shapes are read at trace time.
    """

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():  # export traces one input size on purpose
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            h, w = int(x.shape[-2]), int(x.shape[-1])
        gh, gw = math.gcd(h, self.size), math.gcd(w, self.size)
        up_h, up_w = self.size // gh, self.size // gw
        if up_h > 1 or up_w > 1:
            x = F.interpolate(x, size=(h * up_h, w * up_w), mode="nearest")
        kh, kw = h // gh, w // gw
        if kh > 1 or kw > 1:
            x = F.avg_pool2d(x, (kh, kw))
        return x

    def extra_repr(self) -> str:
        return f"size={self.size}"
