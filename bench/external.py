"""`edgexray bench --test-data DIR`: the benchmarked model on an external folder of other patients,
as `edgexray evaluate --test-data` and `edgexray build --test-data` score it (edgexray.external):
class names checked, 95% intervals (over patients when the file names carry a patient key), and
the folder's overlap with the bench's `--data` folder.

An artifact is scored through its own run.py `predict` code on this machine (its decoder,
pre-processing, runtime, temperature and operating point), so the figures equal what
`python run.py predict DIR` prints; a model file through the bench's host runner, at the argmax.
"""

from __future__ import annotations

from pathlib import Path

from edgexray.runtime.errors import EdgeXrayError


def model_context(target: Path, runtime: str | None, threads: int | None):
    """(class names, Preprocess, runner or None) of what is benchmarked: an artifact's manifest
    (runner None: run.py scores it, unless `runtime` names a host runner), or a model file's
    metadata."""
    from edgexray.bench import local
    from edgexray.bench.runtimes import load_runner, runtime_for_suffix
    from edgexray.runtime.preprocess import Preprocess

    if local.is_artifact(target):
        from edgexray.runtime.integrity import checked_manifest

        manifest = checked_manifest(target)
        pre = Preprocess.from_dict(manifest["preprocess"])
        runner = load_runner(runtime, target / manifest["model"]["file"], threads) if runtime else None
        return list(manifest["class_names"]), pre, runner
    runner = load_runner(runtime or runtime_for_suffix(target.suffix), target, threads)
    pre, names = local.model_context(runner)
    if pre is None or names is None:
        raise EdgeXrayError(
            f"{str(target)!r} carries no preprocess/class names, so it cannot be scored on "
            "--test-data; bench it inside an artifact or export it with edgexray (which writes "
            "them into the ONNX metadata)"
        )
    return names, pre, runner


def _host_runner_metrics(ext, runner, pre, manifest: dict | None) -> dict:
    """A model file through the bench's host runner, decoded as the bench decodes --data. Inside
    an artifact (`manifest`), its temperature and operating point apply as run.py applies them."""
    from edgexray import external
    from edgexray.bench.local import artifact_decision
    from edgexray.runtime.accuracy import predict_probs
    from edgexray.runtime.metrics import threshold_labels, threshold_rule

    how = artifact_decision(manifest) if manifest else {"temperature": 1.0, "decision": None}
    kind = (manifest or {}).get("output", {}).get("kind", "logits")
    paths = [ext.root / r for r in ext.relpaths]
    probs = predict_probs(runner, paths, pre, kind, temperature=how["temperature"])
    if how["decision"] is None:
        return external.metrics_of(ext, probs)
    pos, t = how["decision"]
    rule = threshold_rule(ext.class_names[pos], t)
    return external.metrics_of(ext, probs, y_pred=threshold_labels(probs, pos, t), decision_rule=rule)


def bench_external(
    target: Path, test_data, data=None, runtime: str | None = None, threads=None, remote: bool = False
) -> dict:
    """The bench document's "external" block: the external folder, its overlap with `data`
    (the bench's --data), and the benchmarked model's figures with 95% intervals under
    "models" (one row, labelled by how it was scored). Raises EdgeXrayError before anything
    is timed when the folder's classes differ from the model's."""
    from edgexray import external
    from edgexray.bench import local

    names, pre, runner = model_context(Path(target), runtime, threads)
    if data is not None and Path(data).resolve() == Path(test_data).resolve():
        raise EdgeXrayError(
            f"--test-data {str(test_data)!r} is the --data folder; pass a folder of other "
            "patients (the external set), or drop --test-data"
        )
    ext = external.load_external(test_data, names, pre.size, data, progress=False)
    if runner is None:  # an artifact through its run.py
        label = "artifact (run.py" + (", scored on this machine)" if remote else ")")
        metrics = external.artifact_metrics(target, ext)
    else:
        manifest = None
        if local.is_artifact(target):
            from edgexray.runtime.integrity import checked_manifest

            manifest = checked_manifest(target)
        label = f"{Path(target).name} ({runner.kind})"
        metrics = _host_runner_metrics(ext, runner, pre, manifest)
    doc = external.block(ext, {label: metrics})
    if ext.overlap is not None:
        doc["overlap_checked_against"] = "--data " + str(Path(data).resolve())
    return doc


def table_lines(doc: dict | None) -> list[str]:
    """Lines under the bench table: the external figures of every scored model, with intervals."""
    from edgexray.runtime.metrics import rule_brief

    if not doc:
        return []

    def ci(interval):
        return "n/a" if interval is None else f"{interval[0]:.3f}-{interval[1]:.3f}"

    lines = [
        "",
        f"External test set {doc['data']}: {doc['n']} images {doc['counts']} ({doc['intervals']}; "
        "never used for a choice)",
        "",
        "| model | labels by | accuracy (95% CI) | ROC-AUC (95% CI) | sensitivity (95% CI) | "
        "specificity (95% CI) |",
        "|---|---|---|---|---|---|",
    ]
    for label, m in doc["models"].items():
        c = m["ci95"]
        auc = "n/a" if m.get("roc_auc") is None else f"{m['roc_auc']:.3f} ({ci(c['roc_auc'])})"

        sens, spec = (
            "; ".join(
                f"{name} {v[key]:.3f} ({ci(c['per_class'][name][key])})" for name, v in m["per_class"].items()
            )
            for key in ("sensitivity", "specificity")
        )
        lines.append(
            f"| {label} | {rule_brief(m.get('decision_rule'))} | {m['accuracy']:.3f} "
            f"({ci(c['accuracy'])}) | {auc} | {sens} | {spec} |"
        )
    lines += [f"WARNING: {w}" for w in doc.get("warnings") or []]
    return lines
