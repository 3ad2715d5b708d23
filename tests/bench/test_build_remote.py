"""`edgexray build --remote ssh://...`: the candidates are timed on the device (a real sshd on
127.0.0.1; the device's Python is a venv with numpy and LiteRT only), the fastest within the
budget ships and the manifest cites those figures. Without --remote a board is not timed."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from test_bench_remote import _workdirs, running_sshd

from edgexray.cli import main


def _precision_choice(manifest: dict) -> dict:
    return next(d for d in manifest["selection"]["decisions"] if d["what"] == "precision")


def test_a_board_without_remote_ships_the_profile_order_and_says_not_measured(tiny_build):
    artifact, summary, _ = tiny_build
    choice = _precision_choice(json.loads((artifact / "manifest.json").read_text()))
    assert choice["latency_measured_on"] is None and "rpi4 is aarch64" in choice["latency_not_measured"]
    assert choice["by"] == "the profile's precision order" and choice["chosen"] == "int8"
    assert all("latency_ms" not in c for c in choice["candidates"])
    assert summary["budgets"]["latency_budget_ms"]["status"] == "not measured"


@pytest.mark.slow
def test_build_times_the_candidates_on_the_remote_device(tiny_build, clean_venv, tmp_path, monkeypatch):
    from edgexray.bench import compare

    real = compare.compare_models  # the host benchmark's memory probes are not what this is about
    monkeypatch.setattr(compare, "compare_models", lambda *a, **k: real(*a, **{**k, "memory": False}))
    artifact, _, data = tiny_build
    checkpoint = artifact.parent / "build-rpi4" / "train" / "model.pt"
    (tmp_path / "sshd").mkdir()
    before = _workdirs()
    with running_sshd(tmp_path / "sshd") as server:
        args = [
            "build",
            "--target",
            "rpi4",
            "--checkpoint",
            str(checkpoint),
            "--data",
            str(data),
            "--out",
            str(tmp_path / "out"),
            "--finetune-epochs",
            "0",
            "--bench-seconds",
            "0.2",
            "--calib-count",
            "30",
            "--no-verify-arm",
            "--remote",
            server["url"],
            "--identity",
            server["identity"],
            "--remote-python",
            str(clean_venv),
            *[x for option in server["options"] for x in ("--ssh-option", option)],
        ]
        r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    work = tmp_path / "out" / "build-rpi4"
    folder = next(p for p in (tmp_path / "out").glob("rpi4-*") if p.is_dir())
    manifest = json.loads((folder / "manifest.json").read_text())
    choice = _precision_choice(manifest)
    where = choice["latency_measured_on"]
    assert where.startswith(f"ssh://{server['url'][len('ssh://') :]}") and "fastest" in choice["by"]

    doc = json.loads((work / "candidates" / "results.json").read_text())
    assert doc["remote"]["url"] in where and "torch" not in doc["environment"]["runtimes"]
    p50 = {e["model_file"]: e["latency_ms"]["p50"] for e in doc["results"]}
    assert set(p50) == {"model_int8.tflite", "model_fp16.tflite", "model_fp32.tflite"}
    for c in choice["candidates"]:  # the choice cites the device's figures
        assert c["latency_ms"]["p50"] == p50[c["file"]] and c["peak_rss_mb"] > 0
    passing = [c for c in choice["candidates"] if c["passed"] and c["parity_passed"]]
    fastest = min(passing, key=lambda c: c["latency_ms"]["p50"])
    assert choice["chosen"] == fastest["precision"] == manifest["model"]["precision"]
    # the profile's device budgets are checked against the device's own figures
    latency = manifest["budgets"]["latency_budget_ms"]
    assert latency["measured_on"] == where and latency["measured"] == fastest["latency_ms"]["p50"]
    assert latency["status"] in ("passed", "failed")
    assert "candidate fp16" in r.output and where in r.output
    assert _workdirs() == before, "the candidates must be removed from the device"
