"""The build's last stage: the artifact folder (export.bundle.write_artifact) with the build's
manifest fields (export.build_manifest), report plots, the saliency of the shipped file beside
Grad-CAM (overlays in the artifact for synthetic images only), the Tasks-ready variant for LiteRT
targets and, before sealing, the emulated-ARM and external checks."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from edgexray.pipeline.state import BuildState
from edgexray.runtime.errors import EdgeXrayError


@dataclass(frozen=True, eq=False)
class Bundled:
    artifact: Path
    external: dict | None  # the external block as the artifact's run.py scored it (or None)


def bundle(state: BuildState) -> Bundled:
    from edgexray.export.build_manifest import budget_warnings, manifest_fields, tasks_row
    from edgexray.export.bundle import write_artifact
    from edgexray.review import models2warnings

    cfg, base, data, steps = state.cfg, state.base, state.data, state.steps
    fields = manifest_fields(state)
    fields["saliency"], gradcam_assets = _saliency(state)
    test_files = data.splits["test"]  # real held-out images: ARM rounding is judged on them too
    verify = _arm_verifier(
        state, [Path(data.index.root) / rel for rel in test_files[:: max(1, len(test_files) // 6)][:6]]
    )
    holder: dict = {}
    if state.external_set is not None:  # scores the finished artifact through its run.py
        from edgexray.external import artifact_hook

        verify = artifact_hook(
            state.external_set, state.external_rows, "shipped artifact (run.py)", verify, holder, steps.say
        )
    tasks = _tasks_model(state)
    if tasks is not None:
        fields["tasks_variant_measured"] = tasks[1]
        fields["models"].append(tasks_row(*tasks))
        if state.external_set is not None:  # the row just added, on the external set too
            from edgexray.external import pixels_model_metrics

            state.external_rows[fields["models"][-1]["label"]] = pixels_model_metrics(
                state.external_set, tasks[0]
            )
    # + external: the hook
    fields["warnings"] = models2warnings(fields["models"]) + budget_warnings(fields["budgets"])
    artifact = write_artifact(
        state.out,
        target=state.profile,
        arch=base.arch,
        precision=state.shipped,
        model_files=dict(state.exported.files),
        manifest_fields=fields,
        class_names=state.names,
        preprocess=base.preprocess,
        report_assets={"plots": _report_plots(state), "gradcam": gradcam_assets},
        images_are_synthetic=state.synthetic,
        verify=verify,
        tasks_model=tasks and tasks[0],
        main_model=state.profile.main_model if tasks else "int8-io",
        force=cfg.force,
    )
    return Bundled(artifact, holder.get("external"))


def _report_plots(state: BuildState) -> dict:
    from edgexray import plots

    report, test = state.pruned.report, state.test
    assets = {
        "Parameters before/after": plots.bar_before_after(
            {"unpruned": report["before"]["params"] / 1e6, "pruned": report["after"]["params"] / 1e6},
            "million parameters",
            "Size",
        ),
        "Host latency p50 (ms)": plots.bar_before_after(
            {k.replace(" (shipped)", ""): v for k, v in state.bench.summary["p50_ms"].items()},
            "ms (host)",
            "Host latency, batch 1",
        ),
        "Test accuracy": plots.bar_before_after(
            {
                "unpruned": test.base_metrics["accuracy"],
                "pruned": test.pruned_metrics["accuracy"],
                **{p: r["candidate"]["accuracy"] for p, r in test.parity.items()},
            },
            "accuracy",
            "Held-out accuracy",
        ),
    }
    if state.calibrated.roc_png is not None:
        assets["ROC with the operating point (test)"] = state.calibrated.roc_png
    return assets


SALIENCY_IMAGES = 4  # seeded val images; occlusion costs ~226 runs of the shipped file each


def _saliency(state: BuildState) -> tuple[dict, dict]:
    """Grad-CAM of the unpruned model beside the occlusion map of the shipped file (through its
    runner) on seeded val images: the manifest's "saliency" block, and {caption: PNG} for the
    artifact's report (synthetic images only). The overlays and the numbers are also written to
    build-<target>/saliency/ (report.html + PNGs), which never ships."""
    from edgexray.export.report_html import saliency_page
    from edgexray.fsutil import atomic_write_bytes, atomic_write_text
    from edgexray.saliency import deployed_saliency, sample_indices

    gray, start = state.data.arrays["val"], time.perf_counter()
    block, figures = deployed_saliency(
        state.base,
        state.shipped_file,
        state.pruned.checkpoint.preprocess,
        gray,
        sample_indices(len(gray), SALIENCY_IMAGES, state.cfg.seed),
    )
    folder = state.work / "saliency"
    block["precision"], block["overlays"] = state.shipped, f"{state.work.name}/saliency/report.html"
    images = dict(figures.values())
    for name, (_, png) in figures.items():
        atomic_write_bytes(folder / name, png)
    block["seconds"] = round(time.perf_counter() - start, 1)
    atomic_write_text(folder / "report.html", saliency_page(block, images))
    state.steps.say(
        f"saliency: Grad-CAM (unpruned) vs occlusion of {block['file']}: mean IoU of the top "
        f"{block['top_fraction']:.0%} pixels {block['mean_iou']} on {len(block['images'])} val "
        f"images in {block['seconds']} s ({folder / 'report.html'})"
    )
    return block, images if state.synthetic else {}


def _tasks_model(state: BuildState):
    """(path, measured) of the Tasks-ready INT8 variant (MediaPipe / LiteRT Task Library) for
    LiteRT targets, measured on the test split against the shipped int8-I/O file; None, said,
    when the converter cannot make it (the build goes on without it, and a profile whose
    main_model is "tasks" ships the int8-I/O file instead). Its softmax takes the build's
    temperature, so its probabilities are run.py's calibrated ones."""
    if state.profile.model_format != "tflite":
        return None
    from edgexray.export.calibration import train_calibration
    from edgexray.export.tasks_variant import TASKS_FILE, measure_tasks_variant, torch2tasks_tflite

    cfg, pruned, data, steps = state.cfg, state.pruned.checkpoint, state.data, state.steps
    shipped_file = state.shipped_file
    try:
        path = torch2tasks_tflite(
            pruned.model,
            shipped_file.parent / TASKS_FILE,
            preprocess=pruned.preprocess,
            calib=train_calibration(data, pruned.preprocess, cfg.calib_count, cfg.seed),
            class_names=list(pruned.class_names),
            temperature=state.calibrated.calibration["temperature"],
        )
    except EdgeXrayError as e:
        steps.say(f"Tasks-ready variant not made ({e}); the artifact ships without it")
        return None
    from edgexray.models.predict import predict_logits

    gray = data.arrays["test"]
    pytorch_top1 = predict_logits(pruned.model, pruned.preprocess.normalize(gray)).argmax(1)
    m = measure_tasks_variant(
        path, shipped_file, gray, data.labels["test"], pruned.preprocess, reference_top1=pytorch_top1
    )
    steps.say(
        f"Tasks-ready variant {path.name} (uint8 RGB in, float32 probabilities out"
        f"{', shipped as model.tflite' if state.profile.main_model == 'tasks' else ''}): test "
        f"accuracy {m['accuracy']:.4f} vs {m['shipped_accuracy']:.4f} int8-I/O, top-1 "
        f"agreement {m['top1_agreement_with_shipped']:.4f} with it and "
        f"{m['top1_agreement_with_pytorch']:.4f} with PyTorch, host p50 "
        f"{m['latency_ms_p50']:.2f} vs {m['shipped_latency_ms_p50']:.2f} ms"
    )
    return path, m


def _arm_verifier(state: BuildState, real_images=()):
    """verify(folder) for aarch64 targets: the emulated-ARM check, or a record of why not."""
    steps = state.steps
    if state.profile.arch != "aarch64":
        return None
    if not state.cfg.verify_arm:
        steps.say("ARM verification skipped: --no-verify-arm")
        return lambda folder: {"status": "skipped", "reason": "disabled with --no-verify-arm"}
    from edgexray.bench.arm import arm_verification_available, verify_artifact

    ok, why = arm_verification_available()
    if not ok:
        steps.say(f"ARM verification skipped: {why}")
        return lambda folder: {"status": "skipped", "reason": why}

    def verify(folder):
        result = verify_artifact(folder, on_unavailable="skip", real_images=real_images)
        steps.say(f"ARM verification ({result.get('cpu')}): {result['status']} — {result['reason']}")
        return result

    return verify
