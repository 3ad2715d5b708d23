"""Global unstructured L1 magnitude pruning (`--method l1-unstructured`): the weights of smallest
|w| across every conv and linear layer are zeroed. One-shot (`rounds=1`: `ratio` of all weights)
or iterative (`rounds=N`: `ratio` of the weights still left in each round, fine-tuned between,
e.g. 20% per round), masks made permanent at the end (torch.nn.utils.prune.remove).

The network keeps its shape: parameters counted, MACs and dense-runtime latency do not change.
What shrinks is the number of non-zero weights, and the file once compressed (zeros compress).
"""

from __future__ import annotations

import io
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import prune as tprune

from edgexray.prune import measure

METHOD = "l1-unstructured"
DENSE_NOTE = (
    "unstructured pruning zeroes weights but keeps every layer's shape: dense runtimes "
    "(PyTorch, ONNX Runtime, TFLite/XNNPACK) multiply the zeros too, so MACs and latency "
    "do not improve; only the compressed file shrinks"
)


def prunable_weights(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def zero_fractions(model: nn.Module) -> dict[str, dict]:
    """Per conv/linear layer: weights, zeros and their fraction."""
    out = {}
    for name, m in prunable_weights(model):
        w = m.weight.detach()
        zeros = int((w == 0).sum())
        out[name] = {"weights": int(w.numel()), "zeros": zeros, "fraction": zeros / w.numel()}
    return out


def nonzero_weights(model: nn.Module) -> int:
    """Non-zero conv and linear weights."""
    return sum(int((m.weight.detach() != 0).sum()) for _, m in prunable_weights(model))


def state_dict_sizes(model: nn.Module) -> dict:
    """The serialized weights as stored (torch.save) and zip-compressed (deflate, level 9)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    raw = buf.getvalue()
    return {"stored_bytes": len(raw), "zipped_bytes": measure.zipped_bytes(raw)}


def _global_round(model: nn.Module, amount: float) -> None:
    # repeated calls on masked weights prune `amount` of the weights still unmasked
    params = [(m, "weight") for _, m in prunable_weights(model)]
    tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=amount)


def _sparsity(layers: dict) -> float:
    return sum(v["zeros"] for v in layers.values()) / sum(v["weights"] for v in layers.values())


def prune_unstructured(
    model: nn.Module,
    example_input: torch.Tensor,
    cfg,
    finetune: Callable[[nn.Module, int], nn.Module] | None = None,
):
    """Prune `model` in place with cfg.ratio per round for cfg.rounds rounds; returns PruneResult."""
    from edgexray.prune.prune import PruneResult

    model.eval()
    example_input = example_input[:1]
    before = {**measure.count(model, example_input), **state_dict_sizes(model)}
    layers_before = zero_fractions(model)
    rounds = []
    for r in range(1, cfg.rounds + 1):
        _global_round(model, cfg.ratio)
        entry = {"round": r, "sparsity": _sparsity(zero_fractions(model)), "finetuned": False}
        if finetune is not None:  # the masks stay on while fine-tuning: zeros stay zero
            model = finetune(model, r)
            entry["finetuned"] = True
        rounds.append(entry)
    for _, m in prunable_weights(model):
        if tprune.is_pruned(m):
            tprune.remove(m, "weight")  # plain tensors with the zeros in them: exportable as is
    model.eval()
    layers = zero_fractions(model)
    after = {**measure.count(model, example_input), **state_dict_sizes(model)}
    sparsity = _sparsity(layers)
    nonzero_before = sum(v["weights"] - v["zeros"] for v in layers_before.values())
    nonzero_after = sum(v["weights"] - v["zeros"] for v in layers.values())
    report = {
        "method": METHOD,
        "criterion": "global L1 magnitude of individual weights (all conv and linear layers)",
        "schedule": "one-shot" if cfg.rounds == 1 else f"iterative, {cfg.rounds} rounds",
        "config": cfg.to_dict(),
        "sparsity": sparsity,
        "before": before,
        "after": after,
        "nonzero_weights": {"before": nonzero_before, "after": nonzero_after},
        "reduction": {
            "params": 0.0,
            "macs": 0.0,
            "nonzero_weights": 1 - nonzero_after / nonzero_before,
            "zipped_bytes": 1 - after["zipped_bytes"] / before["zipped_bytes"],
        },
        "layers_zero_fraction": {n: v["fraction"] for n, v in layers.items()},
        "rounds": rounds,
        "note": DENSE_NOTE,
    }
    return PruneResult(model, report)
