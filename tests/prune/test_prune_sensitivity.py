"""Per-layer sensitivity: every prunable group at a few ratios, its plot, and the progressive
schedule seeded from it (`--schedule sensitivity`)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from edgexray.cli import main
from edgexray.prune.sensitivity import stage_ratios_from


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_stage_ratios_from_takes_the_least_tolerant_layer_of_each_stage():
    def group(stage, accs):
        return {
            "stage": stage,
            "rows": [{"ratio": r, "val": {"accuracy": a}} for r, a in zip((0.25, 0.5, 0.75), accs)],
        }

    rep = {
        "baseline": {"accuracy": 0.9},
        "groups": {
            "a": group(1, (0.9, 0.9, 0.7)),
            "b": group(1, (0.9, 0.895, 0.6)),  # stage 1: 0.5 (b)
            "c": group(2, (0.85, 0.8, 0.7)),  # nothing tolerated: 0
            "d": group(4, (0.91, 0.9, 0.9)),
        },
    }  # stage 3 has no group: 0
    assert stage_ratios_from(rep, 0.01) == (0.5, 0.0, 0.0, 0.75)
    assert stage_ratios_from(rep, 0.0) == (0.25, 0.0, 0.0, 0.75)


def test_per_layer_sensitivity_plot_and_seeded_schedule(tiny_checkpoint, tmp_path):
    r = _run(
        "prune",
        tiny_checkpoint,
        "--sensitivity",
        "--per-layer",
        "--sensitivity-ratios",
        "0.25,0.75",
        "--method",
        "l1",
        "--out",
        tmp_path / "s",
    )
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "s" / "layer_sensitivity.json").read_text())
    groups = rep["groups"]
    assert len(groups) >= 8 and {g["stage"] for g in groups.values()} == {1, 2, 3, 4}
    for name, g in groups.items():
        assert [row["ratio"] for row in g["rows"]] == [0.25, 0.75]
        kept = [row["kept"] for row in g["rows"]]
        assert kept == [round(g["channels"] * 0.75), round(g["channels"] * 0.25)], name
        macs = [row["macs_reduction"] for row in g["rows"]]
        assert 0 < macs[0] < macs[1] < 1, (name, macs)  # only this group: a partial reduction
    assert (tmp_path / "s" / "layer_sensitivity.png").stat().st_size > 5000
    assert "| layer4.0.conv1 | 4 |" in r.output
    # the schedule seeded from the same analysis, with a drop every layer tolerates
    out = tmp_path / "p"
    r = _run(
        "prune",
        tiny_checkpoint,
        "--schedule",
        "sensitivity",
        "--sensitivity-ratios",
        "0.75",
        "--sensitivity-drop",
        "1",
        "--method",
        "l1",
        "--round-to",
        "1",
        "--latency-runs",
        "3",
        "--out",
        out,
    )
    assert r.exit_code == 0, r.output
    prep = json.loads((out / "prune_report.json").read_text())
    assert prep["sensitivity_seed"]["stage_ratios"] == [0.75] * 4
    assert prep["config"]["stage_ratios"] == [0.75] * 4 and prep["reduction"]["macs"] > 0.5
    assert (out / "layer_sensitivity.png").is_file() and "seeded by a per-layer" in (
        out / "prune_report.md"
    ).read_text()


def test_seeded_schedule_without_a_tolerated_ratio_is_refused(tiny_checkpoint, tmp_path, monkeypatch):
    from edgexray.prune import sensitivity

    rows = [{"ratio": 0.5, "kept": 4, "val": {"accuracy": 0.5}, "macs_reduction": 0.1}]
    canned = {
        "baseline": {"accuracy": 0.9},
        "ratios": [0.5],
        "arch": "x",
        "method": "l1",
        "groups": {"conv1": {"stage": 1, "channels": 8, "members": ["conv1"], "rows": rows}},
    }
    monkeypatch.setattr(sensitivity, "layer_sensitivity", lambda *a, **k: canned)
    r = _run(
        "prune",
        tiny_checkpoint,
        "--schedule",
        "sensitivity",
        "--sensitivity-ratios",
        "0.5",
        "--method",
        "l1",
        "--out",
        tmp_path / "x",
    )
    assert r.exit_code == 2 and "no stage tolerates even 50%" in r.output, r.output
    assert "raise --sensitivity-drop" in r.output and not (tmp_path / "x").exists()
    r = _run(
        "prune",
        tiny_checkpoint,
        "--schedule",
        "sensitivity",
        "--sensitivity-drop",
        "2",
        "--out",
        tmp_path / "y",
    )
    assert r.exit_code == 2 and "allowed: [0, 1]" in r.output
    r = _run("prune", tiny_checkpoint, "--per-layer", "--out", tmp_path / "z")
    assert r.exit_code == 2 and "--per-layer goes with --sensitivity" in r.output
