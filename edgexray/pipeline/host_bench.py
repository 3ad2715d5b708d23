"""The build's host benchmark: the compare set (bench.compare_set, as `edgexray compare`)
measured in one interleaved run on this machine, and the unpruned ONNX files scored on test."""

from __future__ import annotations

from dataclasses import dataclass

from edgexray import data as data_mod
from edgexray.fsutil import atomic_write_json
from edgexray.pipeline.state import BuildState, logits_metrics
from edgexray.runtime.latency import gmac_per_s


@dataclass(frozen=True, eq=False)
class HostBench:
    models: object  # bench.compare_set.CompareSet
    summary: dict  # manifest "host_benchmark": p50 by label, speed-ups, the shipped runner
    document: dict  # the edgexray.bench/1 document (manifest "host_benchmark_results")
    onnx_metrics: dict  # test metrics of the two unpruned ONNX files, by label

    def measured(self, contender) -> dict:
        e = next(e for e in self.document["results"] if e["label"] == contender.label)
        return {"size_bytes": e["size_bytes"], "latency_ms": e["latency_ms"], "memory_mb": e["memory_mb"]}


def host_bench(state: BuildState) -> HostBench:
    """What a user would run without edgexray, the pruned model and the shipped file, timed
    interleaved; the two unpruned ONNX files are also scored on the test split."""
    from edgexray.bench import compare
    from edgexray.bench.compare_set import compare_set, shipped_contender, shipped_runtime
    from edgexray.export.baselines import unpruned_onnx
    from edgexray.export.calibration import train_calibration
    from edgexray.runtime.runners import predict_file

    cfg, base, steps = state.cfg, state.base, state.steps
    bdir = state.work / "bench"
    bdir.mkdir(exist_ok=True)
    runner, gpu_note = shipped_runtime(state.profile, state.shipped_file)
    if gpu_note and runner != state.profile.runner:
        steps.fallback(gpu_note)

    def calib():
        return train_calibration(state.data, base.preprocess, min(cfg.calib_count, 100), cfg.seed)

    # the INT8 baseline's scheme chosen on val as a careful user would (export.baselines)
    baselines = unpruned_onnx(base, bdir, calib, val_inputs=state.val_x, val_labels=state.val_y)
    models = compare_set(
        base,
        baselines,
        shipped_contender(state.shipped, state.shipped_file, runner),
        pruned=state.pruned.checkpoint.path,
        exported=state.exported.files,
    )
    entries = models.timed_entries()
    # every runtime gets all of this host's cores: the same threads for each model
    doc = compare.compare_models(entries, None, seconds=cfg.bench_seconds * len(entries), memory=True)
    atomic_write_json(bdir / "results.json", doc)
    by_label = {e["label"]: e for e in doc["results"]}
    p50 = {c.label: by_label[c.label]["latency_ms"]["p50"] for c in models.timed()}
    shipped_p50 = p50[models.shipped.label]
    report = state.pruned.report
    macs = {c.label: report["before"].get("macs") for c in models.timed()[:3]}
    macs.update({c.label: report["after"].get("macs") for c in models.timed()[3:]})
    summary = {
        "label": "host latency (this build machine, not the device)",
        "cpu": doc["environment"].get("cpu_model"),
        "p50_ms": p50,
        # min/p50/p90 and how many timed runs each figure rests on
        "latency_ms": {
            c.label: {k: by_label[c.label]["latency_ms"][k] for k in ("min", "p50", "p90", "runs")}
            for c in models.timed()
        },
        "gmac_per_s": {k: rate for k, v in p50.items() if (rate := gmac_per_s(macs[k], v))},
        "speedup_vs_unpruned_torch": p50[models.unpruned_torch.label] / shipped_p50,
        "speedup_vs_unpruned_ort_int8": p50[models.unpruned_ort_int8.label] / shipped_p50,
        "shipped_runner": runner,
        "unpruned_ort_int8_scheme": baselines.int8_scheme,
        "unpruned_ort_int8_scheme_choice": baselines.scheme_choice,
        **({"gpu": gpu_note} if gpu_note else {}),
    }
    steps.say(
        f"host p50: shipped {shipped_p50:.2f} ms; "
        f"{summary['speedup_vs_unpruned_torch']:.1f}x faster than unpruned PyTorch FP32, "
        f"{summary['speedup_vs_unpruned_ort_int8']:.1f}x faster than unpruned ORT INT8"
    )
    groups = data_mod.split_group_ids(state.data, "test")
    x, y = state.test.x, state.test.y
    onnx_metrics = {
        c.label: logits_metrics(y, predict_file(c.path, x), state.names, True, groups, cfg.seed)
        for c in (models.unpruned_ort, models.unpruned_ort_int8)
    }
    return HostBench(models, summary, doc, onnx_metrics)
