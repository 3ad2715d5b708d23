"""The held-out sets, read after every choice: the test split (every model of the comparison,
the calibration of the shipped file, the operating point) and the external test set."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgexray import data as data_mod
from edgexray.fsutil import atomic_write_json
from edgexray.models.predict import predict_logits
from edgexray.pipeline.state import BuildState, jsonable, logits_metrics


@dataclass(frozen=True, eq=False)
class TestReport:
    """Every model of the comparison on the test split, with 95% intervals."""

    x: np.ndarray
    y: np.ndarray
    base_metrics: dict  # unpruned FP32 PyTorch
    pruned_metrics: dict  # pruned FP32 PyTorch
    parity: dict  # precision -> parity of the exported file (+ ci95, drop vs unpruned)
    logits: dict  # precision -> the exported file's test logits


@dataclass(frozen=True, eq=False)
class OperatingPoint:
    calibration: dict  # temperature scaling of the shipped file (manifest "calibration")
    decision: dict | None = None  # the positive class's threshold (manifest "decision")
    roc_png: bytes | None = None  # the report's ROC with the operating point


def test_report(state: BuildState, test_x, test_y) -> TestReport:
    """Every model of the comparison on the test split, with 95% intervals (over groups when
    the split was grouped). Nothing here feeds back into a choice."""
    from edgexray.export.parity import parity as parity_check
    from edgexray.runtime.metrics import bootstrap_intervals, paired_drop, softmax
    from edgexray.runtime.runners import predict_file

    cfg, names = state.cfg, state.names
    groups = data_mod.split_group_ids(state.data, "test")
    base_logits = predict_logits(state.base.model, test_x)
    pruned_logits = predict_logits(state.pruned.checkpoint.model, test_x)
    base_metrics = logits_metrics(test_y, base_logits, names, True, groups, cfg.seed)
    pruned_metrics = logits_metrics(test_y, pruned_logits, names, True, groups, cfg.seed)
    parity, test_logits = {}, {}
    for p, path in state.exported.files.items():
        logits = test_logits[p] = predict_file(path, test_x)
        parity[p] = r = parity_check(
            pruned_logits,
            test_y,
            path,
            test_x,
            names,
            precision=p,
            max_accuracy_drop=cfg.max_accuracy_drop,
            candidate_logits=logits,
        )
        r["split"] = "test"
        r["candidate"]["ci95"] = bootstrap_intervals(test_y, softmax(logits), names, groups, seed=cfg.seed)
        d = paired_drop(test_y, base_logits.argmax(1), logits.argmax(1), names, groups, seed=cfg.seed)
        r["drop_vs_unpruned_pp"] = d["accuracy_drop_pp"]
        r["drop_vs_unpruned_interval_pp"] = d["accuracy_drop_interval_pp"]
    # export/parity.json stays export_model's report (choices on val); this is the test split's
    atomic_write_json(state.work / "export" / "parity_test.json", jsonable(parity))
    # the comparison is at the argmax; the shipped file's figures at an operating point are
    # the decision's (operating_point below)
    rule = ", labels by argmax" if cfg.positive_class is not None else ""
    for label, m in (
        ("unpruned FP32", base_metrics),
        ("pruned FP32", pruned_metrics),
        *((f"exported {p}", parity[p]["candidate"]) for p in parity),
    ):
        lo, hi = m["ci95"]["accuracy"]
        state.steps.say(
            f"test: {label} accuracy {m['accuracy']:.4f} (95% CI {lo:.4f}-{hi:.4f}) on "
            f"{len(test_y)} images{rule}"
        )
    return TestReport(test_x, test_y, base_metrics, pruned_metrics, parity, test_logits)


def operating_point(state: BuildState) -> OperatingPoint:
    """Temperature scaling of the shipped file, fitted on val (test ECE only reported), and with
    --positive-class the threshold chosen on calibrated val probabilities."""
    from edgexray.calibrate import calibration_record
    from edgexray.pipeline.summary import decision_text
    from edgexray.runtime.metrics import softmax

    cfg, steps, test, shipped = state.cfg, state.steps, state.test, state.shipped
    val_logits, test_logits = state.exported.val_logits[shipped], test.logits[shipped]
    calibration = calibration_record(val_logits, state.val_y, test_logits, test.y)
    steps.say(
        f"temperature {calibration['temperature']:.3f} (fitted on val): val ECE "
        f"{calibration['ece_before']:.4f} -> {calibration['ece_after']:.4f}, test ECE "
        f"{calibration['test']['ece_before']:.4f} -> {calibration['test']['ece_after']:.4f}"
    )
    if cfg.positive_class is None:
        return OperatingPoint(calibration)
    from edgexray.operating_point import decision_record
    from edgexray.plots import plot_roc_point

    t = calibration["temperature"]
    decision = decision_record(
        cfg.positive_class,
        cfg.target_sensitivity,
        state.names,
        softmax(val_logits / t),
        state.val_y,
        softmax(test_logits / t),
        test.y,
        data_mod.split_group_ids(state.data, "test"),
        cfg.seed,
    )
    steps.say("operating point: " + decision_text(decision))
    i = state.names.index(cfg.positive_class)
    sens, spec = decision["test"]["sensitivity"], decision["test"]["specificity"]
    roc_png = None
    if sens is not None and spec is not None:
        roc_png = plot_roc_point(
            test.y == i,
            softmax(test_logits / t)[:, i],
            (sens, spec),
            f"{cfg.positive_class} at p >= {decision['threshold']:.3f}",
        )
    return OperatingPoint(calibration, decision, roc_png)


def external_rows(state: BuildState) -> dict:
    """External-set metrics of every model of the comparison table, by its row label (the
    shipped artifact is scored through its run.py when bundled: external.artifact_hook)."""
    from edgexray import external

    models = state.bench.models
    # the PyTorch rows run in memory; every other row is a file
    in_memory = {
        models.unpruned_torch.label: state.base.model,
        models.pruned.label: state.pruned.checkpoint.model,
    }
    rows = external.evaluate_models(
        state.external_set,
        {c.label: in_memory.get(c.label, c.path) for c in models.table()},
        state.base.preprocess,
        state.cfg.seed,
    )
    rule = ", labels by argmax" if state.cfg.positive_class is not None else ""
    for label, m in rows.items():
        ci = m["ci95"]["accuracy"]
        state.steps.say(
            f"external {label}: accuracy {m['accuracy']:.4f} (95% CI {ci[0]:.4f}-{ci[1]:.4f}){rule}"
        )
    return rows
