"""The runners that also run on the device: LiteRT (XNNPACK) and ONNX Runtime, one class each.

numpy and the standard library only; the runtime is imported when a model is loaded. Parity,
the INT8 choices, calibration, bench and every artifact's run.py run exported files through
these classes, so what is checked on the host is what ships.

    runner = runner_for_file("model.onnx", threads=4)   # the CPU runtime for the suffix
    runner.predict_all(x_nchw)                           # float32 (N, classes)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from edgexray.runtime.environment import ORT_SESSION_CONFIG
from edgexray.runtime.errors import EdgeXrayError
from edgexray.runtime.registry import get_runtime, manifest_runtimes, model_suffixes, runtime_for_suffix
from edgexray.runtime.runner_base import (
    QUANT_RANGES,
    Runner,
    TensorSpec,
    guess_layout,
    model_load_error,
)


class LiteRTRunner(Runner):
    """ai_edge_litert Interpreter; XNNPACK is applied by default (shows as DELEGATE in ops)."""

    kind = "litert"

    def __init__(self, model_path, threads=None, kind="litert"):
        super().__init__(model_path, threads)
        Interpreter = self._import_runtime(kind, "ai_edge_litert.interpreter").Interpreter
        from importlib import metadata

        self.version = metadata.version(get_runtime(kind).package)
        if not os.path.isfile(self.model_path):
            raise EdgeXrayError(f"model file {self.model_path!r} does not exist")
        try:
            self._interp = Interpreter(model_path=self.model_path, num_threads=self.threads)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise model_load_error(self.model_path, e) from None
        self._in = self._interp.get_input_details()[0]
        self._out = self._interp.get_output_details()[0]
        self.input_spec = self._spec(self._in, guess_layout(list(self._in["shape"]), "NHWC"))
        self.output_spec = self._spec(self._out, "NC")

    @staticmethod
    def _spec(detail, layout) -> TensorSpec:
        scale, zero_point = detail["quantization"]
        dtype = np.dtype(detail["dtype"]).name
        quantized = scale != 0.0 and dtype in QUANT_RANGES
        return TensorSpec(
            shape=tuple(int(d) for d in detail["shape"]),
            dtype=dtype,
            layout=layout,
            scale=float(scale) if quantized else None,
            zero_point=int(zero_point) if quantized else None,
            name=detail["name"],
        )

    def run_raw(self, x: np.ndarray) -> np.ndarray:
        self._interp.set_tensor(self._in["index"], x)
        self._interp.invoke()
        return self._interp.get_tensor(self._out["index"]).copy()

    def ops(self) -> list:
        return [op["op_name"] for op in self._interp._get_ops_details()]


class OrtRunner(Runner):
    """ONNX Runtime on one execution provider (CPU, CUDA or TensorRT: the registry's providers)."""

    ORT_DTYPES = {
        "tensor(float)": "float32",
        "tensor(int8)": "int8",
        "tensor(uint8)": "uint8",
        "tensor(float16)": "float16",
    }

    def __init__(self, model_path, threads=None, kind="onnxruntime-cpu"):
        super().__init__(model_path, threads)
        info = get_runtime(kind)
        ort = self._import_runtime(kind)
        self.version = ort.__version__
        providers = list(info.providers)
        if providers[0] not in ort.get_available_providers():
            raise EdgeXrayError(
                f"runtime {kind!r} needs ONNX Runtime's {providers[0]}, which this "
                f"installation lacks (available: {ort.get_available_providers()}); "
                "install onnxruntime-gpu with a matching CUDA/TensorRT, or use "
                "onnxruntime-cpu"
            )
        if not os.path.isfile(self.model_path):
            raise EdgeXrayError(f"model file {self.model_path!r} does not exist")
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        for key, value in ORT_SESSION_CONFIG.items():  # no idle spinning: timings stay clean
            options.add_session_config_entry(key, value)
        try:
            self._session = ort.InferenceSession(self.model_path, options, providers=providers)
        except Exception as e:  # ORT raises its own Fail/InvalidProtobuf classes
            raise model_load_error(self.model_path, e) from None
        inp, out = self._session.get_inputs()[0], self._session.get_outputs()[0]
        self._input_name = inp.name
        shape = [d if isinstance(d, int) else -1 for d in inp.shape]
        self.input_spec = TensorSpec(
            shape=tuple(shape),
            dtype=self.ORT_DTYPES.get(inp.type, inp.type),
            layout=guess_layout(shape, "NCHW"),
            name=inp.name,
        )
        out_shape = [d if isinstance(d, int) else -1 for d in out.shape]
        self.output_spec = TensorSpec(
            shape=tuple(out_shape), layout="NC", name=out.name, dtype=self.ORT_DTYPES.get(out.type, out.type)
        )
        self.metadata = _decode_metadata(self._session.get_modelmeta().custom_metadata_map)

    def run_raw(self, x: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input_name: x})[0]

    def ops(self) -> list:
        """Node op types (needs the onnx package; [] without it) plus the providers in use."""
        try:
            import onnx
        except ImportError:
            return []
        model = onnx.load(self.model_path, load_external_data=False)
        return [node.op_type for node in model.graph.node]

    def providers(self) -> list:
        return self._session.get_providers()


def _decode_metadata(props: dict) -> dict:
    out = {}
    for key, value in (props or {}).items():
        try:
            out[key] = json.loads(value)
        except (TypeError, ValueError):
            out[key] = value
    return out


RUNNER_CLASSES = {cls.__name__: cls for cls in (LiteRTRunner, OrtRunner)}


def open_runner(kind: str, model_path, threads=None, classes=None) -> Runner:
    """Load `model_path` with runtime `kind` (registry name); `classes` adds runner classes
    that live outside this layer (bench adds TorchRunner)."""
    info = get_runtime(kind)
    path = Path(model_path)
    if path.suffix.lower() not in info.suffixes:
        raise EdgeXrayError(
            f"runtime {kind!r} loads {', '.join(info.suffixes)} files, got "
            f"{str(path)!r}; pick a runtime for {path.suffix or 'this file'} "
            f"({runtime_for_suffix(path.suffix) or 'none'}) or another file"
        )
    if not path.is_file():
        raise EdgeXrayError(f"model file {str(path)!r} does not exist")
    return {**RUNNER_CLASSES, **(classes or {})}[info.runner](path, threads, kind=kind)


def runner_for_file(path, threads=None, device: str = "cpu", classes=None) -> Runner:
    """The default runner for a model file by suffix (.onnx, .tflite, .pt); `device="cuda"` picks
    the CUDA variant where one exists."""
    kind = runtime_for_suffix(Path(path).suffix)
    if kind is None:
        raise EdgeXrayError(
            f"cannot tell the runtime of {str(path)!r}; model files end in {', '.join(model_suffixes())}"
        )
    if device == "cuda" and kind in ("onnxruntime-cpu", "torch-cpu"):
        kind = kind.replace("-cpu", "-cuda")
    return open_runner(kind, path, threads, classes)


def predict_file(path: str | os.PathLike, inputs: np.ndarray, threads: int | None = None) -> np.ndarray:
    """float32 (N, C, H, W) normalized inputs -> float32 (N, classes) logits of an exported file."""
    suffix, exported = Path(path).suffix.lower(), sorted(manifest_runtimes().values())
    if suffix not in exported:
        raise EdgeXrayError(f"cannot run {str(path)!r}: suffix {suffix!r}; allowed: {', '.join(exported)}")
    return runner_for_file(path, threads).predict_all(inputs)
