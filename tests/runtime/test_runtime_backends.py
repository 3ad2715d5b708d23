"""One template every runner passes: LiteRT, ONNX Runtime and PyTorch on the CPU, on the tiny
fixture models (tests/model_factories.py)."""

from __future__ import annotations

import numpy as np
import pytest
from model_factories import SIZE

from edgexray.bench.runtimes import RUNNER_CLASSES, load_runner
from edgexray.runtime.registry import get_runtime
from edgexray.runtime.runner_base import Runner, TensorSpec

X = np.random.default_rng(5).normal(size=(3, 1, SIZE, SIZE)).astype(np.float32)


@pytest.fixture
def model_files(tiny_models, untrained_checkpoint):
    return {**tiny_models, "checkpoint": untrained_checkpoint}


# (fixture model, runtime, layout and dtype of its input as stored)
BACKENDS = [
    ("onnx", "onnxruntime-cpu", "NCHW", "float32"),
    ("tflite_fp32", "litert", "NHWC", "float32"),
    ("tflite_int8", "litert", "NHWC", "int8"),
    ("checkpoint", "torch-cpu", "NCHW", "float32"),
]


@pytest.mark.parametrize("key, kind, layout, dtype", BACKENDS, ids=[f"{k}-{r}" for k, r, *_ in BACKENDS])
class TestRunnerTemplate:
    def runner(self, model_files, kind, threads=1) -> Runner:
        return load_runner(kind, model_files[self.key], threads=threads)

    @pytest.fixture(autouse=True)
    def _key(self, key):
        self.key = key

    def test_is_the_registry_class_with_its_facts(self, model_files, kind, layout, dtype):
        runner = self.runner(model_files, kind)
        info = get_runtime(kind)
        assert type(runner) is RUNNER_CLASSES[info.runner] and isinstance(runner, Runner)
        assert runner.kind == kind and runner.device == info.device == "cpu"
        assert isinstance(runner.version, str) and runner.version

    def test_input_and_output_spec(self, model_files, kind, layout, dtype):
        runner = self.runner(model_files, kind)
        spec, out = runner.input_spec, runner.output_spec
        assert isinstance(spec, TensorSpec) and isinstance(out, TensorSpec)
        assert spec.layout == layout and spec.dtype == dtype and len(spec.shape) == 4
        side = spec.shape[1:3] if layout == "NHWC" else spec.shape[2:]
        assert list(side) == [SIZE, SIZE]
        assert spec.quantized == (dtype == "int8") and out.layout == "NC" and out.shape[-1] == 2
        assert set(runner.describe()) >= {
            "runtime",
            "runtime_version",
            "device",
            "threads",
            "input",
            "output",
        }

    def test_predict_shape_and_dtype(self, model_files, kind, layout, dtype):
        runner = self.runner(model_files, kind)
        logits = runner.predict(X)
        assert logits.shape == (len(X), 2) and logits.dtype == np.float32
        assert np.isfinite(logits).all()
        np.testing.assert_allclose(runner.predict_all(X, batch_size=2), logits, atol=1e-5)

    def test_run_raw_takes_and_gives_the_stored_types(self, model_files, kind, layout, dtype):
        runner = self.runner(model_files, kind)
        x = runner.prepare(X[:1])
        assert x.dtype == np.dtype(dtype)
        raw = runner.run_raw(x)
        assert raw.shape == (1, 2) and raw.dtype == np.dtype(runner.output_spec.dtype)

    def test_ops(self, model_files, kind, layout, dtype):
        ops = self.runner(model_files, kind).ops()
        assert ops and all(isinstance(op, str) for op in ops)

    @pytest.mark.parametrize("threads", [1, 2])
    def test_threads(self, model_files, kind, layout, dtype, threads):
        runner = self.runner(model_files, kind, threads=threads)
        assert runner.threads == threads and runner.describe()["threads"] == threads
