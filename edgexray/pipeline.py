"""`edgexray build`: train (or load) -> prune -> fine-tune -> export -> parity -> bench -> bundle.

Only this module and the CLI know every stage. Each stage writes into the build folder
(<out>/build-<target>/), so a build can be inspected stage by stage; the artifact folder appears
complete or not at all. Budgets are checked, and a broken one makes the build fall back (less
pruning, the next precision) or stop; it never ships something as if it passed.
"""
from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from edgexray import data as data_mod
from edgexray.build_summary import decision_text, format_summary  # noqa: F401 (cli)
from edgexray.export.calibration import train_calibration
from edgexray.export.selection import choose_precision
from edgexray.fsutil import atomic_write_json, refuse_existing
from edgexray.models.predict import predict_logits
from edgexray.prune.budget import AccuracyBudget, BudgetSearch, level_name, prune_within_budget
from edgexray.runtime.errors import EdgeXrayError

log = logging.getLogger(__name__)

# The embedded default: synthetic bone X-rays and a model small enough for minutes on 2 cores.
# Its held-out split is small (one image is ~0.6 pp), so its accuracy budget is wider, and
# stated as such in the manifest and the summary.
DEMO = dict(synth_classes=3, synth_per_class=300, size=96, width=0.5, epochs=12, finetune_epochs=4,
            calib_count=100, max_accuracy_drop=3.0)


@dataclass(frozen=True)
class BuildConfig:
    target: str = "rpi4"  # device profile name or path to a profile TOML
    data_dir: str | None = None  # image folder; None (and no checkpoint) = synthetic demo data
    checkpoint: str | None = None  # start from this trained checkpoint (skips training)
    out: str = "artifacts"  # artifact folders and zips go here; intermediate files in build-<target>/
    arch: str = "resnet18_cbam"  # architecture when training
    size: int | None = None  # input side; None = the profile's input_size (demo: 96)
    width: float = 1.0  # channel multiplier when training
    pretrained: bool = False  # ImageNet weights (torchvision cache)
    weights: str | None = None  # local ImageNet weights file
    epochs: int = 8  # training epochs
    finetune_epochs: int = 3  # fine-tuning epochs after pruning
    batch_size: int = 32
    max_accuracy_drop: float = 1.0  # pp vs the unpruned FP32 model: upper 95% bound, val split
    latency_budget_ms: float | None = None  # host latency goal for the pruning search
    precisions: tuple | None = None  # override the profile's precisions (fallback order)
    calib_count: int = 200  # INT8 calibration images (stratified, training split)
    bench_seconds: float = 3.0  # timed budget per model in the host benchmark
    verify_arm: bool = True  # run the emulated-ARM check for aarch64 targets when the host can
    synth_classes: int = 3  # demo data
    synth_per_class: int = 120  # demo data
    group_regex: str | None = None  # patient key of the file names; None = detect one (data.py)
    group: bool = True  # False (--no-group): split images independently
    test_data: str | None = None  # external test folder: scored at the end, never for a choice
    positive_class: str | None = None  # operating point: this class's threshold, chosen on val
    target_sensitivity: float | None = None  # ... the highest one reaching this val sensitivity
    seed: int = 0
    force: bool = False  # replace an existing artifact / build folder


class Progress:
    """Stage-by-stage progress with times, on stderr."""

    def __init__(self):
        self.start = time.perf_counter()
        self.times: dict[str, float] = {}
        self.fallbacks: list[str] = []  # what the build changed because a budget broke

    @contextlib.contextmanager
    def stage(self, name: str):
        t0 = time.perf_counter()
        print(f"[edgexray] {name} ...", file=sys.stderr, flush=True)
        state = "failed"
        try:
            yield
            state = "done"
        finally:
            dt = time.perf_counter() - t0
            self.times[name] = round(dt, 1)
            print(f"[edgexray] {name} {state} in {dt:.1f} s "
                  f"(total {time.perf_counter() - self.start:.0f} s)", file=sys.stderr, flush=True)

    @staticmethod
    def say(text: str) -> None:
        print(f"[edgexray]   {text}", file=sys.stderr, flush=True)

    def fallback(self, text: str) -> None:
        self.fallbacks.append(text)
        self.say(text)


def build(cfg: BuildConfig, progress: bool = True) -> dict:
    """Run the whole build; returns the summary (also written to build-<target>/summary.json)."""
    from edgexray.devices import load_profile

    profile = load_profile(cfg.target)
    demo = cfg.data_dir is None and cfg.checkpoint is None
    if demo:
        cfg = replace(cfg, **{k: v for k, v in DEMO.items()
                              if getattr(cfg, k) == getattr(BuildConfig, k)})
    precisions = tuple(cfg.precisions or profile.precisions)
    unknown = set(precisions) - set(profile.precisions) if cfg.precisions else set()
    if unknown:
        raise EdgeXrayError(f"precision(s) {sorted(unknown)} are not built for {profile.name}; "
                            f"its profile allows {list(profile.precisions)}")
    from edgexray.operating_point import check_options
    check_options(cfg.positive_class, cfg.target_sensitivity)
    if cfg.max_accuracy_drop < 0:
        raise EdgeXrayError(f"--max-accuracy-drop {cfg.max_accuracy_drop}; must be >= 0 "
                            "percentage points, e.g. 1.0")
    out = Path(cfg.out)
    work = out / f"build-{profile.name}"
    refuse_existing(work, cfg.force, "build folder")
    from edgexray.checkpoint import load_checkpoint
    given = load_checkpoint(cfg.checkpoint) if cfg.checkpoint else None
    arch = given.arch if given else cfg.arch
    for existing in sorted(out.glob(f"{profile.name}-{arch}-*")):  # fail now, not after training
        refuse_existing(existing, cfg.force, "artifact")
    work.mkdir(parents=True, exist_ok=True)
    steps = Progress()
    summary: dict = {"target": profile.name, "config": _jsonable(asdict(cfg))}

    ext = None
    if cfg.test_data:  # before training: a wrong folder fails now, an overlap is said up front
        from edgexray import external
        with steps.stage("external test set"):
            ext = external.for_build(cfg, profile, given, progress, steps.say)

    # 1. data + unpruned model ------------------------------------------------------------
    with steps.stage("data + training" if cfg.checkpoint is None else "data + checkpoint"):
        base, data = _trained_model(cfg, profile, given, work, demo, progress)
    val_x, val_y = _split_inputs(base, data, "val")
    _split_inputs(base, data, "test")  # fail now, not after pruning, when there is no test split
    names = list(base.class_names)
    check_options(cfg.positive_class, cfg.target_sensitivity, names)
    synthetic = (Path(data.index.root) / "SYNTHETIC.txt").is_file()
    summary["synthetic"] = synthetic
    # Every choice below (pruning level, precision) is made on the validation split; the test
    # split is read once, after the last choice, for the report.
    with steps.stage("evaluate unpruned (val)"):
        base_val_logits = predict_logits(base.model, val_x)
        steps.say(f"unpruned FP32 (PyTorch) validation accuracy "
                  f"{_metrics(val_y, base_val_logits, names)['accuracy']:.4f} on {len(val_y)} "
                  "images (every choice of this build is made on this split)")
    judge = AccuracyBudget(val_y, np.asarray(base_val_logits).argmax(1), names,
                           cfg.max_accuracy_drop, data_mod.split_group_ids(data, "val"), cfg.seed)

    # 2. prune + fine-tune, falling back to less pruning when accuracy breaks the budget ----
    with steps.stage("prune + fine-tune"):
        choice = prune_within_budget(BudgetSearch(
            prune=profile.prune, base=base, data=data, val_x=val_x, budget=judge,
            predict=predict_logits, work=work, steps=steps, latency_budget_ms=cfg.latency_budget_ms,
            finetune_epochs=cfg.finetune_epochs, batch_size=cfg.batch_size, seed=cfg.seed))
        pruned, prune_report, pruned_val_logits = choice.checkpoint, choice.report, choice.val_logits

    # 3. export + parity (val) --------------------------------------------------------------
    with steps.stage("export + parity"):
        files, val_parity, val_logits = _export(cfg, profile, pruned, data, work, precisions,
                                                pruned_val_logits, val_x, val_y, judge, steps)

    # 4. choose what ships -------------------------------------------------------------------
    precision = choose_precision(profile.default_precision, precisions, val_parity,
                                 cfg.max_accuracy_drop)
    for text in precision.fallbacks:
        steps.fallback(text)
    shipped = precision.precision
    selection = _selection_record(cfg, data, val_y, prune_report, val_parity, shipped)

    # 5. the test split, read once: every model of the comparison, for the report -------------
    with steps.stage("evaluate on test"):
        test_x, test_y = _split_inputs(base, data, "test")
        base_metrics, pruned_metrics, parity, test_logits = _test_report(
            cfg, base, pruned, data, files, test_x, test_y, work, steps)
    # temperature scaling of the shipped file, fitted on val (test ECE only reported)
    from edgexray.calibrate import calibration_record
    calibration = calibration_record(val_logits[shipped], val_y, test_logits[shipped], test_y)
    steps.say(f"temperature {calibration['temperature']:.3f} (fitted on val): val ECE "
              f"{calibration['ece_before']:.4f} -> {calibration['ece_after']:.4f}, test ECE "
              f"{calibration['test']['ece_before']:.4f} -> {calibration['test']['ece_after']:.4f}")
    decision = roc_png = None
    if cfg.positive_class is not None:  # the operating point, on calibrated val probabilities
        from edgexray.runtime.metrics import softmax
        from edgexray.operating_point import decision_record
        t = calibration["temperature"]
        decision = decision_record(cfg.positive_class, cfg.target_sensitivity, names,
                                   softmax(val_logits[shipped] / t), val_y,
                                   softmax(test_logits[shipped] / t), test_y,
                                   data_mod.split_group_ids(data, "test"), cfg.seed)
        steps.say("operating point: " + decision_text(decision))
        from edgexray.plots import plot_roc_point
        i = names.index(cfg.positive_class)
        sens, spec = decision["test"]["sensitivity"], decision["test"]["specificity"]
        if sens is not None and spec is not None:
            roc_png = plot_roc_point(test_y == i, softmax(test_logits[shipped] / t)[:, i],
                                     (sens, spec),
                                     f"{cfg.positive_class} at p >= {decision['threshold']:.3f}")

    # 6. host benchmark: the same run measures the baselines a user would otherwise ship -----
    with steps.stage("host benchmark"):
        bench = _host_bench(cfg, profile, base, pruned, work, files, shipped, data, test_x, test_y,
                            steps)

    # 7. the external test set, read once, by every model (the shipped one in the bundle) ------
    external_rows, holder = None, {}
    if ext is not None:
        with steps.stage("external test set: every model"):
            external_rows = _external_rows(ext, base, pruned, files, bench, work, cfg.seed)

    # 8. bundle -------------------------------------------------------------------------------
    with steps.stage("bundle"):
        artifact = _bundle(cfg, profile, base, pruned, data, files, shipped, parity, prune_report,
                           base_metrics, pruned_metrics, bench, steps, synthetic, test_y, out,
                           selection, external=(ext, external_rows, holder) if ext else None,
                           calibration=calibration, decision=decision, roc_png=roc_png)
    summary.update(artifact=str(artifact), zip=str(artifact) + ".zip", shipped_precision=shipped,
                   stage_seconds=steps.times, unpruned=base_metrics["accuracy"],
                   pruned=pruned_metrics["accuracy"],
                   exported={p: parity[p]["candidate"]["accuracy"] for p in parity},
                   intervals={"unpruned": base_metrics["ci95"]["accuracy"],
                              "pruned": pruned_metrics["ci95"]["accuracy"],
                              **{p: parity[p]["candidate"]["ci95"]["accuracy"] for p in parity}},
                   pruning_level=selection["decisions"][0]["chosen"],
                   selection=selection, fallbacks=steps.fallbacks,
                   reduction=prune_report["reduction"], bench=bench["summary"],
                   grouping=data.grouping, leakage=_leakage_brief(data.leakage),
                   external=holder.get("external"), calibration=calibration, decision=decision)
    summary["warnings"] = json.loads((Path(artifact) / "manifest.json").read_text(
        encoding="utf-8")).get("warnings") or []
    for w in summary["warnings"]:
        steps.say(f"WARNING: {w}")
    atomic_write_json(work / "summary.json", summary)
    return summary


# ---------------------------------------------------------------------------------------------
# stages

def _trained_model(cfg: BuildConfig, profile, given, work: Path, demo: bool, progress: bool):
    """The unpruned model (the given checkpoint, or one trained now) and its prepared data."""
    if demo:
        from edgexray.synth import synthesize
        data_dir = synthesize(work / "synthetic-data", classes=cfg.synth_classes,
                              per_class=cfg.synth_per_class, seed=cfg.seed, force=True,
                              progress=progress)
        Progress.say(f"made {cfg.synth_classes * cfg.synth_per_class} SYNTHETIC X-rays "
                     f"in {data_dir}")
    else:
        data_dir = cfg.data_dir
    if given is not None:
        from edgexray.evaluate import held_out_data
        if cfg.size and cfg.size != given.preprocess.size:
            raise EdgeXrayError(f"--size {cfg.size} but the checkpoint was trained at "
                                f"{given.preprocess.size} px; drop --size or retrain")
        if cfg.group_regex or not cfg.group:
            Progress.say("--group-regex / --no-group ignored: the checkpoint's own splits are reused")
        return given, held_out_data(given, data_dir, progress)
    from edgexray.checkpoint import load_checkpoint
    from edgexray.data import SplitConfig
    from edgexray.train import ModelConfig, TrainConfig, train_folder
    size = cfg.size or profile.input_size
    run = train_folder(data_dir, work / "train",
                       ModelConfig(arch=cfg.arch, size=size, width=cfg.width,
                                   pretrained=cfg.pretrained, weights=cfg.weights),
                       TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed),
                       split_cfg=SplitConfig(group_regex=cfg.group_regex, auto_group=cfg.group),
                       force=True, progress=progress)
    return load_checkpoint(run.checkpoint), run.data


def _split_inputs(ckpt, data, split: str):
    if len(data.labels[split]) == 0:
        raise EdgeXrayError(f"the {split} split is empty; the build needs held-out images "
                            "(use a 60/20/20 split with enough images per class)")
    return ckpt.preprocess.normalize(data.arrays[split]), data.labels[split]


def _metrics(y, logits, names, intervals: bool = False, groups=None, seed: int = 0) -> dict:
    from edgexray.runtime.metrics import classification_metrics, softmax
    return classification_metrics(y, softmax(logits), names, intervals=intervals, groups=groups,
                                  seed=seed)


def _export(cfg, profile, pruned, data, work, precisions, ref_logits, val_x, val_y, judge,
            steps):
    """Export every precision through export_model (what `edgexray export` runs), its choices
    made on the validation split; then each file's parity with the pruned PyTorch model and its
    accuracy budget against the unpruned model, on the validation split too."""
    from edgexray.export.exporter import export_model
    from edgexray.export.selection import budget_text

    fmt = profile.model_format
    if fmt not in ("tflite", "onnx"):
        raise EdgeXrayError(f"target {profile.name} runs {profile.runtime}; edgexray build ships "
                            "TFLite (LiteRT) or ONNX (ONNX Runtime) artifacts")
    for p in precisions:
        if fmt == "onnx" and p not in ("fp32", "int8"):
            raise EdgeXrayError(f"precision {p!r} is not built for ONNX Runtime targets; "
                                "allowed: fp32, int8")
    result = export_model(
        pruned.model, work / "export", class_names=pruned.class_names,
        preprocess=pruned.preprocess, eval_inputs=val_x, eval_labels=val_y, formats=fmt,
        precisions=precisions, reference_logits=ref_logits,
        calib=train_calibration(data, pruned.preprocess, cfg.calib_count, cfg.seed),
        max_accuracy_drop=cfg.max_accuracy_drop,
        metadata={"arch": pruned.arch, "model_options": pruned.model_options},
        info={"checkpoint": str(pruned.path), "arch": pruned.arch,
              "parity_data": {"split": "val", "root": str(data.index.root)}},
        force=True)  # the build folder is the build's own
    entries = {e["precision"]: e for e in result.report["files"]}
    files, results, val_logits = {}, {}, {}
    for p in precisions:  # the profile's order
        files[p], logits = result.files[(fmt, p)], result.logits[(fmt, p)]
        val_logits[p] = logits
        results[p] = dict(entries[p]["parity"], split="val", budget=judge(logits))
        if "scheme_choice" in entries[p]:  # the ONNX INT8 scheme, measured on val on this CPU
            results[p]["int8_scheme"] = scheme = entries[p]["scheme_choice"]
            steps.say(f"ONNX INT8 scheme {scheme['chosen']} (chosen on val on this CPU: "
                      + ", ".join(f"{n} {r['accuracy']:.4f} / {r['p50_ms']:.2f} ms"
                                  for n, r in scheme["schemes"].items()) + ")")
        steps.say(f"{files[p].name}: {budget_text(results[p]['budget'])}, top-1 agreement with "
                  f"PyTorch {results[p]['top1_agreement']:.4f}, max |diff| "
                  f"{results[p]['max_abs_diff']:.2e}")
    atomic_write_json(work / "export" / "parity_val.json", _jsonable(results))
    return files, results, val_logits


def _selection_record(cfg, data, val_y, prune_report, val_parity, shipped) -> dict:
    """What decided what: the manifest's "selection" block."""
    groups = data_mod.split_group_ids(data, "val")
    notes = [t.get("note") for t in prune_report["attempts"]] + \
        [r["budget"]["note"] for r in val_parity.values()]
    return {
        "split": "val", "n_images": int(len(val_y)),
        "n_groups": None if groups is None else int(len(np.unique(groups))),
        "test_split": "read once, after every choice, for the report only",
        "budget": {"max_accuracy_drop_pp": cfg.max_accuracy_drop,
                   "rule": "upper 95% paired-bootstrap bound of the accuracy drop vs the unpruned "
                           "FP32 model <= budget, and no class's sensitivity drops by more than "
                           "the budget (point estimate); both on the val split",
                   "note": next((n for n in notes if n), None)},
        "decisions": [
            {"what": "pruning level", "split": "val", "chosen": prune_report["level"],
             "fallback": prune_report["level"] != prune_report["attempts"][0].get(
                 "level", level_name(prune_report["attempts"][0]["kind"],
                                     prune_report["attempts"][0]["amount"])),
             "candidates": [{k: t.get(k) for k in ("level", "accuracy_drop_pp",
                                                   "accuracy_drop_interval_pp", "passed",
                                                   "failures", "skipped")}
                            for t in prune_report["attempts"]]},
            {"what": "precision", "split": "val", "chosen": shipped,
             "candidates": [{"precision": p, "passed": r["budget"]["passed"],
                             "parity_passed": r["passed"],
                             "accuracy_drop_pp": r["budget"]["accuracy_drop_pp"],
                             "accuracy_drop_interval_pp": r["budget"]["accuracy_drop_interval_pp"],
                             "failures": r["budget"]["failures"]}
                            for p, r in val_parity.items()]},
            {"what": "INT8 calibration images", "split": "train",
             "n_images": int(min(cfg.calib_count, len(data.labels["train"])))},
            *([{"what": "ONNX INT8 scheme", "split": "val", "chosen": s["chosen"],
                "by": "fastest on this CPU among the schemes within "
                      f"{100 * s['accuracy_tolerance']:.1f} pp of FP32 accuracy",
                "cpu_model": s["cpu_model"],
                "candidates": [{"scheme": n, "accuracy": r["accuracy"], "p50_ms": r["p50_ms"]}
                               for n, r in s["schemes"].items()]}]
              if (s := val_parity.get("int8", {}).get("int8_scheme")) else []),
        ],
    }


def _test_report(cfg, base, pruned, data, files, test_x, test_y, work, steps):
    """Every model of the comparison on the test split, with 95% intervals (over groups when
    the split was grouped). Nothing here feeds back into a choice."""
    from edgexray.export.parity import parity as parity_check
    from edgexray.export.runners import run_file
    from edgexray.runtime.metrics import bootstrap_intervals, paired_drop, softmax

    names = list(base.class_names)
    groups = data_mod.split_group_ids(data, "test")
    base_logits = predict_logits(base.model, test_x)
    pruned_logits = predict_logits(pruned.model, test_x)
    base_metrics = _metrics(test_y, base_logits, names, True, groups, cfg.seed)
    pruned_metrics = _metrics(test_y, pruned_logits, names, True, groups, cfg.seed)
    parity, test_logits = {}, {}
    for p, path in files.items():
        logits = test_logits[p] = run_file(path, test_x)
        parity[p] = r = parity_check(pruned_logits, test_y, path, test_x, names, precision=p,
                                     max_accuracy_drop=cfg.max_accuracy_drop,
                                     candidate_logits=logits)
        r["split"] = "test"
        r["candidate"]["ci95"] = bootstrap_intervals(test_y, softmax(logits), names, groups,
                                                     seed=cfg.seed)
        d = paired_drop(test_y, base_logits.argmax(1), logits.argmax(1), names, groups,
                        seed=cfg.seed)
        r["drop_vs_unpruned_pp"] = d["accuracy_drop_pp"]
        r["drop_vs_unpruned_interval_pp"] = d["accuracy_drop_interval_pp"]
    atomic_write_json(work / "export" / "parity.json", _jsonable(parity))
    for label, m in (("unpruned FP32", base_metrics), ("pruned FP32", pruned_metrics),
                     *((f"exported {p}", parity[p]["candidate"]) for p in parity)):
        lo, hi = m["ci95"]["accuracy"]
        steps.say(f"test: {label} accuracy {m['accuracy']:.4f} (95% CI {lo:.4f}-{hi:.4f}) on "
                  f"{len(test_y)} images")
    return base_metrics, pruned_metrics, parity, test_logits


def _host_bench(cfg, profile, base, pruned, work, files, shipped, data, test_x, test_y,
                steps) -> dict:
    """Interleaved host benchmark of the compare set (bench.compare_set, as `edgexray compare`):
    what a user would run without edgexray, the pruned model and the shipped file.
    The two unpruned ONNX files are also scored on the held-out split."""
    from edgexray.bench import compare
    from edgexray.bench.compare_set import compare_set, shipped_contender, shipped_runtime
    from edgexray.export.baselines import unpruned_onnx
    from edgexray.export.runners import run_file

    bdir = work / "bench"
    bdir.mkdir(exist_ok=True)
    runner, gpu_note = shipped_runtime(profile, files[shipped])
    if gpu_note and runner != profile.runner:
        steps.fallback(gpu_note)

    def calib():
        return train_calibration(data, base.preprocess, min(cfg.calib_count, 100), cfg.seed)
    models = compare_set(base, unpruned_onnx(base, bdir, calib),
                         shipped_contender(shipped, files[shipped], runner), pruned=pruned.path,
                         exported=files)
    entries = models.timed_entries()
    # every runtime gets all of this host's cores: the same threads for each model
    doc = compare.compare_models(entries, None, seconds=cfg.bench_seconds * len(entries),
                                 memory=True)
    atomic_write_json(bdir / "results.json", doc)
    by_label = {e["label"]: e for e in doc["results"]}
    p50 = {c.label: by_label[c.label]["latency_ms"]["p50"] for c in models.timed()}
    shipped_p50 = p50[models.shipped.label]
    summary = {
        "label": "host latency (this build machine, not the device)",
        "cpu": doc["environment"].get("cpu_model"),
        "p50_ms": p50,
        "speedup_vs_unpruned_torch": p50[models.unpruned_torch.label] / shipped_p50,
        "speedup_vs_unpruned_ort_int8": p50[models.unpruned_ort_int8.label] / shipped_p50,
        "shipped_runner": runner,
        **({"gpu": gpu_note} if gpu_note else {}),
    }
    steps.say(f"host p50: shipped {shipped_p50:.2f} ms; "
              f"{summary['speedup_vs_unpruned_torch']:.1f}x faster than unpruned PyTorch FP32, "
              f"{summary['speedup_vs_unpruned_ort_int8']:.1f}x faster than unpruned ORT INT8")
    names = list(base.class_names)
    groups = data_mod.split_group_ids(data, "test")
    onnx_metrics = {c.label: _metrics(test_y, run_file(c.path, test_x), names, True, groups,
                                      cfg.seed)
                    for c in (models.unpruned_ort, models.unpruned_ort_int8)}
    return {"summary": summary, "document": doc, "models": models, "entries": by_label,
            "onnx_metrics": onnx_metrics}


def _model_rows(base, files, shipped, parity, prune_report, base_metrics, pruned_metrics,
                bench) -> list[dict]:
    """The report's before/after table: first row is the reference (unpruned FP32 PyTorch)."""
    before, after = prune_report["before"], prune_report["after"]
    models, entries = bench["models"], bench["entries"]

    def measured(contender):
        e = entries[contender.label]
        return {"size_bytes": e["size_bytes"], "latency_ms": e["latency_ms"],
                "memory_mb": e["memory_mb"]}

    onnx = bench["onnx_metrics"]
    rows = [
        {"label": models.unpruned_torch.label, "format": "pytorch", "precision": "fp32", **before,
         **measured(models.unpruned_torch), "accuracy": base_metrics["accuracy"],
         "metrics": base_metrics},
        *[{"label": c.label, "format": "onnx", "precision": p, **before, **measured(c),
           "accuracy": onnx[c.label]["accuracy"], "metrics": onnx[c.label]}
          for c, p in ((models.unpruned_ort, "fp32"), (models.unpruned_ort_int8, "int8"))],
        {"label": models.pruned.label, "format": "pytorch", "precision": "fp32", **after,
         **measured(models.pruned), "accuracy": pruned_metrics["accuracy"],
         "metrics": pruned_metrics},
    ]
    for (p, path), c in zip(files.items(), models.exported):
        row = {"label": c.label, "format": path.suffix[1:], "precision": p,
               **after, "size_bytes": path.stat().st_size,
               "accuracy": parity[p]["candidate"]["accuracy"], "metrics": parity[p]["candidate"]}
        if p == shipped:
            row.update(measured(models.shipped), shipped=True)
        rows.append(row)
    for row in rows:  # 95% bootstrap intervals on the test split
        ci = row["metrics"]["ci95"]
        row["accuracy_ci95"] = ci["accuracy"]
        row["per_class_ci95"] = ci["per_class"]
    return rows


def _external_rows(ext, base, pruned, files, bench, work, seed) -> dict:
    """External-set metrics of every model of the comparison table, by its row label (the
    shipped artifact is scored through its run.py when bundled: external.artifact_hook)."""
    from edgexray import external
    # the PyTorch rows run in memory; every other row is a file
    in_memory = {bench["models"].unpruned_torch.label: base.model,
                 bench["models"].pruned.label: pruned.model}
    models = {c.label: in_memory.get(c.label, c.path) for c in bench["models"].table()}
    rows = external.evaluate_models(ext, models, base.preprocess, seed)
    for label, m in rows.items():
        ci = m["ci95"]["accuracy"]
        Progress.say(f"external {label}: accuracy {m['accuracy']:.4f} "
                     f"(95% CI {ci[0]:.4f}-{ci[1]:.4f})")
    return rows


def _leakage_brief(leak: dict | None) -> dict | None:
    return None if leak is None else {k: v for k, v in leak.items() if not isinstance(v, list)}


def _bundle(cfg, profile, base, pruned, data, files, shipped, parity, prune_report, base_metrics,
            pruned_metrics, bench, steps, synthetic, test_y, out, selection, external=None,
            calibration=None, decision=None, roc_png=None):
    from edgexray import plots
    from edgexray.export.bundle import write_artifact
    from edgexray.gradcam import gradcam_pairs
    from edgexray.fsutil import sha256_file

    chosen = next(c for c in selection["decisions"] if c["what"] == "precision")
    check = next(c for c in chosen["candidates"] if c["precision"] == shipped)
    budgets = {"max_accuracy_drop_pp": {
        "limit": cfg.max_accuracy_drop, "split": "val", "measured": check["accuracy_drop_pp"],
        "upper_95": check["accuracy_drop_interval_pp"][1], "passed": check["passed"],
        "rule": "upper 95% bound of the paired drop, and every class's sensitivity drop "
                "(point estimate), within the limit",
        "note": selection["budget"]["note"],
        "test_drop_pp": parity[shipped]["drop_vs_unpruned_pp"],
        "test_drop_interval_pp": parity[shipped]["drop_vs_unpruned_interval_pp"]}}
    if cfg.latency_budget_ms is not None:
        host = prune_report["host_torch_latency_ms"]["after"]
        budgets["latency_budget_ms (host, PyTorch)"] = {
            "limit": cfg.latency_budget_ms, "measured": host, "passed": host <= cfg.latency_budget_ms}
    manifest_fields = {
        "synthetic_data": synthetic,
        "models": _model_rows(base, files, shipped, parity, prune_report, base_metrics,
                              pruned_metrics, bench),
        "reduction": prune_report["reduction"],
        "selection": selection,
        "calibration": calibration,  # run.py divides the logits by its temperature
        "decision": decision,  # run.py predict's threshold for the positive class (or None)
        "accuracy": {"split": "test", "n": int(len(test_y)),
                     "ci95": {"unpruned_fp32": base_metrics["ci95"]["accuracy"],
                              "pruned_fp32": pruned_metrics["ci95"]["accuracy"],
                              **{f"exported_{p}": parity[p]["candidate"]["ci95"]["accuracy"]
                                 for p in parity}},
                     "unpruned_fp32": base_metrics["accuracy"],
                     "pruned_fp32": pruned_metrics["accuracy"],
                     **{f"exported_{p}": parity[p]["candidate"]["accuracy"] for p in parity}},
        "parity": {files[p].name: {k: v for k, v in r.items() if not isinstance(v, (dict, list))}
                   for p, r in parity.items()},
        "budgets": budgets,
        "fallbacks": steps.fallbacks,
        "prune": {k: prune_report[k] for k in ("method", "criterion", "schedule", "config",
                                               "spine_widths", "attempts", "target", "level")
                  if k in prune_report},
        "channels_kept": prune_report.get("layers"),
        "host_benchmark": bench["summary"],
        "host_benchmark_results": bench["document"],
        "source_checkpoint_sha256": sha256_file(base.path),
        "grouping": data.grouping,  # the patient key of the splits and its group counts
        "leakage": data.leakage,  # duplicate images found in the data folder (edgexray.leakage)
        "config": _jsonable(asdict(cfg)),
    }
    names = list(base.class_names)
    plot_assets = {
        "Parameters before/after": plots.bar_before_after(
            {"unpruned": prune_report["before"]["params"] / 1e6,
             "pruned": prune_report["after"]["params"] / 1e6}, "million parameters", "Size"),
        "Host latency p50 (ms)": plots.bar_before_after(
            {k.replace(" (shipped)", ""): v for k, v in bench["summary"]["p50_ms"].items()},
            "ms (host)", "Host latency, batch 1"),
        "Test accuracy": plots.bar_before_after(
            {"unpruned": base_metrics["accuracy"], "pruned": pruned_metrics["accuracy"],
             **{p: parity[p]["candidate"]["accuracy"] for p in parity}}, "accuracy", "Held-out accuracy"),
    }
    if roc_png is not None:
        plot_assets["ROC with the operating point (test)"] = roc_png
    gradcam_assets = gradcam_pairs(base, pruned, data) if synthetic else {}
    test_files = data.splits["test"]  # real held-out images: ARM rounding is judged on them too
    verify = _arm_verifier(cfg, profile, steps, [Path(data.index.root) / rel for rel in
                                                 test_files[::max(1, len(test_files) // 6)][:6]])
    if external is not None:  # scores the finished artifact through its run.py
        from edgexray.external import artifact_hook
        ext, rows, holder = external
        verify = artifact_hook(ext, rows, "shipped artifact (run.py)", verify, holder, steps.say)
    tasks = _tasks_model(cfg, profile, pruned, data, files[shipped], steps)
    if tasks is not None:
        manifest_fields["tasks_variant_measured"] = tasks[1]
        manifest_fields["models"].append(
            {"label": "pruned int8 Tasks-ready (uint8 RGB in, probabilities out)",
             "format": "tflite", "precision": "int8", "size_bytes": tasks[0].stat().st_size,
             "latency_ms": {"p50": tasks[1]["latency_ms_p50"]}, "accuracy": tasks[1]["accuracy"]})
    if external is not None and tasks is not None:  # the row just added, on the external set too
        from edgexray.external import pixels_model_metrics
        external[1][manifest_fields["models"][-1]["label"]] = pixels_model_metrics(external[0],
                                                                                   tasks[0])
    from edgexray.review import models2warnings
    manifest_fields["warnings"] = models2warnings(manifest_fields["models"])  # + external: hook
    return write_artifact(out, target=profile, arch=base.arch, precision=shipped,
                          model_files={p: files[p] for p in files}, manifest_fields=manifest_fields,
                          class_names=names, preprocess=base.preprocess,
                          report_assets={"plots": plot_assets, "gradcam": gradcam_assets},
                          images_are_synthetic=synthetic, verify=verify,
                          tasks_model=tasks and tasks[0], force=cfg.force)


def _tasks_model(cfg, profile, pruned, data, shipped_file, steps):
    """(path, measured) of the Tasks-ready INT8 variant (MediaPipe / LiteRT Task Library) for
    LiteRT targets, measured on the test split against the shipped int8-I/O file; None, said,
    when the converter cannot make it (the build goes on without it)."""
    if profile.model_format != "tflite":
        return None
    from edgexray.export.tasks_variant import TASKS_FILE, measure_tasks_variant, torch2tasks_tflite
    try:
        path = torch2tasks_tflite(pruned.model, shipped_file.parent / TASKS_FILE,
                                  preprocess=pruned.preprocess,
                                  calib=train_calibration(data, pruned.preprocess,
                                                          cfg.calib_count, cfg.seed),
                                  class_names=list(pruned.class_names))
    except EdgeXrayError as e:
        steps.say(f"Tasks-ready variant not made ({e}); the artifact ships without it")
        return None
    m = measure_tasks_variant(path, shipped_file, data.arrays["test"], data.labels["test"],
                              pruned.preprocess)
    steps.say(f"Tasks-ready variant {path.name} (uint8 RGB in, float32 probabilities out): test "
              f"accuracy {m['accuracy']:.4f} vs {m['shipped_accuracy']:.4f} int8-I/O, top-1 "
              f"agreement {m['top1_agreement_with_shipped']:.4f}, host p50 "
              f"{m['latency_ms_p50']:.2f} vs {m['shipped_latency_ms_p50']:.2f} ms")
    return path, m


def _arm_verifier(cfg, profile, steps, real_images=()):
    if profile.arch != "aarch64":
        return None
    if not cfg.verify_arm:
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


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))
