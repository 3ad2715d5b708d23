"""Structured channel pruning guided by CBAM attention (torch-pruning DepGraph underneath).

`prune_model(model, example_input, PruneConfig(...), calib_loader, finetune)` prunes a module;
`prune_checkpoint(ckpt, out_dir, cfg, data_dir)` is the file-level stage behind `edgexray prune`.
"""

from edgexray.prune.importance import get_importance, list_importances
from edgexray.prune.prune import PruneConfig, PruneResult, prune_model
from edgexray.prune.stage import prune_checkpoint

__all__ = [
    "PruneConfig",
    "PruneResult",
    "prune_model",
    "prune_checkpoint",
    "get_importance",
    "list_importances",
]
