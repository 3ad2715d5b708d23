"""Every runtime edgexray can run a model with, and the facts that go with it: one table.

    get_runtime("onnxruntime-cpu").package       # 'onnxruntime' (pip), .version '1.23.0' (pinned)
    runtime_for_suffix(".tflite")                # 'litert': the CPU runtime for a file
    runtime_for_format("onnx").suffix            # '.onnx'; .manifest_runtime 'onnxruntime'
    runtime_for_manifest("onnxruntime")          # the runtime a manifest's model.runtime names
    runtime_for_profile("torch").name            # 'torch-cpu': a device profile's `runtime` key

The runner classes are named, not imported: LiteRTRunner and OrtRunner live in
runtime/runners.py, TorchRunner (it needs torch) in bench/runtimes.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgexray.runtime.errors import unknown_name


@dataclass(frozen=True)
class RuntimeInfo:
    name: str  # the runner kind: "litert", "onnxruntime-cpu", "torch-cuda", ...
    suffixes: tuple  # model files it loads; the first is what export writes
    model_format: str  # export format of those files: "tflite" | "onnx" | "torch"
    manifest_runtime: str | None  # manifest model.runtime of an artifact it runs; None: no artifact
    profile_runtime: str | None  # a device profile's `runtime` value that means it; None: none
    device: str  # "cpu" | "cuda"
    package: str  # the pip package that provides it
    version: str | None  # the pinned version of that package (what artifacts are checked with)
    module: str  # what `import` needs to find
    runner: str  # runner class: "LiteRTRunner" | "OrtRunner" (runtime.runners) | "TorchRunner"
    providers: tuple = ()  # ONNX Runtime execution providers, preferred first

    @property
    def suffix(self) -> str:
        return self.suffixes[0]

    @property
    def pip_requirement(self) -> str:
        return f"{self.package}=={self.version}" if self.version else self.package


_CPU, _CUDA, _TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"

RUNTIMES = {
    r.name: r
    for r in (
        RuntimeInfo(
            name="litert",
            suffixes=(".tflite",),
            model_format="tflite",
            manifest_runtime="litert",
            profile_runtime="litert",
            device="cpu",
            package="ai-edge-litert",
            version="2.1.0",
            module="ai_edge_litert",
            runner="LiteRTRunner",
        ),
        RuntimeInfo(
            name="onnxruntime-cpu",
            suffixes=(".onnx",),
            model_format="onnx",
            manifest_runtime="onnxruntime",
            profile_runtime="onnxruntime",
            device="cpu",
            package="onnxruntime",
            version="1.23.0",
            module="onnxruntime",
            runner="OrtRunner",
            providers=(_CPU,),
        ),
        RuntimeInfo(
            name="onnxruntime-cuda",
            suffixes=(".onnx",),
            model_format="onnx",
            manifest_runtime="onnxruntime",
            profile_runtime="onnxruntime-cuda",
            device="cuda",
            package="onnxruntime-gpu",
            version="1.23.0",
            module="onnxruntime",
            runner="OrtRunner",
            providers=(_CUDA, _CPU),
        ),
        RuntimeInfo(
            name="onnxruntime-tensorrt",
            suffixes=(".onnx",),
            model_format="onnx",
            manifest_runtime="onnxruntime",
            profile_runtime="onnxruntime-tensorrt",
            device="cuda",
            package="onnxruntime-gpu",
            version="1.23.0",
            module="onnxruntime",
            runner="OrtRunner",
            providers=(_TRT, _CUDA, _CPU),
        ),
        RuntimeInfo(
            name="torch-cpu",
            suffixes=(".pt", ".pth"),
            model_format="torch",
            manifest_runtime=None,
            profile_runtime="torch",
            device="cpu",
            package="torch",
            version="2.14.1",
            module="torch",
            runner="TorchRunner",
        ),
        RuntimeInfo(
            name="torch-cuda",
            suffixes=(".pt", ".pth"),
            model_format="torch",
            manifest_runtime=None,
            profile_runtime=None,
            device="cuda",
            package="torch",
            version="2.14.1",
            module="torch",
            runner="TorchRunner",
        ),
    )
}


def list_runtimes() -> list:
    return sorted(RUNTIMES)


def get_runtime(name: str) -> RuntimeInfo:
    if name not in RUNTIMES:
        raise unknown_name("runtime", name, RUNTIMES)
    return RUNTIMES[name]


def _first_cpu_runtime(matches) -> RuntimeInfo | None:
    """The CPU runtime for which `matches(info)` holds: the default wherever there is a choice."""
    return next((info for info in RUNTIMES.values() if info.device == "cpu" and matches(info)), None)


def runtime_for_suffix(suffix: str) -> str | None:
    """The runtime used for a model file when none is named ('.onnx' -> 'onnxruntime-cpu')."""
    info = _first_cpu_runtime(lambda i: str(suffix).lower() in i.suffixes)
    return info.name if info else None


def model_suffixes() -> list:
    """Every model file suffix some runtime loads."""
    return sorted({s for info in RUNTIMES.values() for s in info.suffixes})


def runtime_for_format(model_format: str) -> RuntimeInfo:
    """The CPU runtime of an export format ('tflite' -> litert, 'onnx' -> onnxruntime-cpu)."""
    info = _first_cpu_runtime(lambda i: i.model_format == model_format)
    if info is None:
        raise unknown_name("model format", model_format, {i.model_format for i in RUNTIMES.values()})
    return info


def manifest_runtimes() -> dict:
    """Artifact manifest model.runtime -> the model file suffix it loads."""
    return {info.manifest_runtime: info.suffix for info in RUNTIMES.values() if info.manifest_runtime}


def artifact_formats() -> dict:
    """Export format -> the CPU runtime that runs it in an artifact ({"tflite": litert, "onnx": ...})."""
    return {
        info.model_format: info
        for info in RUNTIMES.values()
        if info.manifest_runtime and info.device == "cpu"
    }


def runtime_for_manifest(manifest_runtime: str) -> RuntimeInfo:
    """The CPU runtime that runs an artifact whose manifest says model.runtime `manifest_runtime`."""
    info = _first_cpu_runtime(lambda i: i.manifest_runtime == manifest_runtime)
    if info is None:
        raise unknown_name("artifact runtime", manifest_runtime, manifest_runtimes())
    return info


def profile_runtimes() -> tuple:
    """The values a device profile's `runtime` key may take."""
    return tuple(info.profile_runtime for info in RUNTIMES.values() if info.profile_runtime)


def runtime_for_profile(profile_runtime: str) -> RuntimeInfo:
    for info in RUNTIMES.values():
        if info.profile_runtime == profile_runtime:
            return info
    raise unknown_name("profile runtime", profile_runtime, profile_runtimes())


def runtime_for_provider(provider: str) -> RuntimeInfo | None:
    """The ONNX Runtime runner whose preferred execution provider is `provider`."""
    for info in RUNTIMES.values():
        if info.providers and info.providers[0] == provider:
            return info
    return None
