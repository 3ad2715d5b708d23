"""The build's summary: the record (build-<target>/summary.json, returned by build()) and the
text `edgexray build` prints at the end (a table of key and value)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from edgexray.pipeline.state import BuildState, jsonable


def summary_record(state: BuildState, artifact: Path, external: dict | None) -> dict:
    """The summary of a finished build; its warnings are the sealed manifest's."""
    from edgexray.export.build_manifest import leakage_brief

    test, parity, steps = state.test, state.test.parity, state.steps
    summary = {
        "target": state.profile.name,
        "config": jsonable(asdict(state.cfg)),
        "synthetic": state.synthetic,
        "artifact": str(artifact),
        "zip": str(artifact) + ".zip",
        "shipped_precision": state.shipped,
        "stage_seconds": steps.times,
        "unpruned": test.base_metrics["accuracy"],
        "pruned": test.pruned_metrics["accuracy"],
        "exported": {p: parity[p]["candidate"]["accuracy"] for p in parity},
        # unpruned/pruned/exported: labels by argmax; at the operating point: "decision"
        "test_accuracy_labels_by": "argmax",
        "intervals": {
            "unpruned": test.base_metrics["ci95"]["accuracy"],
            "pruned": test.pruned_metrics["ci95"]["accuracy"],
            **{p: parity[p]["candidate"]["ci95"]["accuracy"] for p in parity},
        },
        "pruning_level": state.selection["decisions"][0]["chosen"],
        "selection": state.selection,
        "fallbacks": steps.fallbacks,
        "reduction": state.pruned.report["reduction"],
        "bench": state.bench.summary,
        "grouping": state.data.grouping,
        "leakage": leakage_brief(state.data.leakage),
        "external": external,
        "calibration": state.calibrated.calibration,
        "decision": state.calibrated.decision,
    }
    manifest = json.loads((Path(artifact) / "manifest.json").read_text(encoding="utf-8"))
    summary["warnings"] = manifest.get("warnings") or []
    summary["saliency"] = manifest.get("saliency")  # Grad-CAM vs the shipped file: IoU per image
    summary["budgets"] = manifest.get("budgets")
    return summary


def decision_text(d: dict) -> str:
    test, ci = d["test"], d["test"]["ci95"]

    def pct(v, interval=None):
        if v is None:
            return "n/a"
        return f"{100 * v:.1f}%" + (
            f" (95% CI {100 * interval[0]:.1f}-{100 * interval[1]:.1f})" if interval else ""
        )

    accuracy = (
        f", accuracy {pct(test['accuracy'], ci.get('accuracy'))} (run.py's labels)"
        if "accuracy" in test
        else ""
    )
    return (
        f"{d['positive_class']} when p >= {d['threshold']:.4f} (chosen on val for "
        f"sensitivity >= {d['target_sensitivity']}: val sensitivity "
        f"{pct(d['val']['sensitivity'])}, specificity {pct(d['val']['specificity'])}); test "
        f"sensitivity {pct(test['sensitivity'], ci['sensitivity'])}, specificity "
        f"{pct(test['specificity'], ci['specificity'])}{accuracy}"
    )


def calibration_lines(cal: dict | None) -> list[tuple[str, str]]:
    if not cal:
        return []
    text = (
        f"T {cal['temperature']:.3f} (fitted on val); ECE (15 bins) val "
        f"{cal['ece_before']:.4f} -> {cal['ece_after']:.4f}"
    )
    if cal.get("test"):
        text += f", test {cal['test']['ece_before']:.4f} -> {cal['test']['ece_after']:.4f}"
    return [("calibration", text)]


def host_latency_text(bench: dict, label: str) -> str:
    """p50, then min/p90 over the timed runs and the achieved GMAC/s where known."""
    text = f"{bench['p50_ms'][label]:.2f} ms"
    if lat := (bench.get("latency_ms") or {}).get(label):
        text += f" (min {lat['min']:.2f}, p90 {lat['p90']:.2f}, {lat['runs']} runs)"
    if rate := (bench.get("gmac_per_s") or {}).get(label):
        text += f", {rate:.2f} GMAC/s"
    return text


def budget_lines(budgets: dict | None) -> list[tuple[str, str]]:
    """The profile's device budgets: passed / failed with the value, or why not measured."""
    rows = []
    for key, b in (budgets or {}).items():
        if not isinstance(b, dict) or "status" not in b:
            continue
        if b["status"] == "not measured":
            rows.append((f"budget {key}", f"{b['limit']:g}: not measured ({b['reason']})"))
        else:
            rows.append(
                (f"budget {key}", f"{b['limit']:g}: {b['status']}, {b['measured']:.2f} on {b['measured_on']}")
            )
    return rows


def candidate_lines(selection: dict) -> list[tuple[str, str]]:
    """Every exported precision: its val budget check and, when timed on the target, its
    latency, peak RSS and ratio to the shipped file."""
    choice = next(d for d in selection["decisions"] if d["what"] == "precision")
    where = choice.get("latency_measured_on")
    rows = [("shipped because", choice.get("by") or "the profile's precision order")]
    if where is None:
        rows.append(("device latency", f"not measured ({choice.get('latency_not_measured')})"))
    for c in choice["candidates"]:
        text = "within the val budget" if c["passed"] and c["parity_passed"] else "outside the val budget"
        if lat := c.get("latency_ms"):
            text += (
                f"; {lat['p50']:.2f} ms p50 (min {lat['min']:.2f}, p90 {lat['p90']:.2f}, {lat['runs']} runs)"
                f", {c['vs_shipped']:.2f}x the shipped p50"
                + (f", peak RSS {c['peak_rss_mb']:.0f} MB" if c.get("peak_rss_mb") else "")
            )
        rows.append(
            (
                f"candidate {c['precision']}" + (" (shipped)" if c["precision"] == choice["chosen"] else ""),
                text,
            )
        )
    return rows


def format_summary(summary: dict) -> str:
    red = summary["reduction"]
    b = summary["bench"]
    ci = summary["intervals"]
    sel = summary["selection"]

    def acc(value, interval):
        return f"{value:.4f} (95% CI {interval[0]:.4f}-{interval[1]:.4f})"

    # with an operating point run.py labels by its threshold; these comparison rows are argmax
    by = " (argmax)" if summary.get("decision") else ""

    rows = [
        *[("WARNING", w) for w in summary.get("warnings") or []],
        ("artifact", summary["artifact"]),
        ("data", "SYNTHETIC X-rays (demo)" if summary["synthetic"] else "user data"),
        ("pruning level", summary["pruning_level"]),
        ("shipped precision", summary["shipped_precision"]),
        ("chosen on", f"val split ({sel['n_images']} images); test read once, for the report"),
        *candidate_lines(sel),
        *[("fallback", f) for f in summary["fallbacks"]],
        *([("budget note", sel["budget"]["note"])] if sel["budget"]["note"] else []),
        ("params removed", f"{100 * red['params']:.1f}%"),
        ("MACs removed", f"{100 * red['macs']:.1f}%"),
        (f"test accuracy unpruned FP32{by}", acc(summary["unpruned"], ci["unpruned"])),
        (f"test accuracy pruned FP32{by}", acc(summary["pruned"], ci["pruned"])),
        *[(f"test accuracy exported {p}{by}", acc(a, ci[p])) for p, a in summary["exported"].items()],
        *[(f"host p50 {k}", host_latency_text(b, k)) for k in b["p50_ms"]],
        ("host speed-up vs unpruned PyTorch", f"{b['speedup_vs_unpruned_torch']:.1f}x"),
        ("host speed-up vs unpruned ORT INT8", f"{b['speedup_vs_unpruned_ort_int8']:.1f}x"),
        *budget_lines(summary.get("budgets")),
        *calibration_lines(summary.get("calibration")),
        *([("operating point", decision_text(summary["decision"]))] if summary.get("decision") else []),
        ("stage times (s)", ", ".join(f"{k} {v}" for k, v in summary["stage_seconds"].items())),
    ]
    from edgexray.external import format_lines, grouping_lines

    rows += grouping_lines(summary.get("grouping"), summary.get("leakage"))
    rows += format_lines(summary.get("external"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
