"""`prune_model`: remove whole channels so the network physically shrinks.

Per step: build the dependency graph (graph.py), score every coupled group with the criterion
(importance.py), keep the best channels of each group at its stage's ratio (schedules.py), remove
the rest from every coupled layer at once, then fine-tune (optional callable).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from edgexray.config import config_from_dict
from edgexray.prune import graph, measure, schedules
from edgexray.prune.importance import get_importance
from edgexray.runtime.errors import EdgeXrayError, unknown_name

log = logging.getLogger(__name__)

SCHEDULES = ("one-shot", "progressive", "target")


@dataclass(frozen=True)
class PruneConfig:
    method: str = "cbam"  # criterion: cbam, se, l1, taylor, bnscale, random, synflow
    schedule: str = "progressive"  # one-shot (uniform `ratio`), progressive (`stage_ratios`), target
    ratio: float = 0.5  # one-shot: fraction of channels removed from every group
    stage_ratios: tuple[float, ...] = (0.2, 0.35, 0.5, 0.6)  # progressive: stage 1..4 (seed paper)
    target_macs: float | None = None  # fraction of MACs to remove, searched (e.g. 0.5)
    target_params: float | None = None  # fraction of parameters to remove, searched
    steps: int = 1  # k: iterative pruning steps, fine-tuning after each one
    finetune_epochs: int = 0  # epochs of fine-tuning after each step (used by prune_checkpoint)
    round_to: int = 8  # kept channels are a multiple of this (hardware friendly); 1 = exact
    calib_images: int = 64  # N calibration images for cbam/se/taylor scores
    max_ratio: float = 0.9  # no group loses more than this fraction (target search bound)
    tolerance: float = 0.01  # target search: |reached - requested| allowed (1 percentage point)
    seed: int = 0  # random criterion seed
    rounds: int = 1  # l1-unstructured: rounds of `ratio` of the remaining weights, fine-tuned between

    @classmethod
    def from_dict(cls, d: dict) -> PruneConfig:
        d = dict(d)
        if "stage_ratios" in d:
            d["stage_ratios"] = tuple(d["stage_ratios"])
        return config_from_dict(cls, d, "prune config")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["stage_ratios"] = list(self.stage_ratios)
        return d

    @property
    def target(self) -> tuple[str, float] | None:
        if self.target_macs is not None:
            return "macs", self.target_macs
        if self.target_params is not None:
            return "params", self.target_params
        return None

    def validate(self) -> None:
        from edgexray.prune.unstructured import METHOD as UNSTRUCTURED

        if self.method == UNSTRUCTURED:
            if self.target is not None:
                raise EdgeXrayError(
                    f"--method {UNSTRUCTURED} removes no MACs and no parameters "
                    "(it zeroes weights), so a MAC or parameter target cannot "
                    "apply; pass --ratio (fraction zeroed per round) and --rounds"
                )
        elif self.rounds != 1:
            raise EdgeXrayError(
                f"rounds={self.rounds} is for --method {UNSTRUCTURED}; structured "
                "methods prune iteratively with --steps"
            )
        else:
            get_importance(self.method)  # unknown method -> error with suggestions
        if self.schedule not in SCHEDULES:
            raise unknown_name("schedule", self.schedule, SCHEDULES)
        for name in ("ratio", "target_macs", "target_params", "max_ratio"):
            v = getattr(self, name)
            if v is not None and not 0 < v < 1:
                raise EdgeXrayError(
                    f"{name}={v} is outside (0, 1); it is the fraction removed, e.g. 0.5 removes half"
                )
        if (
            len(self.stage_ratios) != graph.NUM_STAGES
            or not all(0 <= r < 1 for r in self.stage_ratios)
            or not any(self.stage_ratios)
        ):
            raise EdgeXrayError(
                f"stage_ratios={list(self.stage_ratios)}; need {graph.NUM_STAGES} "
                "fractions in [0, 1), not all 0, e.g. 0.2,0.35,0.5,0.6"
            )
        if self.target_macs is not None and self.target_params is not None:
            raise EdgeXrayError("both target_macs and target_params given; pass only one")
        if self.schedule == "target" and self.target is None:
            raise EdgeXrayError(
                "schedule 'target' needs target_macs or target_params (e.g. --target-macs 0.5)"
            )
        for name, low in (
            ("steps", 1),
            ("rounds", 1),
            ("round_to", 1),
            ("calib_images", 1),
            ("finetune_epochs", 0),
        ):
            if int(getattr(self, name)) < low:
                raise EdgeXrayError(f"{name}={getattr(self, name)}; must be >= {low}")
        if not 0 < self.tolerance < 0.5:
            raise EdgeXrayError(f"tolerance={self.tolerance}; allowed: (0, 0.5)")


@dataclass
class PruneResult:
    model: nn.Module
    report: dict = field(default_factory=dict)


def calibration_batches(loader: Iterable | None, n_images: int, required: bool, method: str) -> list:
    """The first `n_images` (x, y) of `loader`, as a list of batches."""
    if loader is None:
        if required:
            raise EdgeXrayError(
                f"--method {method} needs calibration images but none were given; "
                "pass the training data (--data DIR) or use a data-free method "
                "(l1, bnscale, synflow)"
            )
        return []
    batches, seen = [], 0
    for batch in loader:
        x, y = batch[0], batch[1]
        take = min(len(x), n_images - seen)
        batches.append((x[:take].float(), y[:take].long()))
        seen += take
        if seen >= n_images:
            break
    if required and seen == 0:
        raise EdgeXrayError(
            f"--method {method} needs calibration images but the data loader "
            "yielded none; check the data folder and its splits"
        )
    return batches


def _plan(model, example_input, stages):
    DG = graph.build_graph(model, example_input)
    return DG, graph.prunable_groups(model, DG, stages)


def _reduction(before: dict, after: dict, kind: str) -> float:
    return 1.0 - after[kind] / before[kind]


def _prune_counts_only(model, example_input, stages, keep: dict[str, int]) -> dict:
    """Params/MACs of `model` with each group cut to `keep` (channels chosen arbitrarily: counts do
    not depend on which channels go)."""
    m = copy.deepcopy(model)
    DG, groups = _plan(m, example_input, stages)
    for g in groups:
        if g.name in keep and keep[g.name] < g.channels:
            graph.prune_group(DG, g, list(range(keep[g.name], g.channels)))
    return measure.count(m, example_input)


def search_scale(
    model, example_input, cfg: PruneConfig, stages, groups, before: dict, profile
) -> tuple[float, float]:
    """Bisect the profile scale so the requested reduction is met within cfg.tolerance."""
    kind, wanted = cfg.target
    nonzero = [p for p in profile if p > 0]
    s_max = cfg.max_ratio / min(nonzero)

    def reached(scale):
        keep = {
            g.name: schedules.keep_count(
                g.channels, schedules.group_ratio(profile, g.stage, scale, cfg.max_ratio), cfg.round_to
            )
            for g in groups
        }
        return _reduction(before, _prune_counts_only(model, example_input, stages, keep), kind)

    top = reached(s_max)
    if top < wanted - cfg.tolerance:
        raise EdgeXrayError(
            f"target {kind} reduction {wanted:.1%} cannot be reached: at most {top:.1%} with every "
            f"group pruned by up to max_ratio={cfg.max_ratio}; ask for a smaller target"
        )
    # regula falsi on the bracket (reduction grows with the scale), bisection when it stalls
    (lo, f_lo), (hi, f_hi), best = (0.0, 0.0), (s_max, top), (s_max, top)
    for i in tqdm(range(20), desc=f"target {kind} -{wanted:.0%}", leave=False, disable=None):
        mid = lo + (hi - lo) * (wanted - f_lo) / max(f_hi - f_lo, 1e-9)
        if i % 3 == 2 or not lo < mid < hi:
            mid = (lo + hi) / 2
        r = reached(mid)
        if abs(r - wanted) < abs(best[1] - wanted):
            best = (mid, r)
        if abs(r - wanted) <= cfg.tolerance / 2:
            break
        (lo, f_lo), (hi, f_hi) = ((mid, r), (hi, f_hi)) if r < wanted else ((lo, f_lo), (mid, r))
    if abs(best[1] - wanted) > cfg.tolerance:
        raise EdgeXrayError(
            f"target {kind} reduction {wanted:.1%} cannot be met within {cfg.tolerance:.1%}: the "
            f"closest reachable is {best[1]:.1%} with round_to={cfg.round_to}; use a smaller "
            "round_to (e.g. --round-to 1) or a wider model"
        )
    return best


def prune_model(
    model: nn.Module,
    example_input: torch.Tensor,
    cfg: PruneConfig,
    calib_loader: Iterable | None = None,
    finetune: Callable[[nn.Module, int], nn.Module] | None = None,
) -> PruneResult:
    """Prune `model` in place (and return it) with `cfg`; `finetune(model, step)` runs after every
    step when given and returns the model to continue with."""
    cfg.validate()
    from edgexray.prune import unstructured

    if cfg.method == unstructured.METHOD:
        return unstructured.prune_unstructured(model, example_input, cfg, finetune)
    crit = get_importance(cfg.method, seed=cfg.seed)
    crit.check(model)
    batches = calibration_batches(calib_loader, cfg.calib_images, crit.needs_data, cfg.method)
    model.eval()
    example_input = example_input[:1]
    with torch.no_grad():
        out_shape = tuple(model(example_input).shape)
    stages = graph.module_stages(model, example_input)
    before = measure.count(model, example_input)
    widths_before = graph.conv_widths(model)
    spine_before = graph.spine_widths(model, example_input)
    bytes_before = measure.state_dict_bytes(model)

    DG, groups = _plan(model, example_input, stages)
    if not groups:
        raise EdgeXrayError(
            "the model has no prunable channel group (every group reaches the "
            "output or is a gate's hidden layer)"
        )
    original = {g.name: g.channels for g in groups}
    group_stage = {g.name: g.stage for g in groups}
    members = {g.name: g.members for g in groups}
    profile = schedules.stage_profile(cfg.schedule, cfg.ratio, cfg.stage_ratios)
    scale, searched = 1.0, None
    if cfg.target is not None:
        scale, searched = search_scale(model, example_input, cfg, stages, groups, before, profile)
        log.info("target %s: profile scale %.3f reaches %.2f%%", cfg.target, scale, 100 * searched)
    ratios = {n: schedules.group_ratio(profile, group_stage[n], scale, cfg.max_ratio) for n in original}

    steps_log, scoring = [], {}
    for step in tqdm(range(1, cfg.steps + 1), desc=f"prune {cfg.method}", disable=None):
        if step > 1:
            DG, groups = _plan(model, example_input, stages)
        crit.prepare(model, batches, DG, example_input)
        cuts = []
        for g in groups:
            if g.name not in original:
                log.warning("group %s appeared after pruning; left as is", g.name)
                continue
            keep = schedules.keep_count(
                original[g.name], schedules.step_ratio(ratios[g.name], step, cfg.steps), cfg.round_to
            )
            if keep >= g.channels:
                continue
            imp = crit(g.group)
            order = torch.argsort(imp.detach().cpu().float(), stable=True)
            cuts.append((g, order[: g.channels - keep].tolist()))
        model.zero_grad(set_to_none=True)
        for g, idxs in cuts:
            graph.prune_group(DG, g, sorted(idxs))
        scoring.update(crit.scoring)
        entry = {"step": step, **measure.count(model, example_input), "finetuned": False}
        if finetune is not None:
            model = finetune(model, step)
            entry["finetuned"] = True
        steps_log.append(entry)

    model.eval()
    with torch.no_grad():
        new_shape = tuple(model(example_input).shape)
    if new_shape != out_shape:  # the classifier output must never shrink
        raise RuntimeError(f"pruning changed the output shape {out_shape} -> {new_shape}")
    after = measure.count(model, example_input)
    widths_after = graph.conv_widths(model)
    report = {
        "method": cfg.method,
        "criterion": crit.description,
        "schedule": cfg.schedule,
        "config": cfg.to_dict(),
        "profile_scale": scale,
        "target": (
            {"kind": cfg.target[0], "requested": cfg.target[1], "reached": searched} if cfg.target else None
        ),
        "stage_ratios_applied": [min(cfg.max_ratio, scale * p) for p in profile],
        "before": {**before, "state_dict_bytes": bytes_before},
        "after": {**after, "state_dict_bytes": measure.state_dict_bytes(model)},
        "reduction": {
            "params": _reduction(before, after, "params"),
            "macs": _reduction(before, after, "macs"),
        },
        "spine_widths": {"before": spine_before, "after": graph.spine_widths(model, example_input)},
        "groups": [
            {
                "name": n,
                "stage": group_stage[n],
                "ratio": ratios[n],
                "channels_before": original[n],
                "channels_after": widths_after.get(n),  # a group is named by its root layer
                "scoring": scoring.get(n, "not pruned (ratio rounds to 0)"),
                "members": members[n],
            }
            for n in original
        ],
        "layers": {n: [widths_before[n], widths_after.get(n)] for n in widths_before},
        "steps": steps_log,
    }
    return PruneResult(model, report)
