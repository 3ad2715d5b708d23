"""The manifest fields `edgexray build` adds to its artifact (docs/ARCHITECTURE.md "manifest"):
the comparison table, what decided what, budgets, accuracy with intervals, parity, pruning, the
host benchmark. Each function reads a build's state (edgexray.pipeline.state.BuildState)."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from edgexray.fsutil import sha256_file

TASKS_ROW_LABEL = "pruned int8 Tasks-ready (uint8 RGB in, probabilities out)"


def selection_record(state) -> dict:
    """What decided what: the manifest's "selection" block."""
    from edgexray.data import split_group_ids
    from edgexray.prune.budget import level_name

    cfg, data, prune_report = state.cfg, state.data, state.pruned.report
    val_parity, shipped = state.exported.val_parity, state.shipped
    groups = split_group_ids(data, "val")
    timed = state.candidates
    timed_rows = {r.pop("precision"): r for r in timed.rows(shipped)}
    notes = [t.get("note") for t in prune_report["attempts"]] + [
        r["budget"]["note"] for r in val_parity.values()
    ]
    return {
        "split": "val",
        "n_images": int(len(state.val_y)),
        "n_groups": None if groups is None else int(len(np.unique(groups))),
        "test_split": "read once, after every choice, for the report only",
        "budget": {
            "max_accuracy_drop_pp": cfg.max_accuracy_drop,
            "rule": "upper 95% paired-bootstrap bound of the accuracy drop vs the unpruned "
            "FP32 model <= budget, and no class's sensitivity drops by more than "
            "the budget (point estimate); both on the val split",
            "note": next((n for n in notes if n), None),
        },
        "decisions": [
            {
                "what": "pruning level",
                "split": "val",
                "chosen": prune_report["level"],
                "fallback": prune_report["level"]
                != prune_report["attempts"][0].get(
                    "level",
                    level_name(prune_report["attempts"][0]["kind"], prune_report["attempts"][0]["amount"]),
                ),
                "candidates": [
                    {
                        k: t.get(k)
                        for k in (
                            "level",
                            "accuracy_drop_pp",
                            "accuracy_drop_interval_pp",
                            "passed",
                            "failures",
                            "skipped",
                        )
                    }
                    for t in prune_report["attempts"]
                ],
            },
            {
                "what": "precision",
                "split": "val",
                "chosen": shipped,
                "by": state.shipped_by,
                "latency_measured_on": timed.where,
                **({"latency_not_measured": timed.reason} if timed.where is None else {}),
                "candidates": [
                    {
                        "precision": p,
                        "passed": r["budget"]["passed"],
                        "parity_passed": r["passed"],
                        "accuracy_drop_pp": r["budget"]["accuracy_drop_pp"],
                        "accuracy_drop_interval_pp": r["budget"]["accuracy_drop_interval_pp"],
                        "failures": r["budget"]["failures"],
                        **timed_rows.get(p, {}),
                    }
                    for p, r in val_parity.items()
                ],
            },
            {
                "what": "INT8 calibration images",
                "split": "train",
                "n_images": int(min(cfg.calib_count, len(data.labels["train"]))),
            },
            *(
                [
                    {
                        "what": "ONNX INT8 scheme",
                        "split": "val",
                        "chosen": s["chosen"],
                        "by": "fastest on this CPU among the schemes within "
                        f"{100 * s['accuracy_tolerance']:.1f} pp of FP32 accuracy",
                        "cpu_model": s["cpu_model"],
                        "candidates": [
                            {"scheme": n, "accuracy": r["accuracy"], "p50_ms": r["p50_ms"]}
                            for n, r in s["schemes"].items()
                        ],
                    }
                ]
                if (s := val_parity.get("int8", {}).get("int8_scheme"))
                else []
            ),
        ],
    }


def model_rows(state) -> list[dict]:
    """The report's before/after table: first row is the reference (unpruned FP32 PyTorch)."""
    report, test, bench = state.pruned.report, state.test, state.bench
    before, after = report["before"], report["after"]
    models, onnx = bench.models, bench.onnx_metrics
    rows = [
        {
            "label": models.unpruned_torch.label,
            "format": "pytorch",
            "precision": "fp32",
            **before,
            **bench.measured(models.unpruned_torch),
            "accuracy": test.base_metrics["accuracy"],
            "metrics": test.base_metrics,
        },
        *[
            {
                "label": c.label,
                "format": "onnx",
                "precision": p,
                **before,
                **bench.measured(c),
                "accuracy": onnx[c.label]["accuracy"],
                "metrics": onnx[c.label],
            }
            for c, p in ((models.unpruned_ort, "fp32"), (models.unpruned_ort_int8, "int8"))
        ],
        {
            "label": models.pruned.label,
            "format": "pytorch",
            "precision": "fp32",
            **after,
            **bench.measured(models.pruned),
            "accuracy": test.pruned_metrics["accuracy"],
            "metrics": test.pruned_metrics,
        },
    ]
    for (p, path), c in zip(state.exported.files.items(), models.exported):
        candidate = test.parity[p]["candidate"]
        row = {
            "label": c.label,
            "format": path.suffix[1:],
            "precision": p,
            **after,
            "size_bytes": path.stat().st_size,
            "accuracy": candidate["accuracy"],
            "metrics": candidate,
        }
        if p == state.shipped:
            row.update(bench.measured(models.shipped), shipped=True)
        else:
            row.update(bench.measured(c))
        rows.append(row)
    from edgexray.runtime.latency import gmac_per_s

    for row in rows:  # 95% bootstrap intervals on the test split
        ci = row["metrics"]["ci95"]
        row["accuracy_ci95"] = ci["accuracy"]
        row["per_class_ci95"] = ci["per_class"]
        if rate := gmac_per_s(row.get("macs"), (row.get("latency_ms") or {}).get("p50")):
            row["gmac_per_s"] = rate
    return rows


def tasks_row(path, measured: dict) -> dict:
    """The table row of the Tasks-ready INT8 variant (export.tasks_variant)."""
    return {
        "label": TASKS_ROW_LABEL,
        "format": "tflite",
        "precision": "int8",
        "size_bytes": path.stat().st_size,
        "latency_ms": {"p50": measured["latency_ms_p50"]},
        "accuracy": measured["accuracy"],
    }


def leakage_brief(leak: dict | None) -> dict | None:
    return None if leak is None else {k: v for k, v in leak.items() if not isinstance(v, list)}


def budgets(state) -> dict:
    """The manifest's "budgets": the accuracy budget (chosen on val, test drop reported) and,
    when given, the host latency budget."""
    cfg, selection, parity = state.cfg, state.selection, state.test.parity
    chosen = next(c for c in selection["decisions"] if c["what"] == "precision")
    check = next(c for c in chosen["candidates"] if c["precision"] == state.shipped)
    out = {
        "max_accuracy_drop_pp": {
            "limit": cfg.max_accuracy_drop,
            "split": "val",
            "measured": check["accuracy_drop_pp"],
            "upper_95": check["accuracy_drop_interval_pp"][1],
            "passed": check["passed"],
            "rule": "upper 95% bound of the paired drop, and every class's sensitivity drop "
            "(point estimate), within the limit",
            "note": selection["budget"]["note"],
            "test_drop_pp": parity[state.shipped]["drop_vs_unpruned_pp"],
            "test_drop_interval_pp": parity[state.shipped]["drop_vs_unpruned_interval_pp"],
        }
    }
    if cfg.latency_budget_ms is not None:
        host = state.pruned.report["host_torch_latency_ms"]["after"]
        out["latency_budget_ms (host, PyTorch)"] = {
            "limit": cfg.latency_budget_ms,
            "measured": host,
            "passed": host <= cfg.latency_budget_ms,
        }
    bench, timed = state.bench, state.candidates
    if state.cfg.remote is not None and timed.where is not None:  # timed on the device itself
        measured = (timed.measured(state.shipped), timed.environment, state.profile.runner, timed.where)
    else:
        shipped_runner = bench.summary["shipped_runner"]
        measured = (bench.measured(bench.models.shipped), bench.document["environment"], shipped_runner)
    out.update(device_budgets(state.profile, *measured))
    return out


# platform.machine() spellings -> the profiles' arch names
_ARCH_NAMES = {
    "amd64": "x86_64",
    "x86_64": "x86_64",
    "x64": "x86_64",
    "arm64": "aarch64",
    "aarch64": "aarch64",
}


def device_budgets(profile, measured: dict, env: dict, runner: str, on_device: str | None = None) -> dict:
    """The profile's device budgets (latency p50 per image, batch 1; peak RSS) against the
    shipped file as measured (`measured`: latency_ms, memory_mb) with `runner` on the machine
    `env` describes: this host, or the device itself when `on_device` names it (build --remote).
    Status "passed" | "failed" | "not measured": the host is the device only for host-class
    targets, else the reason says how to measure it."""
    reason = None if on_device else not_the_device(profile, env, runner)
    where = on_device or f"this host ({env.get('cpu_model')}, {env.get('machine')}), {runner}"
    checks = (
        ("latency_budget_ms", profile.latency_budget_ms, "latency_ms", "p50", "p50 per image, batch 1"),
        ("memory_budget_mb", profile.memory_budget_mb, "memory_mb", "peak_rss", "peak RSS, fresh process"),
    )
    out = {}
    for key, limit, block, stat, what in checks:
        value = (measured.get(block) or {}).get(stat)
        entry = {"limit": limit, "what": f"shipped file, {what}"}
        if reason is None and value is not None:
            status = "passed" if value <= limit else "failed"
            entry.update(status=status, measured=float(value), measured_on=where)
        else:
            entry.update(status="not measured", reason=reason or "the host benchmark did not measure it")
        out[key] = entry
    return out


def not_the_device(profile, env: dict, runner: str) -> str | None:
    """Why this host's measurements are not the target device's (None when they are): boards
    (aarch64 profiles) never are; x86-64 targets on an x86-64 host are, GPU targets only when
    the GPU runner was the one used."""
    from edgexray.runtime.registry import get_runtime

    host = _ARCH_NAMES.get(str(env.get("machine")).lower(), env.get("machine"))
    remote = (
        "build with --remote ssh://user@host[:port] to time the candidates there, or run "
        "`edgexray bench ARTIFACT --remote ssh://user@host[:port]`"
    )
    if host != profile.arch:
        return f"{profile.name} is {profile.arch}; this host is {host}: {remote}"
    if profile.arch != "x86_64":
        return (
            f"{profile.name} is a board ({profile.cpu}); this host ({env.get('cpu_model')}) is not: {remote}"
        )
    if get_runtime(profile.runner).device == "cuda" and runner != profile.runner:
        return f"{profile.name} runs {profile.runner} on a GPU; this host timed it with {runner}: {remote}"
    return None


def budget_warnings(budgets: dict) -> list[str]:
    """A failed device budget is a warning (the build still ships)."""
    return [
        f"{key} failed: the shipped file measured {b['measured']:.1f} > {b['limit']:g} on {b['measured_on']}"
        for key, b in budgets.items()
        if isinstance(b, dict) and b.get("status") == "failed"
    ]


def manifest_fields(state) -> dict:
    """Everything the build adds to the manifest (the Tasks-ready row and the warnings are
    added by the bundle stage, which makes that variant)."""
    report, test, files = state.pruned.report, state.test, state.exported.files
    parity = test.parity
    return {
        "synthetic_data": state.synthetic,
        "models": model_rows(state),
        "reduction": report["reduction"],
        "selection": state.selection,
        "calibration": state.calibrated.calibration,  # run.py divides the logits by its temperature
        "decision": state.calibrated.decision,  # run.py predict's threshold for the positive class
        "accuracy": {
            "split": "test",
            "n": int(len(test.y)),
            "ci95": {
                "unpruned_fp32": test.base_metrics["ci95"]["accuracy"],
                "pruned_fp32": test.pruned_metrics["ci95"]["accuracy"],
                **{f"exported_{p}": parity[p]["candidate"]["ci95"]["accuracy"] for p in parity},
            },
            "unpruned_fp32": test.base_metrics["accuracy"],
            "pruned_fp32": test.pruned_metrics["accuracy"],
            **{f"exported_{p}": parity[p]["candidate"]["accuracy"] for p in parity},
        },
        "parity": {
            files[p].name: {k: v for k, v in r.items() if not isinstance(v, (dict, list))}
            for p, r in parity.items()
        },
        "budgets": budgets(state),
        "fallbacks": state.steps.fallbacks,
        "prune": {
            k: report[k]
            for k in (
                "method",
                "criterion",
                "schedule",
                "config",
                "spine_widths",
                "attempts",
                "target",
                "level",
            )
            if k in report
        },
        "channels_kept": report.get("layers"),
        "host_benchmark": state.bench.summary,
        "host_benchmark_results": state.bench.document,
        "source_checkpoint_sha256": sha256_file(state.base.path),
        "grouping": state.data.grouping,  # the patient key of the splits and its group counts
        "leakage": state.data.leakage,  # duplicate images in the data folder (edgexray.leakage)
        "config": asdict(state.cfg),  # str, number, bool and tuple fields: JSON as they are
    }
