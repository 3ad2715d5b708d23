"""PyTorch logits on numpy arrays: the one helper every stage uses for it."""

from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def predict_logits(model: torch.nn.Module, inputs: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """float32 (N, classes) logits of `model` (put in eval mode) for normalized NCHW `inputs`,
    in batches of `batch_size` (the same batches everywhere, so the same floats)."""
    model.eval()
    outs = [
        model(torch.from_numpy(np.ascontiguousarray(inputs[i : i + batch_size], np.float32)))
        for i in range(0, len(inputs), batch_size)
    ]
    return torch.cat(outs).numpy().astype(np.float32)
