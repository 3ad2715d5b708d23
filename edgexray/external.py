"""The external test set (`--test-data DIR`): other patients, never used for any choice.

The build scores it once, at the end, with every model of its comparison table, and the shipped
artifact through the artifact's own run.py code (its decoder, pre-processing and runtime), so
the figures equal what `python run.py predict DIR` gives on the device. Images that duplicate
training-folder images (edgexray.leakage) are reported loudly, not removed: the external figures
are then optimistic.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgexray.runtime.errors import EdgeXrayError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExternalSet:
    """An external test folder, decoded at the model's input size."""

    root: Path
    class_names: tuple[str, ...]
    relpaths: tuple[str, ...]
    labels: np.ndarray = field(repr=False)
    arrays: np.ndarray = field(repr=False)  # float16 (N, S, S) in [0, 1]
    groups: np.ndarray | None = field(default=None, repr=False)  # patient of each image, if found
    grouping: dict | None = None
    overlap: dict | None = None  # leakage.cross_report against the training folder

    def counts(self) -> dict:
        n = np.bincount(self.labels, minlength=len(self.class_names))
        return {c: int(k) for c, k in zip(self.class_names, n)}


def check_test_data(test_dir, class_names) -> None:
    """Refuse a test folder whose class sub-folders differ from the training classes."""
    from edgexray.data import scan_image_folder

    if not Path(test_dir).is_dir():
        raise EdgeXrayError(
            f"--test-data {str(test_dir)!r} is not a folder; pass a folder with one "
            f"sub-folder per class: {', '.join(class_names)}"
        )
    index = scan_image_folder(test_dir)
    if tuple(index.class_names) != tuple(class_names):
        raise EdgeXrayError(
            f"--test-data {str(test_dir)!r} has classes {list(index.class_names)} but the model is "
            f"trained on {list(class_names)}; the external test folder needs one sub-folder per "
            "training class, named the same"
        )


def load_external(test_dir, class_names, size: int, train_dir=None, progress: bool = True) -> ExternalSet:
    """Scan and decode the external test folder (classes must equal `class_names`); with
    `train_dir`, check it for images that duplicate training-folder images."""
    from edgexray import leakage
    from edgexray.data import SplitConfig, grouping_of, load_arrays, scan_image_folder
    from edgexray.fsutil import cache_dir

    check_test_data(test_dir, class_names)
    index = scan_image_folder(test_dir)
    if train_dir is not None and Path(train_dir).resolve() == Path(test_dir).resolve():
        raise EdgeXrayError(
            f"--test-data {str(test_dir)!r} is the training folder; pass a folder of other patients"
        )
    rel = [r for r, _ in index.items]
    arrays = load_arrays(index.root, rel, size, progress, cache_dir("arrays"))
    labels = index.labels_of(rel)
    found = grouping_of(index, SplitConfig())
    groups = None if found.keys is None else np.asarray([found.keys[r] for r in rel])
    overlap = None
    if train_dir is not None:
        train = scan_image_folder(train_dir)
        train_rel = [r for r, _ in train.items]
        train_arrays = load_arrays(train.root, train_rel, size, progress, cache_dir("arrays"))
        overlap = leakage.cross_report(
            train_arrays, train_rel, train.labels_of(train_rel), arrays, rel, labels, index.class_names
        )
        overlap["training_folder"] = str(Path(train_dir).resolve())
        if groups is not None:
            train_found = grouping_of(train, SplitConfig())
            if train_found.keys is not None and train_found.key == found.key:
                shared = sorted(set(groups) & set(train_found.keys.values()))
                overlap["shared_patient_ids"] = len(shared)
                overlap["shared_patient_examples"] = shared[:20]
    ext = ExternalSet(
        root=Path(test_dir),
        class_names=tuple(index.class_names),
        relpaths=tuple(rel),
        labels=labels,
        arrays=arrays,
        groups=groups,
        grouping=found.summary(),
        overlap=overlap,
    )
    for line in warnings(ext.overlap):
        log.warning("%s", line)
    return ext


def for_build(cfg, profile, given, progress: bool = True, say=print) -> ExternalSet:
    """The build's --test-data, loaded and checked against the training folder before training."""
    from edgexray.data import scan_image_folder

    train_dir = cfg.data_dir or (given.extra.get("data_dir") if given is not None else None)
    if train_dir is None:
        raise EdgeXrayError(
            "--test-data needs --data (or a checkpoint that records its data "
            "folder): the SYNTHETIC demo has no external cohort"
        )
    if given is not None:
        class_names, size = tuple(given.class_names), given.preprocess.size
    else:
        class_names, size = scan_image_folder(train_dir).class_names, cfg.size or profile.input_size
    ext = load_external(cfg.test_data, class_names, size, train_dir, progress)
    say(
        f"external test set {cfg.test_data}: {len(ext.labels)} images {ext.counts()}; scored at "
        "the end by every model, never used for a choice"
    )
    return ext


def grouping_lines(grouping: dict | None, leak: dict | None) -> list[tuple[str, str]]:
    """(key, value) lines about the splits' patient key and the leakage guard, for the summary."""
    out = []
    if grouping:
        if grouping.get("groups"):
            out.append(
                (
                    "splits grouped by",
                    f"{grouping['key']} ({grouping['source']}): "
                    f"{grouping['groups']} groups of {grouping['images']} "
                    "images, none in two splits",
                )
            )
        else:
            out.append(("splits grouped by", f"nothing: {grouping['source']}"))
    if leak:
        out.append(
            (
                "duplicates (leakage guard)",
                f"{leak['exact_duplicate_clusters']} exact, {leak['near_duplicate_clusters']} "
                f"near-duplicate clusters ({leak['images_in_near_clusters']} images), "
                f"{leak['conflicting_labels']} with conflicting labels, "
                f"{leak['across_splits']} across splits",
            )
        )
    return out


def warnings(overlap: dict | None) -> list[str]:
    """The loud lines about an external set that overlaps the training folder."""
    if not overlap:
        return []
    out = []
    n = overlap["external_images_duplicating_training_folder"]
    if n:
        out.append(
            f"WARNING: {n} of {overlap['external_images']} external test images duplicate "
            f"training-folder images ({overlap['exact']} exact, "
            f"{overlap['conflicting_labels']} with another label), e.g. "
            f"{overlap['examples'][0]['external']} ~ {overlap['examples'][0]['matches'][0]}; "
            "the external figures are optimistic"
        )
    if overlap.get("shared_patient_ids"):
        out.append(
            f"WARNING: {overlap['shared_patient_ids']} patient id(s) of the external test "
            "set also appear in the training folder, e.g. "
            f"{overlap['shared_patient_examples'][:3]}; it is not an external cohort"
        )
    return out


def metrics_of(
    ext: ExternalSet, probs: np.ndarray, seed: int = 0, y_pred=None, decision_rule: str | None = None
) -> dict:
    """classification_metrics with 95% bootstrap intervals (over patients when grouped); the
    label-based figures at `y_pred` when given (with `decision_rule`), else at the argmax."""
    from edgexray.runtime.metrics import classification_metrics

    return classification_metrics(
        ext.labels,
        probs,
        list(ext.class_names),
        intervals=True,
        groups=ext.groups,
        seed=seed,
        y_pred=y_pred,
        decision_rule=decision_rule,
    )


def evaluate_models(ext: ExternalSet, models: dict, preprocess, seed: int = 0) -> dict:
    """{label: metrics} for models given as {label: torch module | .onnx/.tflite path}."""
    from edgexray.models.predict import predict_logits
    from edgexray.runtime.metrics import softmax
    from edgexray.runtime.runners import predict_file

    x = preprocess.normalize(ext.arrays)
    out = {}
    for label, model in models.items():
        if isinstance(model, (str, os.PathLike)):
            logits = predict_file(model, x)
        else:
            logits = predict_logits(model, x)
        out[label] = metrics_of(ext, softmax(logits), seed)
    return out


def pixels_model_metrics(ext: ExternalSet, path, seed: int = 0) -> dict:
    """Metrics of a .tflite that takes uint8 RGB pixels (gray as R = G = B, what an app passes)
    and gives probabilities, e.g. the Tasks-ready variant (export/tasks_variant.py)."""
    from edgexray.runtime.runners import open_runner

    runner = open_runner("litert", path)
    scale, zero = runner.output_spec.scale or 0.0, runner.output_spec.zero_point or 0
    u8 = np.clip(np.round(ext.arrays.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    probs = []
    for x in u8:
        p = runner.run_raw(np.repeat(x[None, :, :, None], 3, axis=-1))[0].astype(np.float64)
        probs.append((p - zero) * scale if scale else p)
    return metrics_of(ext, np.stack(probs), seed)


def _import_run_py(folder: Path):
    name = f"_edgexray_artifact_run_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, Path(folder) / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    return module


@dataclass(frozen=True)
class ArtifactPredictions:
    """What the artifact's run.py `predict` gives for the external images."""

    probs: np.ndarray  # (N, K) run.py's (calibrated) probabilities
    labels: np.ndarray  # (N,) the class index run.py prints (its operating point, if any)
    decision_rule: str  # how run.py decided the labels


def artifact_predictions(folder, ext: ExternalSet) -> ArtifactPredictions:
    """The external images through the artifact's own run.py `predict` code (integrity-checked
    manifest, run.py's decoder, pre-processing, runtime, temperature and operating point)."""
    from edgexray.runtime.metrics import ARGMAX_RULE, threshold_rule

    run = _import_run_py(Path(folder))
    manifest = run.checked_manifest(Path(folder))
    if tuple(manifest["class_names"]) != ext.class_names:
        raise EdgeXrayError(
            f"the artifact's classes {manifest['class_names']} differ from the "
            f"external test set's {list(ext.class_names)}; pass a --test-data folder with one "
            "sub-folder per class of the artifact, named the same"
        )
    paths = [str(ext.root / r) for r in ext.relpaths]
    result = run.predictions(Path(folder), manifest, paths)
    rows = result["predictions"]
    d = result.get("decision")
    return ArtifactPredictions(
        probs=np.asarray([[row["probabilities"][c] for c in ext.class_names] for row in rows]),
        labels=np.asarray([row["index"] for row in rows], int),
        decision_rule=threshold_rule(d["positive_class"], d["threshold"]) if d else ARGMAX_RULE,
    )


def artifact_metrics(folder, ext: ExternalSet, seed: int = 0) -> dict:
    """The artifact's figures on the external set, equal to what `python run.py predict` gives:
    accuracy, sensitivity and specificity from the labels run.py prints (at its operating
    point when the build has one), AUCs from run.py's probabilities."""
    pred = artifact_predictions(folder, ext)
    m = metrics_of(ext, pred.probs, seed, y_pred=pred.labels, decision_rule=pred.decision_rule)
    return {**m, "scored_by": "the artifact's run.py predict code"}


def block(ext: ExternalSet, rows: dict, shipped_label: str | None = None) -> dict:
    """The manifest's "external" block: the set, its overlap with training, figures per model."""
    return {
        "data": str(ext.root.resolve()),
        "n": int(len(ext.labels)),
        "counts": ext.counts(),
        "grouping": ext.grouping,
        "intervals": "95% percentile bootstrap over " + ("patients" if ext.groups is not None else "images"),
        "used_for_choices": False,
        "overlap_with_training_folder": ext.overlap,
        "warnings": warnings(ext.overlap),
        "shipped_label": shipped_label,
        "models": rows,
    }


def artifact_hook(ext: ExternalSet, rows: dict, shipped_label: str, inner=None, holder=None, say=print):
    """A write_artifact `verify` callback: scores the finished artifact folder through its run.py
    (before `inner`, e.g. the ARM check, while the seal holds), then adds the "external" block
    to manifest.json and an "external" entry to every row of its "models" table. The block is
    also put in `holder["external"]` for the summary."""
    from edgexray.fsutil import atomic_write_json
    from edgexray.runtime.metrics import rule_brief

    def hook(folder: Path):
        folder = Path(folder)
        shipped = artifact_metrics(folder, ext)
        all_rows = {**rows, shipped_label: shipped}
        say(
            f"external test set: shipped artifact through run.py: accuracy "
            f"{shipped['accuracy']:.4f} (95% CI {shipped['ci95']['accuracy'][0]:.4f}-"
            f"{shipped['ci95']['accuracy'][1]:.4f}) on {len(ext.labels)} images, labels by "
            f"{rule_brief(shipped['decision_rule'])} (what run.py predict prints)"
        )
        result = inner(folder) if inner is not None else None
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        doc = block(ext, all_rows, shipped_label)
        for row in manifest.get("models") or []:
            # the shipped file's row: its figures through run.py
            m = shipped if row.get("shipped") else all_rows.get(row.get("label"))
            row["external"] = _brief(m) if m is not None else {"missing": "not evaluated"}
        manifest["external"] = doc
        from edgexray.review import models2warnings

        manifest["warnings"] = models2warnings(manifest.get("models") or [])
        atomic_write_json(folder / "manifest.json", manifest)
        if holder is not None:
            holder["external"] = doc
        return result

    return hook


def _brief(m: dict) -> dict:
    ci = m.get("ci95") or {}
    return {
        "n": m["n"] if "n" in m else None,
        "decision_rule": m.get("decision_rule"),
        "accuracy": m["accuracy"],
        "accuracy_ci95": ci.get("accuracy"),
        "roc_auc": m.get("roc_auc"),
        "roc_auc_ci95": ci.get("roc_auc"),
        "per_class": {
            c: {"sensitivity": v["sensitivity"], "specificity": v["specificity"]}
            for c, v in m["per_class"].items()
        },
        "per_class_ci95": ci.get("per_class"),
    }


def format_lines(doc: dict | None) -> list[tuple[str, str]]:
    """(key, value) lines for the build summary."""
    from edgexray.runtime.metrics import rule_brief

    if not doc:
        return []
    out = [
        (
            "external test set",
            f"{doc['n']} images {doc['counts']} in {doc['data']} "
            f"(never used for a choice; {doc['intervals']})",
        )
    ]
    for label, m in doc["models"].items():
        ci = m["ci95"]["accuracy"]
        auc = "n/a" if m.get("roc_auc") is None else f"{m['roc_auc']:.3f}"
        sens = ", ".join(f"{c} {v['sensitivity']:.3f}" for c, v in m["per_class"].items())
        tag = " (shipped, via run.py)" if label == doc.get("shipped_label") else ""
        out.append(
            (
                f"external {label}{tag}",
                f"accuracy {m['accuracy']:.4f} (95% CI {ci[0]:.4f}-{ci[1]:.4f}), "
                f"AUC {auc}, sensitivity {sens}; labels by {rule_brief(m.get('decision_rule'))}",
            )
        )
    out += [("external WARNING", w) for w in doc.get("warnings") or []]
    return out
