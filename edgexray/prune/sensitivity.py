"""Accuracy against pruning ratio, one stage at a time (no fine-tuning): which stages tolerate
pruning. `edgexray prune CKPT --sensitivity`."""
from __future__ import annotations

import dataclasses
import logging

import torch
from tqdm import tqdm

from edgexray.prune.graph import NUM_STAGES
from edgexray.prune.prune import PruneConfig
from edgexray.prune.stage import PruneData, evaluate, pruned_copy

log = logging.getLogger(__name__)

RATIOS = (0.2, 0.4, 0.6, 0.8)  # fractions of each stage's channels removed


def stage_sensitivity(model, example: torch.Tensor, cfg: PruneConfig, data: PruneData,
                      ratios=RATIOS, arch: str = "") -> dict:
    """For each stage and ratio: prune only that stage, report val accuracy and MAC reduction."""
    baseline = evaluate(model, data.val, data.class_names)
    stages = {}
    bar = tqdm(total=NUM_STAGES * len(ratios), desc="sensitivity", disable=None)
    for stage in range(1, NUM_STAGES + 1):
        rows = []
        for r in ratios:
            profile = tuple(r if s == stage else 0.0 for s in range(1, NUM_STAGES + 1))
            one = dataclasses.replace(cfg, schedule="progressive", stage_ratios=profile, steps=1,
                                      target_macs=None, target_params=None, finetune_epochs=0)
            res = pruned_copy(model, example, one, data)
            rows.append({"ratio": r, "val": evaluate(res.model, data.val, data.class_names),
                         "macs_reduction": res.report["reduction"]["macs"],
                         "params_reduction": res.report["reduction"]["params"]})
            bar.update()
        stages[f"stage {stage}"] = rows
    bar.close()
    return {"schema": "edgexray.prune-sensitivity/1", "arch": arch, "method": cfg.method,
            "ratios": list(ratios), "baseline": baseline, "stages": stages}


def plot_sensitivity(rep: dict, path) -> bytes:
    from edgexray.plots import _figure, _save
    plt, fig = _figure((5.5, 4))
    ax = fig.add_subplot()
    for stage, rows in rep["stages"].items():
        ax.plot([100 * r["ratio"] for r in rows], [100 * r["val"]["accuracy"] for r in rows],
                marker="o", label=stage)
    if rep["baseline"]:
        ax.axhline(100 * rep["baseline"]["accuracy"], color="#888", ls="--", label="unpruned")
    ax.set_xlabel("channels removed in the stage (%)")
    ax.set_ylabel("val accuracy (%)")
    ax.set_title(f"Sensitivity ({rep['method']}, no fine-tuning)")
    ax.legend()
    return _save(plt, fig, path)
