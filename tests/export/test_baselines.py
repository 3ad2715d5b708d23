"""Issue 13, point 1: the "unpruned INT8 by ONNX Runtime" baseline is quantized the way a careful
user would for this CPU (every scheme measured on the val split, the fastest accurate one kept),
and the scheme is on record in the file, the return value and the build's host benchmark."""

from __future__ import annotations

import json

import numpy as np
import pytest
from model_factories import PRE, SIZE, make_onnx

from edgexray.export.baselines import unpruned_onnx
from edgexray.export.calibration import CalibrationSet
from edgexray.export.onnx import read_metadata
from edgexray.export.quantize_onnx import DEFAULT_SCHEME, SCHEMES, pick_scheme
from edgexray.runtime.runners import predict_file


def _calib():
    rng = np.random.default_rng(1)
    return CalibrationSet(gray=rng.random((16, SIZE, SIZE), dtype=np.float32), preprocess=PRE)


def _never():
    raise AssertionError("calibration images asked for, but no INT8 file is made")


def test_baseline_scheme_is_the_one_its_own_measurements_pick(tmp_path):
    fp32 = make_onnx(tmp_path / "unpruned.onnx")
    val_x = PRE.normalize(np.random.default_rng(2).random((24, SIZE, SIZE), dtype=np.float32))
    val_y = predict_file(fp32, val_x).argmax(1)
    val_y[:4] = 1 - val_y[:4]  # not every label the FP32 file's: its accuracy is not trivially 1

    made = unpruned_onnx(None, tmp_path, _calib, fp32, val_inputs=val_x, val_labels=val_y, runs=5)

    choice = made.scheme_choice
    assert set(choice["schemes"]) == set(SCHEMES) and choice["n_images"] == len(val_y)
    assert choice["fp32_accuracy"] == pytest.approx(20 / 24)
    assert all(r["p50_ms"] > 0 and r["runs"] == 5 for r in choice["schemes"].values())
    picked, _ = pick_scheme(choice["schemes"], choice["fp32_accuracy"], choice["accuracy_tolerance"])
    assert made.int8_scheme == choice["chosen"] == picked
    onnx_file, int8_file = made  # what bench.compare_set unpacks
    assert onnx_file == fp32 and int8_file == tmp_path / "unpruned_int8_ort.onnx"
    assert read_metadata(int8_file)["quantization"]["scheme"] == picked
    assert not list(tmp_path.glob("*/*.onnx"))  # the other schemes' files are gone


def test_baseline_without_a_val_split_is_portable_and_a_given_file_is_not_remade(tmp_path):
    fp32 = make_onnx(tmp_path / "unpruned.onnx")
    made = unpruned_onnx(None, tmp_path, _calib, fp32)
    assert (made.int8_scheme, made.scheme_choice) == (DEFAULT_SCHEME, None)
    assert read_metadata(made.int8)["quantization"]["scheme"] == DEFAULT_SCHEME

    given = unpruned_onnx(None, tmp_path, _never, fp32, made.int8, val_inputs=np.zeros((1, 1, SIZE, SIZE)))
    assert (given.int8, given.int8_scheme, given.scheme_choice) == (made.int8, None, None)


@pytest.mark.slow
def test_build_host_benchmark_records_the_baseline_scheme(tiny_build):
    artifact, summary, _ = tiny_build
    manifest = json.loads((artifact / "manifest.json").read_text(encoding="utf-8"))
    bench = manifest["host_benchmark"]
    choice = bench["unpruned_ort_int8_scheme_choice"]
    assert choice["n_images"] > 0 and set(choice["schemes"]) == set(SCHEMES)
    picked, _ = pick_scheme(choice["schemes"], choice["fp32_accuracy"], choice["accuracy_tolerance"])
    assert bench["unpruned_ort_int8_scheme"] == picked
