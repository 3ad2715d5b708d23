"""The models set side by side by `edgexray build` (its host benchmark, the report's table, the
external test set) and by `edgexray compare`: what a user would run without edgexray (the
unpruned model in PyTorch FP32, ONNX Runtime FP32 and ONNX Runtime INT8), the pruned model in
PyTorch, every exported file of it, and what ships. Both commands build the set here.

    models = compare_set(ckpt, unpruned_onnx(ckpt, folder, calib), artifact_contender(folder),
                         pruned="pruned.pt")
    doc = compare_models(models.timed_entries(), data)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

UNPRUNED_TORCH = "unpruned FP32 PyTorch"
UNPRUNED_ORT = "unpruned FP32 ONNX Runtime"
UNPRUNED_ORT_INT8 = "unpruned INT8 ONNX Runtime"
PRUNED_TORCH = "pruned FP32 PyTorch"

# where the PyTorch and ONNX Runtime baselines run: device -> (torch runner, ORT runner)
BASELINE_RUNNERS = {"cpu": ("torch-cpu", "onnxruntime-cpu"), "cuda": ("torch-cuda", "onnxruntime-cuda")}


@dataclass(frozen=True)
class Contender:
    label: str
    path: Path  # a model file, or an artifact folder
    runtime: str | None = None  # the host runner; None: the file's (or the artifact's) own

    def entry(self) -> tuple:
        """(label, path, runtime): an entry of bench.compare.compare_models."""
        return self.label, self.path, self.runtime


@dataclass(frozen=True)
class CompareSet:
    unpruned_torch: Contender
    unpruned_ort: Contender
    unpruned_ort_int8: Contender
    pruned: Contender | None  # `edgexray compare` without --pruned
    shipped: Contender
    exported: tuple = ()  # Contender of every exported file of the pruned model

    def timed(self) -> list[Contender]:
        """What the interleaved benchmark measures, in its order: the baselines, then every
        exported file (the shipped one as `shipped`, by its host runner) so all are compared."""
        return [
            self.unpruned_torch,
            self.unpruned_ort,
            self.unpruned_ort_int8,
            *([self.pruned] if self.pruned else []),
            *[c for c in self.exported if c.path != self.shipped.path],
            self.shipped,
        ]

    def timed_entries(self) -> list[tuple]:
        return [c.entry() for c in self.timed()]

    def table(self) -> list[Contender]:
        """The rows of the build's comparison table, in order (the shipped file among exported)."""
        return [
            self.unpruned_torch,
            self.unpruned_ort,
            self.unpruned_ort_int8,
            *([self.pruned] if self.pruned else []),
            *self.exported,
        ]


def shipped_contender(precision: str, path: Path, runtime: str) -> Contender:
    """The build's shipped file, before it is bundled."""
    return Contender(f"pruned {precision} (shipped)", Path(path), runtime)


def artifact_contender(folder: Path) -> Contender:
    """A finished artifact folder, run by its manifest's runtime."""
    return Contender(f"artifact {Path(folder).name}", Path(folder))


def exported_label(precision: str, path: Path) -> str:
    return f"pruned {precision} ({Path(path).suffix[1:]})"


def compare_set(
    baseline,
    unpruned_onnx: tuple,
    shipped: Contender,
    *,
    pruned=None,
    exported: dict | None = None,
    device: str = "cpu",
) -> CompareSet:
    """The set for the unpruned checkpoint `baseline` with its (ONNX FP32, ONNX Runtime INT8)
    files `unpruned_onnx` (export.baselines.unpruned_onnx makes them), the pruned checkpoint file
    `pruned`, `exported` {precision: file} and the `shipped` contender."""
    torch_runner, ort_runner = BASELINE_RUNNERS[device]
    onnx_file, int8_file = unpruned_onnx
    return CompareSet(
        unpruned_torch=Contender(UNPRUNED_TORCH, Path(baseline.path), torch_runner),
        unpruned_ort=Contender(UNPRUNED_ORT, Path(onnx_file), ort_runner),
        unpruned_ort_int8=Contender(UNPRUNED_ORT_INT8, Path(int8_file), ort_runner),
        pruned=None if pruned is None else Contender(PRUNED_TORCH, Path(pruned), torch_runner),
        shipped=shipped,
        exported=tuple(
            Contender(exported_label(p, path), Path(path)) for p, path in (exported or {}).items()
        ),
    )


def shipped_runtime(profile, path: Path) -> tuple[str, str | None]:
    """(host runner, GPU note) for the build's shipped file: the profile's GPU runner when this
    machine has the GPU path, else the CPU one and a note that the GPU figures are missing."""
    from edgexray.bench.runtimes import available_runtimes
    from edgexray.runtime.registry import get_runtime, runtime_for_suffix

    cpu_runner = runtime_for_suffix(Path(path).suffix)
    gpu = get_runtime(profile.runner)
    if gpu.device != "cuda" or Path(path).suffix.lower() not in gpu.suffixes:
        return cpu_runner, None
    if profile.runner in available_runtimes():
        return profile.runner, f"measured on the GPU ({profile.runner})"
    return cpu_runner, (
        f"not measured on a GPU: {profile.name} runs {profile.runner}, which this build machine "
        "lacks (no CUDA GPU or no onnxruntime-gpu); its latency is the CPU's"
    )
