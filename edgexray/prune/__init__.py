"""Structured channel pruning guided by CBAM attention (torch-pruning DepGraph underneath).

`prune_model(model, example_input, PruneConfig(...), calib_loader, finetune)` prunes a module;
`prune_checkpoint(ckpt, out_dir, cfg, data_dir)` is the file-level stage behind `edgexray prune`.
The names below load their submodule (and torch) on first use, so `edgexray prune --help` stays fast.
"""

from __future__ import annotations

from edgexray.lazy import lazy_names

_EXPORTS = {
    "PruneConfig": "prune",
    "PruneResult": "prune",
    "prune_model": "prune",
    "prune_checkpoint": "stage",
    "get_importance": "importance",
    "list_importances": "importance",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_names(__name__, _EXPORTS)
