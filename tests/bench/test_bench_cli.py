"""`edgexray bench` and `edgexray compare` through the CLI, and compare_models."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from model_factories import CLASSES, PRE

from edgexray.bench.compare import compare_models
from edgexray.bench.results import markdown_table, read_results
from edgexray.cli import main
from edgexray.runtime.errors import EdgeXrayError
from edgexray.runtime.record import schema_problems


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_bench_artifact_writes_reports_and_refuses_to_overwrite(int8_artifact, xray_eval_set, tmp_path):
    out = tmp_path / "bench"
    result = invoke("bench", int8_artifact, "--data", xray_eval_set, "--seconds", "0.2", "--out", out)
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {
        "results.json",
        "results.md",
        "report.html",
        "latency.png",
        "memory.png",
        "accuracy_size.png",
    }
    doc = read_results(out)
    assert doc["producer"].startswith("run.py") and doc["results"][0]["accuracy"]["n"] == 6
    assert "| artifact | litert 2.1.0 | int8 | 1 |" in result.output
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "<table>" in html
    again = invoke("bench", int8_artifact, "--seconds", "0.2", "--out", out)
    assert again.exit_code == 2 and "already exists" in again.output and "--force" in again.output
    assert "Traceback" not in again.output
    forced = invoke("bench", int8_artifact, "--seconds", "0.2", "--no-memory", "--out", out, "--force")
    assert forced.exit_code == 0 and read_results(out)["results"][0]["memory_mb"] is None

    # the same model through the host runner scores exactly as run.py did
    host = invoke(
        "bench",
        int8_artifact,
        "--runtime",
        "litert",
        "--data",
        xray_eval_set,
        "--seconds",
        "0.2",
        "--no-memory",
    )
    assert host.exit_code == 0, host.output
    host_doc = json.loads(host.output)
    assert host_doc["producer"].startswith("edgexray")
    assert host_doc["results"][0]["accuracy"]["metrics"] == doc["results"][0]["accuracy"]["metrics"]


def test_bench_model_file_and_bad_input(tiny_models, int8_artifact, tmp_path):
    result = invoke("bench", tiny_models["onnx"], "--seconds", "0.2", "--no-memory", "--threads", "1")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert schema_problems(doc) == [] and doc["results"][0]["runtime"] == "onnxruntime-cpu"
    assert doc["results"][0]["precision"] == "fp32"
    bad = invoke("bench", int8_artifact, "--runtime", "onnxruntime-cpu")
    assert bad.exit_code == 2 and "loads .onnx files" in bad.output
    typo = invoke("bench", tiny_models["onnx"], "--runtime", "onnxruntime-cp")
    assert typo.exit_code == 2 and "did you mean 'onnxruntime-cpu'" in typo.output
    nodata = invoke("bench", tiny_models["onnx"], "--data", tmp_path, "--no-memory")
    assert nodata.exit_code == 2 and "carries no preprocess/class names" in nodata.output
    not_model = tmp_path / "notes.txt"
    not_model.write_text("x")
    assert invoke("bench", not_model).exit_code == 2
    assert invoke("bench", int8_artifact, "--seconds", "0").exit_code == 2


def test_compare_models_interleaved(int8_artifact, tiny_models, xray_eval_set):
    with pytest.raises(EdgeXrayError, match="none of the models carries"):
        compare_models([("a", tiny_models["onnx"]), ("b", tiny_models["onnx_wide"])], progress=False)
    doc = compare_models(
        [
            ("artifact", int8_artifact),
            ("fp32 tflite", tiny_models["tflite_fp32"]),
            ("tiny onnx", tiny_models["onnx"]),
        ],
        xray_eval_set,
        seconds=0.4,
        rounds=2,
        threads=1,
        progress=False,
    )
    assert schema_problems(doc) == [] and doc["baseline"] == "artifact"
    by = {e["label"]: e for e in doc["results"]}
    assert by["artifact"]["accuracy"]["agreement"]["label_agreement"] == 1.0
    # the float TFLite is the same network as the int8 artifact (calibrated on noise, not
    # X-rays, so int8 is a few output steps off): same labels, close probabilities
    agree = by["fp32 tflite"]["accuracy"]["agreement"]
    assert agree["label_agreement"] == 1.0 and 0 < agree["max_abs_prob_diff"] < 0.15
    for e in doc["results"]:
        assert e["latency_ms"]["runs"] >= 4 and e["memory_mb"]["peak_rss"] > 0
    assert by["artifact"]["precision"] == "int8" and by["fp32 tflite"]["precision"] == "fp32"
    table = markdown_table(doc)
    assert "speedup vs artifact" in table and "| artifact |" in table


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    import torch

    from edgexray.checkpoint import save_checkpoint
    from edgexray.models import create_model

    root = tmp_path_factory.mktemp("ckpts")
    paths = {}
    for name, width in (("unpruned", 0.25), ("narrow", 0.125)):
        torch.manual_seed(0)
        model = create_model("resnet18_cbam", num_classes=2, in_chans=1, width=width).eval()
        paths[name] = save_checkpoint(
            root / f"{name}.pt",
            model,
            arch="resnet18_cbam",
            model_options={"num_classes": 2, "in_chans": 1, "width": width},
            class_names=CLASSES,
            preprocess=PRE,
        )
    return paths


@pytest.mark.slow
def test_compare_cli_makes_the_missing_onnx_files(checkpoints, int8_artifact, xray_eval_set, tmp_path):
    out = tmp_path / "compare"
    # "narrow" stands in for a pruned checkpoint: a thinner network of the same architecture
    result = invoke(
        "compare",
        "--baseline",
        checkpoints["unpruned"],
        "--pruned",
        checkpoints["narrow"],
        "--artifact",
        int8_artifact,
        "--data",
        xray_eval_set,
        "--calib",
        xray_eval_set,
        "--calib-count",
        "4",
        "--seconds",
        "0.4",
        "--rounds",
        "2",
        "--threads",
        "1",
        "--no-memory",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    doc = read_results(out)
    labels = [e["label"] for e in doc["results"]]
    assert labels == [
        "unpruned FP32 PyTorch",
        "unpruned FP32 ONNX Runtime",
        "unpruned INT8 ONNX Runtime",
        "pruned FP32 PyTorch",
        f"artifact {int8_artifact.name}",
    ]
    assert doc["baseline"] == "unpruned FP32 PyTorch"
    by = {e["label"]: e for e in doc["results"]}
    assert [by[label]["runtime"] for label in labels] == [
        "torch-cpu",
        "onnxruntime-cpu",
        "onnxruntime-cpu",
        "torch-cpu",
        "litert",
    ]
    onnx_agree = by["unpruned FP32 ONNX Runtime"]["accuracy"]["agreement"]
    assert onnx_agree["label_agreement"] == 1.0 and onnx_agree["max_abs_prob_diff"] < 1e-4
    assert by["unpruned INT8 ONNX Runtime"]["precision"] == "int8"
    sizes = [by[label]["size_bytes"] for label in labels]
    assert sizes[2] < sizes[1] and sizes[3] < sizes[0]  # int8 and the thinner net are smaller
    table = [line for line in result.stdout.splitlines() if line.startswith("|")]
    header, first_row = table[0], table[2]
    assert "speedup vs unpruned FP32 PyTorch" in header and "size ratio" in header
    assert first_row.startswith("| unpruned FP32 PyTorch |") and "1.00x" in first_row
    assert np.isclose(
        sum(sum(r) for r in by["pruned FP32 PyTorch"]["accuracy"]["metrics"]["confusion_matrix"]), 6
    )


def test_compare_cli_needs_calibration_for_the_int8_baseline(checkpoints, int8_artifact):
    result = invoke("compare", "--baseline", checkpoints["unpruned"], "--artifact", int8_artifact)
    assert result.exit_code == 2 and "--calib" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_readme_compare_line_runs_as_written(tiny_build, tmp_path):
    """README's `edgexray compare --baseline … --artifact …`: the INT8 baseline is calibrated on
    the train split of the data the checkpoint records, so nothing else is needed."""
    import re
    import shlex
    from pathlib import Path

    artifact = tiny_build[0]
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    line = re.search(r"^edgexray compare .*$", readme, re.M).group(0)
    words = shlex.split(line.split("#")[0])[2:]
    assert words[0::2] == ["--baseline", "--artifact"], line  # options as the README writes them
    paths = {"--baseline": artifact.parent / "build-rpi4/train/model.pt", "--artifact": artifact}
    args = [a for option in words[0::2] for a in (option, paths[option])]
    result = invoke(
        "compare",
        *args,
        "--seconds",
        "0.2",
        "--rounds",
        "1",
        "--threads",
        "1",
        "--no-memory",
        "--out",
        tmp_path / "c",
    )
    assert result.exit_code == 0, result.output
    labels = [e["label"] for e in read_results(tmp_path / "c")["results"]]
    assert labels == [
        "unpruned FP32 PyTorch",
        "unpruned FP32 ONNX Runtime",
        "unpruned INT8 ONNX Runtime",
        f"artifact {artifact.name}",
    ]


def test_bench_test_data_adds_an_external_block(int8_artifact, xray_eval_set, chest_dir, tmp_path):
    """`bench --data --test-data`: the artifact's figures on other patients (through run.py, equal
    to what run.py predict prints), intervals over patients, overlap with --data, classes checked."""
    import csv
    import subprocess
    import sys
    from pathlib import Path

    from model_factories import carve_patients, patient_of

    from edgexray.bench.external import bench_external

    seen = {patient_of(p.name) for p in xray_eval_set.rglob("*.jp*g")}
    ext_dir = tmp_path / "external"
    carve_patients(chest_dir, ext_dir, {"NORMAL": 3, "PNEUMONIA": 3}, skip_patients=seen)
    n = len(list(ext_dir.rglob("*.jp*g")))
    out = tmp_path / "bench"
    args = ["--data", xray_eval_set, "--test-data", ext_dir, "--runs", "3", "--no-memory"]
    result = invoke("bench", int8_artifact, *args, "--out", out)
    assert result.exit_code == 0, result.output
    ext = read_results(out)["external"]
    assert ext["n"] == n and ext["intervals"].endswith("over patients") and ext["used_for_choices"] is False
    assert ext["overlap_with_training_folder"]["external_images_duplicating_training_folder"] == 0
    assert ext["overlap_checked_against"].endswith(str(xray_eval_set.resolve())) and not ext["warnings"]
    m = ext["models"]["artifact (run.py)"]
    lo, hi = m["ci95"]["accuracy"]
    assert (
        lo <= m["accuracy"] <= hi and m["ci95"]["unit"] == "group" and m["decision_rule"].startswith("argmax")
    )
    assert "| artifact (run.py) | argmax |" in result.output
    assert "External test set" in (out / "results.md").read_text()

    pred = tmp_path / "pred.csv"
    r = subprocess.run(
        [sys.executable, "run.py", "predict", str(ext_dir), "--format", "csv", "--out", str(pred)],
        cwd=int8_artifact,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(pred.open()))
    assert m["accuracy"] == pytest.approx(np.mean([Path(x["image"]).parent.name == x["label"] for x in rows]))

    # the same file through a host runner (the bench's --runtime) scores the same on the same images
    host = invoke("bench", int8_artifact, *args, "--runtime", "litert")
    assert host.exit_code == 0, host.output
    ((label, h),) = json.loads(host.output)["external"]["models"].items()
    assert label.endswith("(litert)") and h["accuracy"] == pytest.approx(m["accuracy"])

    # an external image that is also in --data is reported loudly
    leak = next(xray_eval_set.rglob("*.jp*g"))
    (ext_dir / leak.parent.name / leak.name).symlink_to(leak.resolve())
    warned = bench_external(int8_artifact, ext_dir, xray_eval_set)
    assert warned["overlap_with_training_folder"]["external_images_duplicating_training_folder"] == 1
    assert warned["warnings"] and "optimistic" in warned["warnings"][0]

    # other class names: one clear error before anything is timed
    bad = tmp_path / "bad"
    for cls in ("cats", "dogs"):
        (bad / cls).mkdir(parents=True)
        (bad / cls / leak.name).symlink_to(leak.resolve())
    refused = invoke("bench", int8_artifact, "--test-data", bad, "--runs", "3", "--no-memory")
    assert refused.exit_code == 2 and "has classes ['cats', 'dogs']" in refused.output
    assert "NORMAL" in refused.output and "Traceback" not in refused.output
    same = invoke(
        "bench", int8_artifact, "--data", xray_eval_set, "--test-data", xray_eval_set, "--runs", "3"
    )
    assert same.exit_code == 2 and "is the --data folder" in same.output
