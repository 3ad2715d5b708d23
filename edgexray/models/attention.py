"""Attention gates that plug into a block: CBAM (Woo et al., 2018) and Squeeze-and-Excitation.

Gates multiply their input, so they keep the channel count; pruning shrinks them together with
the channels they gate. The sigmoid is a submodule so pruning can hook the gate values.
"""

from __future__ import annotations

import torch
from torch import nn


def _hidden(channels: int, reduction: int) -> int:
    return max(channels // reduction, 8)


class ChannelGate(nn.Module):
    """gate = sigmoid(MLP(avgpool(x)) + MLP(maxpool(x))); returns x * gate."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = _hidden(channels, reduction)
        # 1x1 convs rather than Linear: no flatten/reshape, so the dependency graph stays simple.
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1)
        )
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = torch.mean(x, dim=(2, 3), keepdim=True)
        mx = torch.amax(x, dim=(2, 3), keepdim=True)
        return x * self.sigmoid(self.mlp(avg) + self.mlp(mx))


class SpatialGate(nn.Module):
    """gate = sigmoid(conv7x7([mean_c(x); max_c(x)])); returns x * gate. Channels pass through."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([torch.mean(x, dim=1, keepdim=True), torch.amax(x, dim=1, keepdim=True)], 1)
        return x * self.sigmoid(self.bn(self.conv(pooled)))


class CBAM(nn.Module):
    """Channel gate, then spatial gate."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7):
        super().__init__()
        self.channel = ChannelGate(channels, reduction)
        self.spatial = SpatialGate(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))


class SEGate(nn.Module):
    """Squeeze-and-Excitation: gate = sigmoid(MLP(avgpool(x))); returns x * gate."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = _hidden(channels, reduction)
        self.fc = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1)
        )
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(self.fc(torch.mean(x, dim=(2, 3), keepdim=True)))


ATTENTION = {"cbam": CBAM, "se": SEGate}


def make_attention(kind: str | None, channels: int) -> nn.Module:
    """The gate for `kind` ("cbam", "se") or an identity when kind is None."""
    return ATTENTION[kind](channels) if kind else nn.Identity()


def channel_gates(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every CBAM channel gate and SE gate in the model, by qualified name."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (ChannelGate, SEGate))]
