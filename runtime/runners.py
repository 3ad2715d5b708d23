"""The runners that also run on the device: LiteRT (XNNPACK) and ONNX Runtime.

numpy and the standard library only; the runtime is imported when a model is loaded. This
module is inlined into every artifact's run.py (after runtime/errors.py), so the host and
the device feed a model through the same code: NCHW float32 in, transposed to the model's
layout, quantized for int8 inputs; the output dequantized to float32.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from edgexray.runtime.errors import EdgeXrayError

QUANT_RANGES = {"int8": (-128, 127), "uint8": (0, 255)}
CHANNEL_COUNTS = (1, 3, 4)


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output, as the model stores it."""

    shape: tuple  # as declared by the model; a dynamic dimension is -1
    dtype: str  # "float32" | "int8" | "uint8" | ...
    layout: str = "NCHW"  # "NCHW" | "NHWC" for image inputs; "NC" for outputs
    scale: float | None = None  # real = scale * (q - zero_point); None when not quantized
    zero_point: int | None = None
    name: str = ""

    @property
    def quantized(self) -> bool:
        return self.scale is not None and self.dtype in QUANT_RANGES

    def to_dict(self) -> dict:
        quant = {"scale": self.scale, "zero_point": self.zero_point} if self.quantized else None
        return {"shape": list(self.shape), "layout": self.layout, "dtype": self.dtype,
                "quantization": quant}


def guess_layout(shape, default: str) -> str:
    """NCHW when dim 1 looks like channels and the last does not; NHWC the other way round."""
    if len(shape) != 4:
        return default
    c_first, c_last = shape[1] in CHANNEL_COUNTS, shape[-1] in CHANNEL_COUNTS
    if c_first and not c_last:
        return "NCHW"
    if c_last and not c_first:
        return "NHWC"
    return default


def quantize(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    if not spec.quantized:
        return x.astype(spec.dtype, copy=False)
    lo, hi = QUANT_RANGES[spec.dtype]
    q = np.round(x / np.float32(spec.scale)) + spec.zero_point
    return np.clip(q, lo, hi).astype(spec.dtype)


def dequantize(q: np.ndarray, spec: TensorSpec) -> np.ndarray:
    if not spec.quantized:
        return q.astype(np.float32, copy=False)
    return (q.astype(np.float32) - np.float32(spec.zero_point)) * np.float32(spec.scale)


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def model_load_error(path, err: Exception) -> EdgeXrayError:
    size = os.path.getsize(path) if os.path.exists(path) else None
    reason = " ".join(str(err).split())[:300]  # runtimes report over several lines
    return EdgeXrayError(f"could not load model {str(path)!r} ({size} bytes): {reason}; the file is "
                         "corrupt, truncated, too new for this runtime or not a model for it; "
                         "re-export it "
                         "(and check it against the manifest with `run.py verify`)")


def missing_runtime(module: str, pip_name: str, kind: str) -> EdgeXrayError:
    return EdgeXrayError(f"runtime {kind!r} needs the Python package {module!r}, which is not "
                         f"installed here; install it with `pip install {pip_name}`")


class Runner:
    """A loaded model. Subclasses set kind, device, version, input_spec, output_spec."""

    kind = "?"
    device = "cpu"

    def __init__(self, model_path, threads=None):
        self.model_path = str(model_path)
        self.threads = int(threads) if threads else default_threads()

    def prepare(self, x_nchw: np.ndarray) -> np.ndarray:
        """Normalized NCHW float32 -> the model's own layout and dtype."""
        x = np.asarray(x_nchw, dtype=np.float32)
        if x.ndim != 4:
            raise EdgeXrayError(f"model input must be NCHW (4 dimensions); got shape {x.shape}")
        if self.input_spec.layout == "NHWC":
            x = x.transpose(0, 2, 3, 1)
        want = tuple(self.input_spec.shape[1:])
        if any(w > 0 and w != g for w, g in zip(want, x.shape[1:])):
            raise EdgeXrayError(f"input of shape {x.shape} ({self.input_spec.layout}) does not fit "
                                f"the model's input {list(self.input_spec.shape)}; preprocess to "
                                "the model's size and channel count")
        return np.ascontiguousarray(quantize(x, self.input_spec))

    def run_raw(self, x: np.ndarray) -> np.ndarray:
        """One call on a tensor already in the model's layout and dtype; output as stored."""
        raise NotImplementedError

    def predict(self, x_nchw: np.ndarray) -> np.ndarray:
        """NCHW float32 batch -> float32 outputs (logits), one row per input."""
        x = self.prepare(x_nchw)
        fixed_batch = self.input_spec.shape[0] if self.input_spec.shape else -1
        if fixed_batch > 0 and x.shape[0] != fixed_batch:
            rows = [self.run_raw(x[i:i + 1]) for i in range(x.shape[0])]
            return dequantize(np.concatenate(rows), self.output_spec)
        return dequantize(self.run_raw(x), self.output_spec)

    def ops(self) -> list:
        return []

    def describe(self) -> dict:
        return {"runtime": self.kind, "runtime_version": self.version, "device": self.device,
                "threads": self.threads, "input": self.input_spec.to_dict(),
                "output": self.output_spec.to_dict()}


class LiteRTRunner(Runner):
    """ai_edge_litert Interpreter; XNNPACK is applied by default (shows as DELEGATE in ops)."""

    kind = "litert"

    def __init__(self, model_path, threads=None):
        super().__init__(model_path, threads)
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise missing_runtime("ai_edge_litert", "ai-edge-litert", self.kind) from None
        from importlib import metadata
        self.version = metadata.version("ai-edge-litert")
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
        return TensorSpec(shape=tuple(int(d) for d in detail["shape"]), dtype=dtype, layout=layout,
                          scale=float(scale) if quantized else None,
                          zero_point=int(zero_point) if quantized else None, name=detail["name"])

    def run_raw(self, x: np.ndarray) -> np.ndarray:
        self._interp.set_tensor(self._in["index"], x)
        self._interp.invoke()
        return self._interp.get_tensor(self._out["index"]).copy()

    def ops(self) -> list:
        return [op["op_name"] for op in self._interp._get_ops_details()]


class OrtRunner(Runner):
    """ONNX Runtime on one execution provider (CPU, CUDA or TensorRT)."""

    PROVIDERS = {"onnxruntime-cpu": ["CPUExecutionProvider"],
                 "onnxruntime-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
                 "onnxruntime-tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                          "CPUExecutionProvider"]}
    ORT_DTYPES = {"tensor(float)": "float32", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
                  "tensor(float16)": "float16"}

    def __init__(self, model_path, threads=None, kind="onnxruntime-cpu"):
        super().__init__(model_path, threads)
        self.kind = kind
        self.device = "cpu" if kind == "onnxruntime-cpu" else "cuda"
        try:
            import onnxruntime as ort
        except ImportError:
            pip = "onnxruntime" if kind == "onnxruntime-cpu" else "onnxruntime-gpu"
            raise missing_runtime("onnxruntime", pip, kind) from None
        self.version = ort.__version__
        providers = self.PROVIDERS[kind]
        if providers[0] not in ort.get_available_providers():
            raise EdgeXrayError(f"runtime {kind!r} needs ONNX Runtime's {providers[0]}, which this "
                                f"installation lacks (available: {ort.get_available_providers()}); "
                                "install onnxruntime-gpu with a matching CUDA/TensorRT, or use "
                                "onnxruntime-cpu")
        if not os.path.isfile(self.model_path):
            raise EdgeXrayError(f"model file {self.model_path!r} does not exist")
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(self.model_path, options, providers=providers)
        except Exception as e:  # ORT raises its own Fail/InvalidProtobuf classes
            raise model_load_error(self.model_path, e) from None
        inp, out = self._session.get_inputs()[0], self._session.get_outputs()[0]
        self._input_name = inp.name
        shape = [d if isinstance(d, int) else -1 for d in inp.shape]
        self.input_spec = TensorSpec(shape=tuple(shape), dtype=self.ORT_DTYPES.get(inp.type, inp.type),
                                     layout=guess_layout(shape, "NCHW"), name=inp.name)
        out_shape = [d if isinstance(d, int) else -1 for d in out.shape]
        self.output_spec = TensorSpec(shape=tuple(out_shape), layout="NC", name=out.name,
                                      dtype=self.ORT_DTYPES.get(out.type, out.type))
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
