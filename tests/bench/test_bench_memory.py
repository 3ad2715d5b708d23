"""Memory is measured in fresh processes: a bigger model shows a bigger figure."""

from __future__ import annotations

import pytest

from edgexray.bench.memory import file_size, measure_memory
from edgexray.runtime.errors import EdgeXrayError


def test_two_models_of_different_size_in_the_right_order(tiny_models):
    small = measure_memory("onnxruntime-cpu", tiny_models["onnx"], threads=1, runs=5)
    big = measure_memory("onnxruntime-cpu", tiny_models["big_onnx"], threads=1, runs=5)
    for m in (small, big):
        assert m["method"] == "fresh-process" and m["device_peak"] is None
        assert m["baseline_rss"] > 10 and abs(m["increment"] - (m["peak_rss"] - m["baseline_rss"])) < 1e-9
    weights_mb = file_size(tiny_models["big_onnx"]) / 2**20  # 24 MB of float32 weights
    assert file_size(tiny_models["onnx"]) < 10_000 < file_size(tiny_models["big_onnx"])
    # the runtime alone costs the same in both; the big model adds at least its weights
    assert abs(big["baseline_rss"] - small["baseline_rss"]) < 10
    assert big["increment"] > small["increment"] + 0.8 * weights_mb, (small, big)
    assert small["increment"] < 15, small


def test_probe_failure_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(EdgeXrayError, match="memory probe failed .*could not load model"):
        measure_memory("onnxruntime-cpu", bad, threads=1)
