"""`edgexray build`'s export stage and `edgexray export` make the same files with the same
quantization choices for the same checkpoint: one export path (exporter.export_model), choices
made on the validation split, calibrated on the same training images.

The session's tiny checkpoint (conftest.py, 64 px, width 0.25) is exported both ways for an ONNX
Runtime target (int8 + fp32: the INT8 scheme choice) and a LiteRT target (int8: the TFLite INT8
input/output types and quantization). Host latency is held constant so that the ONNX INT8
scheme choice depends on the measured accuracies only, which both paths must then share."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from edgexray.cli import main


@pytest.fixture
def steady_latency(monkeypatch):
    """Every ONNX INT8 scheme measures equally fast: the choice is the accuracy's alone."""
    from edgexray.export import quantize_onnx

    monkeypatch.setattr(
        quantize_onnx,
        "latency_ms",
        lambda path, sample, runs=50, warmup=5, threads=None: {
            "p50_ms": 1.0,
            "p90_ms": 1.0,
            "runs": runs,
            "threads": threads,
        },
    )


def _build_export(ckpt_path: Path, target: str, precisions: tuple, work: Path):
    """The build's export stage (pipeline.export_stage) on the checkpoint as the 'pruned' model."""
    from edgexray import pipeline
    from edgexray.checkpoint import load_checkpoint
    from edgexray.devices import load_profile
    from edgexray.evaluate import held_out_data
    from edgexray.models.predict import predict_logits
    from edgexray.pipeline.export_stage import export_and_check
    from edgexray.pipeline.state import BuildState
    from edgexray.runtime.metrics import budget_check

    ckpt = load_checkpoint(ckpt_path)
    data = held_out_data(ckpt, progress=False)
    val_x, val_y = pipeline._split_inputs(ckpt, data, "val")
    reference = predict_logits(ckpt.model, val_x)
    names = list(ckpt.class_names)

    def judge(logits):
        return budget_check(val_y, reference.argmax(1), logits.argmax(1), names, 100.0)

    state = BuildState(
        cfg=pipeline.BuildConfig(target=target, max_accuracy_drop=100.0),
        profile=load_profile(target),
        precisions=tuple(precisions),
        out=work.parent,
        work=work,
        steps=pipeline.Progress(),
        data=data,
        val_x=val_x,
        val_y=val_y,
        budget=judge,
        pruned=SimpleNamespace(checkpoint=ckpt, val_logits=reference),  # what the prune stage hands on
    )
    exported = export_and_check(state)
    files, val_parity = exported.files, exported.val_parity
    return files, val_parity, json.loads((work / "export" / "parity.json").read_text())


def _cli_export(ckpt_path: Path, fmt: str, precisions: tuple, out: Path) -> dict:
    run = CliRunner().invoke(
        main,
        [
            "export",
            str(ckpt_path),
            "--formats",
            fmt,
            "--precisions",
            ",".join(precisions),
            "--out",
            str(out),
            "--max-accuracy-drop",
            "100",
        ],
    )
    assert run.exit_code == 0, run.output
    return json.loads((out / "parity.json").read_text())


def _models(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix in (".onnx", ".tflite"))


def _same_files(build_folder: Path, export_folder: Path, build_report: dict, cli_report: dict):
    """Same model files, same bytes-level facts: I/O specs and quantization, calibration."""
    from edgexray.export.bundle import model_io_spec

    assert _models(build_folder) == _models(export_folder)
    for name in _models(export_folder):
        assert model_io_spec(build_folder / name) == model_io_spec(export_folder / name), name
    assert build_report["calibration"] == cli_report["calibration"]
    assert build_report["settings"] == cli_report["settings"]
    # the choices were measured on the same (val) images
    assert build_report["choices"] == cli_report["choices"]
    assert build_report["info"]["parity_data"]["split"] == "val"


def test_onnx_target_same_files_and_int8_scheme(tiny_checkpoint, tmp_path, steady_latency):
    from edgexray.export.onnx import read_metadata

    precisions = ("int8", "fp32")  # x86-64's order
    files, val_parity, build_report = _build_export(tiny_checkpoint, "x86-64", precisions, tmp_path / "build")
    cli_report = _cli_export(tiny_checkpoint, "onnx", precisions, tmp_path / "export")
    build_folder, export_folder = tmp_path / "build" / "export", tmp_path / "export"
    _same_files(build_folder, export_folder, build_report, cli_report)
    assert list(files) == list(precisions) and set(val_parity) == set(precisions)
    assert cli_report["info"]["choice_data"]["split"] == "val"  # not the test split it checks

    def int8(report):
        return next(e for e in report["files"] if e["file"] == "model_int8.onnx")

    build_choice, cli_choice = int8(build_report)["scheme_choice"], int8(cli_report)["scheme_choice"]
    assert build_choice["chosen"] == cli_choice["chosen"]
    assert val_parity["int8"]["int8_scheme"]["chosen"] == cli_choice["chosen"]
    for key in ("n_images", "fp32_accuracy", "eligible", "method", "per_channel"):
        assert build_choice[key] == cli_choice[key], key
    assert {n: r["accuracy"] for n, r in build_choice["schemes"].items()} == {
        n: r["accuracy"] for n, r in cli_choice["schemes"].items()
    }
    for name in ("model_int8.onnx", "model_fp32.onnx"):
        assert read_metadata(build_folder / name) == read_metadata(export_folder / name), name
    quant = read_metadata(export_folder / "model_int8.onnx")["quantization"]
    assert quant["scheme"] == cli_choice["chosen"]


@pytest.mark.slow
def test_tflite_target_same_files_and_int8_io(tiny_checkpoint, tmp_path):
    precisions = ("int8",)
    files, _, build_report = _build_export(tiny_checkpoint, "rpi4", precisions, tmp_path / "build")
    cli_report = _cli_export(tiny_checkpoint, "tflite", precisions, tmp_path / "export")
    _same_files(tmp_path / "build" / "export", tmp_path / "export", build_report, cli_report)
    assert _models(tmp_path / "export") == ["model_int8.tflite"] == [files["int8"].name]
    build_entry, cli_entry = build_report["files"][0], cli_report["files"][0]
    # the recorded int8 I/O check (check_int8_tflite) and the ops, on both paths
    assert build_entry["io"] == cli_entry["io"]
    assert build_entry["io"]["input"]["dtype"] == build_entry["io"]["output"]["dtype"] == "int8"
    assert build_entry["ops"] == cli_entry["ops"]
