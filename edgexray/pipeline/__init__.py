"""`edgexray build`: train (or load) -> prune -> fine-tune -> export -> parity -> bench -> bundle.

Only this package and the CLI know every stage. Each stage writes into the build folder
(<out>/build-<target>/), so a build can be inspected stage by stage; the artifact folder appears
complete or not at all. Budgets are checked, and a broken one makes the build fall back (less
pruning, the next precision) or stop; it never ships something as if it passed. build() reads
as the list of stages; each adds its result to the frozen BuildState (pipeline.state).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgexray import data as data_mod
from edgexray.export.build_manifest import selection_record
from edgexray.export.selection import choose_precision
from edgexray.fsutil import atomic_write_json
from edgexray.models.predict import predict_logits
from edgexray.pipeline.bundle import bundle
from edgexray.pipeline.candidates import measure_candidates
from edgexray.pipeline.export_stage import export_and_check
from edgexray.pipeline.held_out import external_rows, operating_point, test_report
from edgexray.pipeline.host_bench import host_bench
from edgexray.pipeline.start import BuildConfig, is_demo, started
from edgexray.pipeline.state import BuildState, Progress, logits_metrics
from edgexray.pipeline.summary import format_summary, summary_record
from edgexray.prune.budget import AccuracyBudget, BudgetSearch, prune_within_budget
from edgexray.runtime.errors import EdgeXrayError

__all__ = ["BuildConfig", "Progress", "build", "format_summary"]
log = logging.getLogger(__name__)


def build(cfg: BuildConfig, progress: bool = True) -> dict:
    """Run the whole build; returns the summary (also written to build-<target>/summary.json)."""
    state, given = started(cfg)
    cfg, profile, steps = state.cfg, state.profile, state.steps
    if cfg.test_data:  # before training: a wrong folder fails now, an overlap is said up front
        from edgexray import external

        with steps.stage("external test set"):
            state = replace(state, external_set=external.for_build(cfg, profile, given, progress, steps.say))

    # 1. data + unpruned model ------------------------------------------------------------
    with steps.stage("data + training" if cfg.checkpoint is None else "data + checkpoint"):
        base, data = _trained_model(cfg, profile, given, state.work, is_demo(cfg), progress)
    val_x, val_y = _split_inputs(base, data, "val")
    _split_inputs(base, data, "test")  # fail now, not after pruning, when there is no test split
    from edgexray.operating_point import check_options

    check_options(cfg.positive_class, cfg.target_sensitivity, list(base.class_names))
    state = replace(
        state,
        base=base,
        data=data,
        val_x=val_x,
        val_y=val_y,
        synthetic=(Path(data.index.root) / "SYNTHETIC.txt").is_file(),
    )
    # Every choice below (pruning level, precision) is made on the validation split; the test
    # split is read once, after the last choice, for the report.
    with steps.stage("evaluate unpruned (val)"):
        state = replace(state, budget=_val_budget(state))

    # 2. prune + fine-tune, falling back to less pruning when accuracy breaks the budget ----
    with steps.stage("prune + fine-tune"):
        state = replace(
            state,
            pruned=prune_within_budget(
                BudgetSearch(
                    prune=profile.prune,
                    base=base,
                    data=data,
                    val_x=val_x,
                    budget=state.budget,
                    predict=predict_logits,
                    work=state.work,
                    steps=steps,
                    latency_budget_ms=cfg.latency_budget_ms,
                    finetune_epochs=cfg.finetune_epochs,
                    batch_size=cfg.batch_size,
                    seed=cfg.seed,
                )
            ),
        )

    # 3. export + parity (val) --------------------------------------------------------------
    with steps.stage("export + parity"):
        state = replace(state, exported=export_and_check(state))

    # 4. choose what ships: the fastest candidate on the target within the budget, when the
    # target can be timed (this host for host-class targets, or --remote); else the profile's order
    with steps.stage("time candidates on the target"):
        state = replace(state, candidates=measure_candidates(state))
    candidates = state.candidates
    if candidates.where is None:
        steps.say(f"device latency not measured ({candidates.reason}); the profile's order decides")
    else:
        steps.say(
            f"candidates timed on {candidates.where}: "
            + ", ".join(f"{p} {ms:.2f} ms" for p, ms in candidates.p50().items())
        )
    precision = choose_precision(
        profile.default_precision,
        state.precisions,
        state.exported.val_parity,
        cfg.max_accuracy_drop,
        candidates.p50(),
        candidates.where,
    )
    steps.say(f"shipping {precision.precision}: {precision.by}")
    for text in precision.fallbacks:
        steps.fallback(text)
    state = replace(state, shipped=precision.precision, shipped_by=precision.by)
    state = replace(state, selection=selection_record(state))

    # 5. the test split, read once: every model of the comparison, for the report -------------
    with steps.stage("evaluate on test"):
        state = replace(state, test=test_report(state, *_split_inputs(base, data, "test")))
    state = replace(state, calibrated=operating_point(state))  # temperature, operating point

    # 6. host benchmark: the same run measures the baselines a user would otherwise ship -----
    with steps.stage("host benchmark"):
        state = replace(state, bench=host_bench(state))

    # 7. the external test set, read once, by every model (the shipped one in the bundle) ------
    if state.external_set is not None:
        with steps.stage("external test set: every model"):
            state = replace(state, external_rows=external_rows(state))

    # 8. bundle -------------------------------------------------------------------------------
    with steps.stage("bundle"):
        bundled = bundle(state)
    summary = summary_record(state, bundled.artifact, bundled.external)
    for w in summary["warnings"]:
        steps.say(f"WARNING: {w}")
    atomic_write_json(state.work / "summary.json", summary)
    return summary


def _val_budget(state: BuildState) -> AccuracyBudget:
    """The accuracy budget every choice is judged by: against the unpruned model on val."""
    base_val_logits = predict_logits(state.base.model, state.val_x)
    state.steps.say(
        f"unpruned FP32 (PyTorch) validation accuracy "
        f"{logits_metrics(state.val_y, base_val_logits, state.names)['accuracy']:.4f} "
        f"on {len(state.val_y)} images (every choice of this build is made on this "
        "split)"
    )
    return AccuracyBudget(
        state.val_y,
        np.asarray(base_val_logits).argmax(1),
        state.names,
        state.cfg.max_accuracy_drop,
        data_mod.split_group_ids(state.data, "val"),
        state.cfg.seed,
    )


def _trained_model(cfg: BuildConfig, profile, given, work: Path, demo: bool, progress: bool):
    """The unpruned model (the given checkpoint, or one trained now) and its prepared data."""
    if demo:
        from edgexray.synth import synthesize

        data_dir = synthesize(
            work / "synthetic-data",
            classes=cfg.synth_classes,
            per_class=cfg.synth_per_class,
            seed=cfg.seed,
            force=True,
            progress=progress,
        )
        Progress.say(f"made {cfg.synth_classes * cfg.synth_per_class} SYNTHETIC X-rays in {data_dir}")
    else:
        data_dir = cfg.data_dir
    if given is not None:
        from edgexray.evaluate import held_out_data

        if cfg.size and cfg.size != given.preprocess.size:
            raise EdgeXrayError(
                f"--size {cfg.size} but the checkpoint was trained at "
                f"{given.preprocess.size} px; drop --size or retrain"
            )
        if cfg.group_regex or not cfg.group:
            Progress.say("--group-regex / --no-group ignored: the checkpoint's own splits are reused")
        return given, held_out_data(given, data_dir, progress)
    from edgexray.checkpoint import load_checkpoint
    from edgexray.data import SplitConfig
    from edgexray.recipes import recipe2configs
    from edgexray.train import ModelConfig, TrainConfig, train_folder

    size = cfg.size or profile.input_size
    model_cfg, train_cfg, augment = recipe2configs(
        cfg.recipe,
        ModelConfig(
            arch=cfg.arch, size=size, width=cfg.width, pretrained=cfg.pretrained, weights=cfg.weights
        ),
        TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed),
    )
    run = train_folder(
        data_dir,
        work / "train",
        model_cfg,
        train_cfg,
        split_cfg=SplitConfig(group_regex=cfg.group_regex, auto_group=cfg.group),
        augment=augment,
        force=True,
        progress=progress,
    )
    return load_checkpoint(run.checkpoint), run.data


def _split_inputs(ckpt, data, split: str):
    if len(data.labels[split]) == 0:
        raise EdgeXrayError(
            f"the {split} split is empty; the build needs held-out images "
            "(use a 60/20/20 split with enough images per class)"
        )
    return ckpt.preprocess.normalize(data.arrays[split]), data.labels[split]
