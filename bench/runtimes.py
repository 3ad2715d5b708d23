"""The runner registry: one interface over PyTorch, ONNX Runtime and LiteRT.

    runner = load_runner("onnxruntime-cpu", "model.onnx", threads=4)
    runner.input_spec        # shape, layout, dtype, quantization as the model stores them
    runner.predict(x_nchw)   # float32 NCHW normalized -> float32 logits
    runner.run_raw(x)        # one call on a tensor in the model's own layout and dtype
    runner.ops()             # LiteRT: op list incl. DELEGATE; ONNX: node op types

No runtime is imported here at module level; a runtime that is not installed is an
EdgeXrayError naming the package to install.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgexray.runtime.runners import LiteRTRunner, OrtRunner, Runner, TensorSpec, missing_runtime
from edgexray.runtime.errors import EdgeXrayError, unknown_name

log = logging.getLogger(__name__)


class TorchRunner(Runner):
    """An edgexray checkpoint (.pt) in PyTorch, on the CPU or a CUDA GPU."""

    def __init__(self, model_path, threads=None, kind="torch-cpu"):
        super().__init__(model_path, threads)
        self.kind, self.device = kind, ("cuda" if kind == "torch-cuda" else "cpu")
        try:
            import torch
        except ImportError:
            raise missing_runtime("torch", "torch", kind) from None
        from edgexray.checkpoint import load_checkpoint  # imports torch

        if self.device == "cuda" and not torch.cuda.is_available():
            raise EdgeXrayError("runtime 'torch-cuda' needs a CUDA GPU and a CUDA build of torch; "
                                f"this torch {torch.__version__} sees none; use 'torch-cpu'")
        self._torch = torch
        self.version = torch.__version__
        if self.device == "cpu":
            torch.set_num_threads(self.threads)
        ckpt = load_checkpoint(model_path)
        self.model = ckpt.model.to(self.device).eval()
        self.metadata = {"class_names": list(ckpt.class_names), "preprocess": ckpt.preprocess.to_dict()}
        self.input_spec = TensorSpec(shape=tuple(ckpt.input_shape), dtype="float32", layout="NCHW")
        self.output_spec = TensorSpec(shape=(1, len(ckpt.class_names)), dtype="float32", layout="NC")

    def prepare(self, x_nchw):
        return np.ascontiguousarray(np.asarray(x_nchw, dtype=np.float32))

    def run_raw(self, x):
        torch = self._torch
        with torch.inference_mode():
            out = self.model(torch.from_numpy(x).to(self.device))
        return out.float().cpu().numpy()  # .cpu() waits for the GPU, so timings are complete

    def predict(self, x_nchw):
        return self.run_raw(self.prepare(x_nchw))

    def ops(self):
        return sorted({type(m).__name__ for m in self.model.modules() if not list(m.children())})

    def device_peak_mb(self):
        if self.device != "cuda":
            return None
        return self._torch.cuda.max_memory_allocated() / 2**20


@dataclass(frozen=True)
class RuntimeInfo:
    name: str
    suffixes: tuple  # model files it loads
    device: str  # "cpu" | "cuda"
    package: str  # pip package that provides it
    module: str  # what `import` needs to find
    factory: object  # (path, threads) -> Runner


RUNTIMES = {r.name: r for r in (
    RuntimeInfo("torch-cpu", (".pt", ".pth"), "cpu", "torch", "torch",
                lambda p, t: TorchRunner(p, t, "torch-cpu")),
    RuntimeInfo("torch-cuda", (".pt", ".pth"), "cuda", "torch", "torch",
                lambda p, t: TorchRunner(p, t, "torch-cuda")),
    RuntimeInfo("onnxruntime-cpu", (".onnx",), "cpu", "onnxruntime", "onnxruntime",
                lambda p, t: OrtRunner(p, t, "onnxruntime-cpu")),
    RuntimeInfo("onnxruntime-cuda", (".onnx",), "cuda", "onnxruntime-gpu", "onnxruntime",
                lambda p, t: OrtRunner(p, t, "onnxruntime-cuda")),
    RuntimeInfo("onnxruntime-tensorrt", (".onnx",), "cuda", "onnxruntime-gpu", "onnxruntime",
                lambda p, t: OrtRunner(p, t, "onnxruntime-tensorrt")),
    RuntimeInfo("litert", (".tflite",), "cpu", "ai-edge-litert", "ai_edge_litert",
                lambda p, t: LiteRTRunner(p, t)),
)}
# the runtime used for a file when none is named
DEFAULT_FOR_SUFFIX = {".onnx": "onnxruntime-cpu", ".tflite": "litert", ".pt": "torch-cpu",
                      ".pth": "torch-cpu"}


def list_runtimes() -> list:
    return sorted(RUNTIMES)


def runtime_info(kind: str) -> RuntimeInfo:
    if kind not in RUNTIMES:
        raise unknown_name("runtime", kind, RUNTIMES)
    return RUNTIMES[kind]


def available_runtimes() -> list:
    """Runtimes that can run here: package importable and, for CUDA kinds, the GPU path present."""
    import importlib.util

    found = []
    for kind, info in sorted(RUNTIMES.items()):
        if importlib.util.find_spec(info.module) is None:
            continue
        if info.device == "cuda" and not _cuda_available(kind):
            continue
        found.append(kind)
    return found


def _cuda_available(kind: str) -> bool:
    if kind.startswith("torch"):
        import torch
        return torch.cuda.is_available()
    import onnxruntime as ort
    provider = {"onnxruntime-cuda": "CUDAExecutionProvider",
                "onnxruntime-tensorrt": "TensorrtExecutionProvider"}[kind]
    return provider in ort.get_available_providers()


def load_runner(kind: str, model_path, threads=None) -> Runner:
    """Load `model_path` with runtime `kind` (see list_runtimes())."""
    info = runtime_info(kind)
    path = Path(model_path)
    if path.suffix.lower() not in info.suffixes:
        raise EdgeXrayError(f"runtime {kind!r} loads {', '.join(info.suffixes)} files, got "
                            f"{str(path)!r}; pick a runtime for {path.suffix or 'this file'} "
                            f"({runtime_for_suffix(path.suffix) or 'none'}) or another file")
    if not path.is_file():
        raise EdgeXrayError(f"model file {str(path)!r} does not exist")
    runner = info.factory(path, threads)
    log.info("loaded %s with %s %s (%s threads)", path.name, kind, runner.version, runner.threads)
    return runner


def runtime_for_suffix(suffix: str):
    return DEFAULT_FOR_SUFFIX.get(suffix.lower())


def runner_for_file(path, threads=None, device: str = "cpu") -> Runner:
    """The default runner for a model file by suffix (.onnx, .tflite, .pt); `device="cuda"` picks
    the CUDA variant where one exists."""
    kind = runtime_for_suffix(Path(path).suffix)
    if kind is None:
        raise EdgeXrayError(f"cannot tell the runtime of {str(path)!r}; model files end in "
                            f"{', '.join(sorted(DEFAULT_FOR_SUFFIX))}")
    if device == "cuda" and kind in ("onnxruntime-cpu", "torch-cpu"):
        kind = kind.replace("-cpu", "-cuda")
    return load_runner(kind, path, threads)
