"""The runners on the host: one interface over PyTorch, ONNX Runtime and LiteRT.

    runner = load_runner("onnxruntime-cpu", "model.onnx", threads=4)
    runner.input_spec        # shape, layout, dtype, quantization as the model stores them
    runner.predict(x_nchw)   # float32 NCHW normalized -> float32 logits
    runner.run_raw(x)        # one call on a tensor in the model's own layout and dtype
    runner.ops()             # LiteRT: op list incl. DELEGATE; ONNX: node op types

No runtime is imported here at module level; a runtime that is not installed is an
EdgeXrayError naming the package to install. The facts of each runtime are in
edgexray.runtime.registry; LiteRT and ONNX Runtime run through edgexray.runtime.runners, the very
classes inside run.py; only TorchRunner (it needs torch) lives here.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edgexray.runtime import runners
from edgexray.runtime.errors import EdgeXrayError
from edgexray.runtime.registry import RUNTIMES, get_runtime, list_runtimes, runtime_for_suffix
from edgexray.runtime.runner_base import Runner, TensorSpec

__all__ = [
    "TorchRunner",
    "RUNNER_CLASSES",
    "available_runtimes",
    "list_runtimes",
    "load_runner",
    "runner_for_file",
    "runtime_for_suffix",
    "runtime_info",
]

log = logging.getLogger(__name__)


class TorchRunner(Runner):
    """An edgexray checkpoint (.pt) in PyTorch, on the CPU or a CUDA GPU."""

    def __init__(self, model_path, threads=None, kind="torch-cpu"):
        super().__init__(model_path, threads)
        torch = self._import_runtime(kind)
        from edgexray.checkpoint import load_checkpoint  # imports torch

        if self.device == "cuda" and not torch.cuda.is_available():
            raise EdgeXrayError(
                "runtime 'torch-cuda' needs a CUDA GPU and a CUDA build of torch; "
                f"this torch {torch.__version__} sees none; use 'torch-cpu'"
            )
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


# the registry's runner class names -> classes: the runtime layer's plus the one needing torch
RUNNER_CLASSES = {**runners.RUNNER_CLASSES, TorchRunner.__name__: TorchRunner}
runtime_info = get_runtime  # the name bench's callers use


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

    return get_runtime(kind).providers[0] in ort.get_available_providers()


def load_runner(kind: str, model_path, threads=None) -> Runner:
    """Load `model_path` with runtime `kind` (see list_runtimes())."""
    runner = runners.open_runner(kind, model_path, threads, RUNNER_CLASSES)
    log.info("loaded %s with %s %s (%s threads)", Path(model_path).name, kind, runner.version, runner.threads)
    return runner


def runner_for_file(path, threads=None, device: str = "cpu") -> Runner:
    """The default runner for a model file by suffix (.onnx, .tflite, .pt); `device="cuda"` picks
    the CUDA variant where one exists."""
    runner = runners.runner_for_file(path, threads, device, RUNNER_CLASSES)
    log.info(
        "loaded %s with %s %s (%s threads)", Path(path).name, runner.kind, runner.version, runner.threads
    )
    return runner
