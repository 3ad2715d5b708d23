"""Grad-CAM (Selvaraju et al., 2017) on the last spatial conv layer of any registered model."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def last_spatial_conv(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """The last Conv2d whose output is a real feature map (more than one channel and pixel);
    attention-gate convs (1x1 pooled maps, 1-channel spatial gate) are skipped."""
    found = []
    hooks = [
        m.register_forward_hook(
            lambda m, i, o: found.append(m) if o.shape[1] > 1 and o.shape[2] * o.shape[3] > 1 else None
        )
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]
    with torch.no_grad():
        model(example)
    for h in hooks:
        h.remove()
    return found[-1]


def gradcam(
    model: nn.Module, x: torch.Tensor, target: int | None = None, layer: nn.Module | None = None
) -> tuple[np.ndarray, int]:
    """Heatmap in [0, 1] at the input's size for one image (1, C, H, W), and the class explained."""
    model.eval()
    layer = layer or last_spatial_conv(model, x)
    store = {}

    def keep(module, inputs, output):
        store["act"] = output
        output.register_hook(lambda g: store.__setitem__("grad", g))

    hook = layer.register_forward_hook(keep)
    try:
        x = x.clone().requires_grad_(True)
        logits = model(x)
        target = int(logits.argmax(1)) if target is None else target
        model.zero_grad()
        logits[0, target].backward()
    finally:
        hook.remove()
    weights = store["grad"].mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * store["act"]).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False)[0, 0]
    cam = cam.detach().numpy()
    return (cam / cam.max() if cam.max() > 0 else cam).astype(np.float32), target
