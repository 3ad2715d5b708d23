"""Accuracy against pruning ratio (no fine-tuning): which stages (`edgexray prune CKPT
--sensitivity`) or which layers (`--sensitivity --per-layer`) tolerate pruning; the per-layer
figures can seed the progressive schedule (`--schedule sensitivity`)."""

from __future__ import annotations

import copy
import dataclasses
import logging

import torch
from tqdm import tqdm

from edgexray.prune.graph import NUM_STAGES
from edgexray.prune.prune import PruneConfig
from edgexray.prune.stage import PruneData, evaluate, pruned_copy

log = logging.getLogger(__name__)

RATIOS = (0.2, 0.4, 0.6, 0.8)  # fractions of each stage's channels removed


def stage_sensitivity(
    model, example: torch.Tensor, cfg: PruneConfig, data: PruneData, ratios=RATIOS, arch: str = ""
) -> dict:
    """For each stage and ratio: prune only that stage, report val accuracy and MAC reduction."""
    baseline = evaluate(model, data.val, data.class_names)
    stages = {}
    bar = tqdm(total=NUM_STAGES * len(ratios), desc="sensitivity", disable=None)
    for stage in range(1, NUM_STAGES + 1):
        rows = []
        for r in ratios:
            profile = tuple(r if s == stage else 0.0 for s in range(1, NUM_STAGES + 1))
            one = dataclasses.replace(
                cfg,
                schedule="progressive",
                stage_ratios=profile,
                steps=1,
                target_macs=None,
                target_params=None,
                finetune_epochs=0,
            )
            res = pruned_copy(model, example, one, data)
            rows.append(
                {
                    "ratio": r,
                    "val": evaluate(res.model, data.val, data.class_names),
                    "macs_reduction": res.report["reduction"]["macs"],
                    "params_reduction": res.report["reduction"]["params"],
                }
            )
            bar.update()
        stages[f"stage {stage}"] = rows
    bar.close()
    return {
        "schema": "edgexray.prune-sensitivity/1",
        "arch": arch,
        "method": cfg.method,
        "ratios": list(ratios),
        "baseline": baseline,
        "stages": stages,
    }


def plot_sensitivity(rep: dict, path) -> bytes:
    from edgexray.plots import new_figure, save_figure

    plt, fig = new_figure((5.5, 4))
    ax = fig.add_subplot()
    for stage, rows in rep["stages"].items():
        ax.plot(
            [100 * r["ratio"] for r in rows],
            [100 * r["val"]["accuracy"] for r in rows],
            marker="o",
            label=stage,
        )
    if rep["baseline"]:
        ax.axhline(100 * rep["baseline"]["accuracy"], color="#888", ls="--", label="unpruned")
    ax.set_xlabel("channels removed in the stage (%)")
    ax.set_ylabel("val accuracy (%)")
    ax.set_title(f"Sensitivity ({rep['method']}, no fine-tuning)")
    ax.legend()
    return save_figure(plt, fig, path)


def layer_sensitivity(
    model, example: torch.Tensor, cfg: PruneConfig, data: PruneData, ratios=RATIOS, arch: str = ""
) -> dict:
    """For each prunable group (a layer and everything coupled to it) and ratio: remove that
    fraction of the group's channels, chosen by cfg.method, nothing else; val accuracy and MACs
    removed (no fine-tuning). Channels are scored once on the unpruned model."""
    from edgexray.prune import graph, measure, schedules
    from edgexray.prune.importance import get_importance
    from edgexray.prune.prune import calibration_batches

    model = model.eval()
    example = example[:1]
    baseline = evaluate(model, data.val, data.class_names)
    before = measure.count(model, example)
    crit = get_importance(cfg.method, seed=cfg.seed)
    crit.check(model)
    batches = calibration_batches(data.calib, cfg.calib_images, crit.needs_data, cfg.method)
    stages = graph.module_stages(model, example)
    DG = graph.build_graph(model, example)
    groups = graph.prunable_groups(model, DG, stages)
    crit.prepare(model, batches, DG, example)
    order = {
        g.name: torch.argsort(crit(g.group).detach().cpu().float(), stable=True).tolist() for g in groups
    }
    model.zero_grad(set_to_none=True)
    out = {}
    bar = tqdm(total=len(groups) * len(ratios), desc="layer sensitivity", disable=None)
    for g in groups:
        rows = []
        for r in ratios:
            keep = schedules.keep_count(g.channels, r, 1)
            trial = copy.deepcopy(model)
            tDG = graph.build_graph(trial, example)
            tg = next(t for t in graph.prunable_groups(trial, tDG, stages) if t.name == g.name)
            graph.prune_group(tDG, tg, sorted(order[g.name][: g.channels - keep]))
            after = measure.count(trial, example)
            rows.append(
                {
                    "ratio": r,
                    "kept": keep,
                    "val": evaluate(trial, data.val, data.class_names),
                    "macs_reduction": 1 - after["macs"] / before["macs"],
                }
            )
            bar.update()
        out[g.name] = {"stage": g.stage, "channels": g.channels, "members": g.members, "rows": rows}
    bar.close()
    return {
        "schema": "edgexray.prune-layer-sensitivity/1",
        "arch": arch,
        "method": cfg.method,
        "ratios": list(ratios),
        "baseline": baseline,
        "groups": out,
    }


def stage_ratios_from(rep: dict, max_drop: float) -> tuple[float, ...]:
    """Per stage, the largest tested ratio that every group of the stage tolerates alone with a
    val accuracy drop of at most `max_drop` (0 where a group tolerates none)."""
    base = rep["baseline"]["accuracy"]
    ratios = [1.0] * NUM_STAGES
    for g in rep["groups"].values():
        ok = [row["ratio"] for row in g["rows"] if base - row["val"]["accuracy"] <= max_drop + 1e-9]
        ratios[g["stage"] - 1] = min(ratios[g["stage"] - 1], max(ok, default=0.0))
    return tuple(0.0 if r == 1.0 else r for r in ratios)  # a stage without any group stays


def plot_layer_sensitivity(rep: dict, path) -> bytes:
    from edgexray.plots import new_figure, save_figure

    plt, fig = new_figure((7.5, 4.5))
    ax = fig.add_subplot()
    cmap = plt.get_cmap("viridis")
    start = ([0.0], [100 * rep["baseline"]["accuracy"]]) if rep["baseline"] else ([], [])
    for name, g in rep["groups"].items():  # each line starts at the unpruned model (0%)
        ax.plot(
            start[0] + [100 * r["ratio"] for r in g["rows"]],
            start[1] + [100 * r["val"]["accuracy"] for r in g["rows"]],
            marker="o",
            ms=3,
            lw=1,
            color=cmap((g["stage"] - 1) / max(NUM_STAGES - 1, 1)),
            label=f"{name} (stage {g['stage']}, {g['channels']} ch)",
        )
    if rep["baseline"]:
        ax.axhline(100 * rep["baseline"]["accuracy"], color="#888", ls="--", label="unpruned")
    ax.set_xlabel("channels removed in the layer's group (%)")
    ax.set_ylabel("val accuracy (%)")
    ax.set_title(f"Per-layer sensitivity ({rep['method']}, no fine-tuning)")
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return save_figure(plt, fig, path)
