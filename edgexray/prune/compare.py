"""Every pruning method at the same schedule/target on the same data, fine-tuned the same way.
`edgexray prune CKPT --compare cbam,l1,taylor,bnscale,random,synflow`."""

from __future__ import annotations

import dataclasses
import logging

import torch

from edgexray.prune import measure
from edgexray.prune.importance import list_importances
from edgexray.prune.prune import PruneConfig
from edgexray.prune.stage import PruneData, evaluate, make_finetune, pruned_copy
from edgexray.prune.unstructured import METHOD as UNSTRUCTURED
from edgexray.prune.unstructured import nonzero_weights, state_dict_sizes
from edgexray.runtime.errors import EdgeXrayError

log = logging.getLogger(__name__)


def parse_methods(text: str) -> list[str]:
    from edgexray.runtime.errors import unknown_name

    methods = [m.strip() for m in text.split(",") if m.strip()]
    if not methods:
        raise EdgeXrayError(f"--compare {text!r} names no method; e.g. cbam,l1,taylor")
    choices = [*list_importances(), UNSTRUCTURED]
    for m in methods:
        if m not in choices:
            raise unknown_name("pruning method", m, choices)
    return methods


def compare_methods(
    ckpt,
    example: torch.Tensor,
    cfg: PruneConfig,
    methods: list[str],
    data: PruneData,
    finetune_lr=None,
    latency_runs: int = 30,
    latency_threads: int | None = 1,
    progress: bool = True,
) -> dict:
    """One row per method: params, MACs, latency, val accuracy pruned / fine-tuned, test accuracy.
    A method that cannot run on this model (e.g. cbam without gates) gets its error in the row."""
    base = ckpt.model
    unpruned = {
        "method": "unpruned",
        **measure.count(base, example),
        "nonzero_weights": nonzero_weights(base),
        **state_dict_sizes(base),
        "latency_ms": measure.cpu_latency_ms(base, example, runs=latency_runs, threads=latency_threads),
        "val_pruned": evaluate(base, data.val, data.class_names),
        "val_finetuned": None,
        "test": evaluate(base, data.test, data.class_names),
    }
    # structured methods first: l1-unstructured then zeroes the fraction of weights the first of
    # them removed (the same parameter budget), or --ratio when none ran
    by_method = {}
    for method in sorted(methods, key=lambda m: m == UNSTRUCTURED):
        if method == UNSTRUCTURED:
            done = [r for r in by_method.values() if "reduction" in r]
            ratio = done[0]["reduction"]["params"] if done else cfg.ratio
            one = dataclasses.replace(
                cfg,
                method=method,
                rounds=1,
                schedule="one-shot",
                ratio=ratio,
                target_macs=None,
                target_params=None,
            )
        else:
            one = dataclasses.replace(cfg, method=method)
        ft_log: list = []
        finetune = (
            make_finetune(ckpt, data, cfg.finetune_epochs, finetune_lr, ft_log, progress)
            if cfg.finetune_epochs > 0
            else None
        )
        try:
            res = pruned_copy(base, example, one, data, finetune)
        except EdgeXrayError as e:
            by_method[method] = {"method": method, "error": str(e)}
            continue
        m = res.model
        by_method[method] = {
            "method": method,
            **measure.count(m, example),
            "nonzero_weights": nonzero_weights(m),
            **state_dict_sizes(m),
            "reduction": res.report["reduction"],
            "latency_ms": measure.cpu_latency_ms(m, example, runs=latency_runs, threads=latency_threads),
            "val_pruned": ft_log[-1]["val_before"] if ft_log else evaluate(m, data.val, data.class_names),
            "val_finetuned": ft_log[-1]["val_after"] if ft_log else None,
            "test": evaluate(m, data.test, data.class_names),
        }
    rows = [by_method[m] for m in methods]
    sched = cfg.schedule + (f", target {cfg.target[0]} -{cfg.target[1]:.0%}" if cfg.target else "")
    return {
        "schema": "edgexray.prune-compare/1",
        "arch": ckpt.arch,
        "schedule": sched,
        "finetune_epochs": cfg.finetune_epochs,
        "config": cfg.to_dict(),
        "rows": [unpruned] + rows,
    }


def plot_compare(rep: dict, path) -> bytes:
    from edgexray.plots import new_figure, save_figure

    plt, fig = new_figure((6, 4))
    ax = fig.add_subplot()
    for r in rep["rows"]:
        if r.get("error"):
            continue
        acc = r["val_finetuned"] or r["val_pruned"]
        if acc:
            ax.scatter(r["macs"] / 1e6, 100 * acc["accuracy"], s=40)
            ax.annotate(
                r["method"],
                (r["macs"] / 1e6, 100 * acc["accuracy"]),
                textcoords="offset points",
                xytext=(4, 4),
            )
    ax.set_xlabel("MACs (millions)")
    ax.set_ylabel("val accuracy (%)")
    ax.set_title("Pruning methods at the same target")
    return save_figure(plt, fig, path)
