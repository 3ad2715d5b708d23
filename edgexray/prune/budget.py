"""The build's pruning level, chosen on the validation split within the accuracy budget.

The profile's own level first, then lighter ones, down to the unpruned model (a plain build
always ships something); with a host latency budget, more and more MAC reduction until the
latency is met (and nothing when no level is fast enough and accurate enough). The test split is
never read here.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgexray.fsutil import atomic_write_json
from edgexray.runtime.errors import EdgeXrayError
from edgexray.runtime.metrics import budget_text

FINETUNE_LR = 3e-4  # after pruning: a third of the from-scratch rate keeps what was learned

# a pruning level: (kind, amount); kind None is the profile's own schedule
Level = tuple[str | None, float | None]


@dataclass(frozen=True, eq=False)
class AccuracyBudget:
    """budget(candidate val logits) -> metrics.budget_check against the unpruned model's
    predictions on the validation split."""

    val_y: np.ndarray
    reference: np.ndarray  # the unpruned model's val predictions (class indices)
    class_names: list
    max_drop_pp: float
    groups: np.ndarray | None = None  # patient groups of the val split (paired bootstrap)
    seed: int = 0

    def __call__(self, logits) -> dict:
        from edgexray.runtime.metrics import budget_check

        return budget_check(
            self.val_y,
            self.reference,
            np.asarray(logits).argmax(1),
            self.class_names,
            self.max_drop_pp,
            groups=self.groups,
            seed=self.seed,
        )


@dataclass(frozen=True, eq=False)
class BudgetSearch:
    """What the search needs from the build."""

    prune: object  # the device profile's PruneSettings
    base: object  # the unpruned checkpoint
    data: object  # its prepared splits: train fine-tunes and calibrates
    val_x: np.ndarray  # normalized val images
    budget: AccuracyBudget  # judges the val logits of every level
    predict: Callable  # (model, images) -> logits
    work: Path  # pruned.pt and prune_report.json go here
    steps: object  # progress: say(text), fallback(text)
    latency_budget_ms: float | None = None  # host PyTorch latency goal (the latency search)
    finetune_epochs: int = 3
    finetune_lr: float = FINETUNE_LR
    batch_size: int = 32
    seed: int = 0


@dataclass(frozen=True, eq=False)
class BudgetChoice:
    """The pruned model that ships (reloaded from pruned.pt), its report and its val logits."""

    checkpoint: object
    report: dict
    val_logits: np.ndarray


def level_name(kind, amount) -> str:
    if kind is None:
        return "profile schedule"
    if kind == "schedule":
        return f"profile schedule x{amount}"
    if kind == "unpruned":
        return "unpruned (no pruning)"
    return f"{kind} -{100 * amount:.0f}%"


def describe_attempt(t: dict) -> str:
    if "skipped" in t:
        return f"{level_name(t['kind'], t['amount'])}: not reachable"
    lo, hi = t["accuracy_drop_interval_pp"]
    return (
        f"{t['level']}: val drop {t['accuracy_drop_pp']:.2f} pp (95% CI {lo:.2f} to "
        f"{hi:.2f}){' [' + '; '.join(t['failures']) + ']' if t['failures'] else ''}"
        + (
            ""
            if t["host_torch_latency_ms"] is None
            else f", host latency {t['host_torch_latency_ms']:.2f} ms"
        )
    )


def pruning_attempts(prune, latency_budget_ms: float | None = None) -> list[Level]:
    """Pruning levels to try, in order. Latency budget: more and more MAC reduction until the
    host latency meets it. Otherwise the profile's own level (its target, or its schedule),
    then lighter ones, then the unpruned model: a plain build always ships something."""
    if latency_budget_ms is not None:
        return [("macs", r) for r in (0.3, 0.45, 0.6, 0.7, 0.8, 0.85)]
    if prune.target_params or prune.target_macs:
        kind = "params" if prune.target_params else "macs"
        goal = prune.target_params or prune.target_macs
        levels = [(kind, round(goal - d, 2)) for d in (0.0, 0.1, 0.2, 0.3) if goal - d > 0.05]
    else:
        levels = [(None, None), ("schedule", 0.5), ("schedule", 0.25)]
    return levels + [("unpruned", None)]


def level2prune_config(search: BudgetSearch, kind, amount):
    from edgexray.prune.prune import PruneConfig

    p = search.prune  # a target is reached by scaling the profile's schedule
    scale = amount if kind == "schedule" else 1.0  # a lighter level of a schedule-only profile
    return PruneConfig(
        method=p.method,
        schedule=p.schedule,
        ratio=p.ratio * scale,
        stage_ratios=tuple(r * scale for r in p.stage_ratios),
        target_params=amount if kind == "params" else None,
        target_macs=amount if kind == "macs" else None,
        finetune_epochs=search.finetune_epochs,
        round_to=p.round_to,
        seed=search.seed,
    )


def unpruned_result(model, example):
    """The last fallback: the unpruned model itself, with a prune report that says so."""
    from edgexray.prune import graph, measure
    from edgexray.prune.prune import PruneResult

    counts = {**measure.count(model, example), "state_dict_bytes": measure.state_dict_bytes(model)}
    widths = graph.conv_widths(model)
    spine = graph.spine_widths(model, example[:1])
    return PruneResult(
        model,
        {
            "method": "none",
            "criterion": "not pruned: every pruning level broke the budget",
            "schedule": "none",
            "config": None,
            "target": None,
            "before": counts,
            "after": counts,
            "reduction": {"params": 0.0, "macs": 0.0},
            "spine_widths": {"before": spine, "after": spine},
            "layers": {n: [w, w] for n, w in widths.items()},
            "steps": [],
        },
    )


def prune_within_budget(search: BudgetSearch) -> BudgetChoice:
    """Prune with the profile's settings; if the pruned model (after fine-tuning) breaks the
    accuracy budget on the validation split, retry with less pruning, down to the unpruned
    model. A latency budget instead searches the smallest MAC reduction whose host latency
    meets it (and ships nothing when none does)."""
    from edgexray.prune.measure import cpu_latency_ms
    from edgexray.prune.prune import prune_model
    from edgexray.prune.stage import loaders_for, make_finetune

    base, steps, latency_budget = search.base, search.steps, search.latency_budget_ms
    loaders = loaders_for(base, search.data, search.batch_size)
    example = torch.zeros(base.input_shape)
    finetune_log: list = []
    finetune = (
        make_finetune(base, loaders, search.finetune_epochs, search.finetune_lr, finetune_log)
        if search.finetune_epochs
        else None
    )

    tried, chosen = [], None
    for kind, amount in pruning_attempts(search.prune, latency_budget):
        if kind == "unpruned":
            result = unpruned_result(copy.deepcopy(base.model), example)
        else:
            try:
                result = prune_model(
                    copy.deepcopy(base.model),
                    example,
                    level2prune_config(search, kind, amount),
                    calib_loader=loaders.calib,
                    finetune=finetune,
                )
            except EdgeXrayError as e:  # this level cannot be reached on this model: try the next
                tried.append({"kind": kind, "amount": amount, "skipped": str(e)})
                steps.say(f"{level_name(kind, amount)}: skipped ({e})")
                continue
        logits = search.predict(result.model, search.val_x)
        check = search.budget(logits)
        # the latency search needs every level's latency; otherwise only the shipped one's
        latency = cpu_latency_ms(result.model, example)["p50"] if latency_budget is not None else None
        red = result.report["reduction"]
        steps.say(
            f"{level_name(kind, amount)}: params -{100 * red['params']:.1f}%, MACs "
            f"-{100 * red['macs']:.1f}%, {budget_text(check)}"
            + ("" if latency is None else f", host PyTorch latency {latency:.2f} ms")
        )
        tried.append(
            {
                "kind": kind,
                "amount": amount,
                "level": level_name(kind, amount),
                "reduction": red,
                "split": "val",
                "accuracy_drop_pp": check["accuracy_drop_pp"],
                "accuracy_drop_interval_pp": check["accuracy_drop_interval_pp"],
                "per_class": check["per_class"],
                "passed": check["passed"],
                "failures": check["failures"],
                "note": check["note"],
                "host_torch_latency_ms": latency,
            }
        )
        fast_enough = latency_budget is None or latency <= latency_budget
        if check["passed"] and fast_enough:
            chosen = result, logits
            if kind == "unpruned":
                steps.fallback(
                    "shipping the UNPRUNED model: no pruning level met the accuracy "
                    "budget on the validation split"
                )
            break
        if latency_budget is not None:
            if not check["passed"]:
                break  # pruning more to get faster would only lose more accuracy
            continue  # latency search: prune more
        steps.fallback(
            f"pruning {level_name(kind, amount)}: {'; '.join(check['failures'])} "
            "(val split); falling back to less pruning"
        )
    if chosen is None:
        raise EdgeXrayError(
            "no pruning level met the budgets: "
            + "; ".join(map(describe_attempt, tried))
            + f". Relax --max-accuracy-drop (now {search.budget.max_drop_pp})"
            + (
                f" or --latency-budget-ms (now {latency_budget}, host latency)"
                if latency_budget is not None
                else ""
            )
            + ", or train longer; nothing was shipped"
        )
    result, logits = chosen
    report = dict(
        result.report,
        attempts=tried,
        finetune=finetune_log,
        level=tried[-1]["level"],
        host_torch_latency_ms={
            "before": cpu_latency_ms(base.model, example)["p50"],
            "after": tried[-1]["host_torch_latency_ms"] or cpu_latency_ms(result.model, example)["p50"],
        },
    )
    return BudgetChoice(_saved_checkpoint(search, result.model, report, tried[-1]), report, logits)


def _saved_checkpoint(search: BudgetSearch, model, report: dict, shipped_attempt: dict):
    """pruned.pt and prune_report.json in the work folder; the checkpoint reloaded from disk."""
    from edgexray.checkpoint import load_checkpoint, save_checkpoint

    base = search.base
    path = save_checkpoint(
        search.work / "pruned.pt",
        model,
        arch=base.arch,
        model_options=base.model_options,
        class_names=base.class_names,
        preprocess=base.preprocess,
        train_config=base.train_config,
        metrics={"val_accuracy_drop_pp": shipped_attempt["accuracy_drop_pp"]},
        extra={
            **base.extra,
            "pruned_from": str(base.path),
            "prune": {
                k: v for k, v in report.items() if k in ("method", "schedule", "reduction", "config", "level")
            },
        },
        force=True,
    )
    atomic_write_json(search.work / "prune_report.json", report)
    return load_checkpoint(path)
