"""Issue 13, points 2 and 4: the profile's device budgets are checked (or said to be not
measured, with the reason), ONNX Runtime never spins idle, and the host benchmark reports
min/p50/p90 with the run count and the achieved GMAC/s."""

from __future__ import annotations

import json
import platform

from edgexray.devices.profiles import load_profile
from edgexray.export.build_manifest import budget_warnings, device_budgets

X86_HOST = {"machine": "x86_64", "cpu_model": "AMD EPYC"}


def _measured(p50_ms: float, peak_mb: float) -> dict:
    return {"latency_ms": {"p50": p50_ms}, "memory_mb": {"peak_rss": peak_mb}}


def test_x86_64_budgets_are_checked_on_an_x86_64_host():
    profile = load_profile("x86-64")
    fast = device_budgets(profile, _measured(5.0, 100.0), X86_HOST, "onnxruntime-cpu")
    assert fast["latency_budget_ms"]["status"] == "passed"
    assert fast["latency_budget_ms"]["measured"] == 5.0
    assert fast["latency_budget_ms"]["limit"] == profile.latency_budget_ms
    assert fast["memory_budget_mb"]["status"] == "passed"
    assert "AMD EPYC" in fast["latency_budget_ms"]["measured_on"]
    assert budget_warnings(fast) == []

    slow = device_budgets(profile, _measured(50.0, 2000.0), X86_HOST, "onnxruntime-cpu")
    assert slow["latency_budget_ms"]["status"] == "failed"
    assert slow["memory_budget_mb"]["status"] == "failed"
    warnings = budget_warnings(slow)
    assert len(warnings) == 2 and "latency_budget_ms failed" in warnings[0]


def test_non_host_targets_are_not_measured_with_the_reason():
    rpi4 = device_budgets(load_profile("rpi4"), _measured(5.0, 100.0), X86_HOST, "litert")
    for key in ("latency_budget_ms", "memory_budget_mb"):
        assert rpi4[key]["status"] == "not measured"
        assert "rpi4 is aarch64; this host is x86_64" in rpi4[key]["reason"]
        assert "--remote ssh://" in rpi4[key]["reason"]
        assert "measured" not in rpi4[key]
    # a GPU target timed on the CPU (no GPU here) is not its device either
    gpu = device_budgets(load_profile("cuda-gpu"), _measured(5.0, 100.0), X86_HOST, "onnxruntime-cpu")
    assert gpu["latency_budget_ms"]["status"] == "not measured"
    assert "GPU" in gpu["latency_budget_ms"]["reason"]
    assert budget_warnings(rpi4) == budget_warnings(gpu) == []


def test_ort_sessions_do_not_spin(tiny_models):
    from edgexray.runtime.runners import OrtRunner

    options = OrtRunner(tiny_models["onnx"], threads=2)._session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"


def test_build_records_budgets_latency_spread_and_gmacs(tiny_build):
    from edgexray.pipeline.summary import format_summary

    artifact, summary, _ = tiny_build
    manifest = json.loads((artifact / "manifest.json").read_text(encoding="utf-8"))
    budgets = manifest["budgets"]
    for key in ("latency_budget_ms", "memory_budget_mb"):
        assert budgets[key]["status"] in ("passed", "failed", "not measured")
        if platform.machine().lower() in ("x86_64", "amd64"):
            assert budgets[key]["status"] == "not measured"  # rpi4 is never this host
            assert "rpi4 is aarch64" in budgets[key]["reason"]
    env = manifest["host_benchmark_results"]["environment"]
    assert env["onnxruntime_session_config"]["session.intra_op.allow_spinning"] == "0"

    bench = manifest["host_benchmark"]
    assert set(bench["latency_ms"]) == set(bench["p50_ms"])
    for lat in bench["latency_ms"].values():
        assert lat["min"] <= lat["p50"] <= lat["p90"] and lat["runs"] >= 2
    assert bench["gmac_per_s"] and all(v > 0 for v in bench["gmac_per_s"].values())
    timed = [r for r in manifest["models"] if (r.get("latency_ms") or {}).get("p50") and r.get("macs")]
    assert timed and all(r["gmac_per_s"] > 0 for r in timed)

    text = format_summary(summary)
    assert "budget latency_budget_ms" in text and "not measured" in text
    assert "GMAC/s" in text and "runs)" in text
    report = (artifact / "report.html").read_text(encoding="utf-8")
    assert "not measured" in report
