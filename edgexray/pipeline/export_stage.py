"""The build's export stage: every precision through export_model (what `edgexray export`
runs), each file checked on the validation split."""

from __future__ import annotations

from edgexray.export.calibration import train_calibration
from edgexray.fsutil import atomic_write_json
from edgexray.pipeline.state import BuildState, Exported, jsonable
from edgexray.runtime.errors import EdgeXrayError


def export_and_check(state: BuildState) -> Exported:
    """Export every precision of the pruned model through export_model (what `edgexray export`
    runs), its choices made on the validation split; then each file's parity with the pruned
    PyTorch model and its accuracy budget against the unpruned model, on the validation split too."""
    cfg, profile, work, steps = state.cfg, state.profile, state.work, state.steps
    pruned, precisions = state.pruned.checkpoint, state.precisions
    from edgexray.export.exporter import export_model
    from edgexray.runtime.metrics import budget_text

    fmt = profile.model_format
    if fmt not in ("tflite", "onnx"):
        raise EdgeXrayError(
            f"target {profile.name} runs {profile.runtime}; edgexray build ships "
            "TFLite (LiteRT) or ONNX (ONNX Runtime) artifacts"
        )
    for p in precisions:
        if fmt == "onnx" and p not in ("fp32", "int8"):
            raise EdgeXrayError(f"precision {p!r} is not built for ONNX Runtime targets; allowed: fp32, int8")
    result = export_model(
        pruned.model,
        work / "export",
        class_names=pruned.class_names,
        preprocess=pruned.preprocess,
        eval_inputs=state.val_x,
        eval_labels=state.val_y,
        formats=fmt,
        precisions=precisions,
        reference_logits=state.pruned.val_logits,
        calib=train_calibration(state.data, pruned.preprocess, cfg.calib_count, cfg.seed),
        max_accuracy_drop=cfg.max_accuracy_drop,
        metadata={"arch": pruned.arch, "model_options": pruned.model_options},
        info={
            "checkpoint": str(pruned.path),
            "arch": pruned.arch,
            "parity_data": {"split": "val", "root": str(state.data.index.root)},
        },
        force=True,
    )  # the build folder is the build's own
    entries = {e["precision"]: e for e in result.report["files"]}
    files, results, val_logits = {}, {}, {}
    for p in precisions:  # the profile's order
        files[p], logits = result.files[(fmt, p)], result.logits[(fmt, p)]
        val_logits[p] = logits
        results[p] = dict(entries[p]["parity"], split="val", budget=state.budget(logits))
        if "scheme_choice" in entries[p]:  # the ONNX INT8 scheme, measured on val on this CPU
            results[p]["int8_scheme"] = scheme = entries[p]["scheme_choice"]
            steps.say(
                f"ONNX INT8 scheme {scheme['chosen']} (chosen on val on this CPU: "
                + ", ".join(
                    f"{n} {r['accuracy']:.4f} / {r['p50_ms']:.2f} ms" for n, r in scheme["schemes"].items()
                )
                + ")"
            )
        steps.say(
            f"{files[p].name}: {budget_text(results[p]['budget'])}, top-1 agreement with "
            f"PyTorch {results[p]['top1_agreement']:.4f}, max |diff| "
            f"{results[p]['max_abs_diff']:.2e}"
        )
    atomic_write_json(work / "export" / "parity_val.json", jsonable(results))
    return Exported(files, results, val_logits)
