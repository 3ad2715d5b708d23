"""What a measurement ran on: CPU, cores, memory, OS, Python and runtime versions; and the
process's own peak memory.

Standard library only (no edgexray imports): inlined into every artifact's run.py. Versions are
read from package metadata, so nothing heavy is imported to report them.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata

# distribution name -> key in "runtimes"
RUNTIME_DISTRIBUTIONS = {
    "ai-edge-litert": "ai_edge_litert",
    "onnxruntime": "onnxruntime",
    "onnxruntime-gpu": "onnxruntime_gpu",
    "torch": "torch",
    "tensorflow": "tensorflow",
    "tflite-runtime": "tflite_runtime",
}

# Every ONNX Runtime session (runtime.runners.OrtRunner): worker threads that spin while idle
# would steal cores from the next model timed in an interleaved comparison.
ORT_SESSION_CONFIG = {"session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0"}


def package_version(dist: str):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def cpu_model() -> str:
    """'Intel(R) Xeon(R) ...', 'Raspberry Pi 4 Model B Rev 1.4 (Cortex-A72)', or platform's guess."""
    info = _read("/proc/cpuinfo")
    fields = {}
    for line in info.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    board = _read("/sys/firmware/devicetree/base/model").strip("\x00\n ")
    name = fields.get("model name") or fields.get("Hardware") or fields.get("cpu model")
    arm_parts = {
        "0xd03": "Cortex-A53",
        "0xd04": "Cortex-A35",
        "0xd05": "Cortex-A55",
        "0xd07": "Cortex-A57",
        "0xd08": "Cortex-A72",
        "0xd0b": "Cortex-A76",
        "0xd0c": "Neoverse-N1",
        "0xd40": "Neoverse-V1",
        "0xd4f": "Neoverse-V2",
    }
    part = arm_parts.get(fields.get("CPU part", ""))
    if board:
        return f"{board} ({part or name or platform.machine()})"
    if name and not name.startswith("ARMv"):
        return name
    return part or name or platform.processor() or platform.machine()


# The instruction-set features that decide INT8/FP16 speed: x86 VNNI turns ONNX Runtime's u8xs8
# kernels from saturating VPMADDUBSW into exact VPDPBUSD; ARM dotprod/i8mm do the same for NEON.
SPEED_ISA = (
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_int8",
    "amx_bf16",
    "asimd",
    "asimddp",
    "asimdhp",
    "i8mm",
    "sve",
    "sve2",
    "bf16",
)


def cpu_isa() -> list:
    """The SPEED_ISA features this CPU reports (from /proc/cpuinfo's flags or Features)."""
    for line in _read("/proc/cpuinfo").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            present = set(value.split())
            return [f for f in SPEED_ISA if f in present]
    return []


def physical_cores():
    pairs = set()
    phys = core = None
    for line in _read("/proc/cpuinfo").splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            phys = value.strip()
        elif key == "core id":
            core = value.strip()
        elif not key and core is not None:
            pairs.add((phys, core))
            phys = core = None
    if core is not None:
        pairs.add((phys, core))
    return len(pairs) or None


def memory_total_mb():
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def gpu_name():
    """The first CUDA GPU's name, from torch when it is already imported, else nvidia-smi."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
            )
            names = out.stdout.strip().splitlines()
            return names[0].strip() if out.returncode == 0 and names else None
        except (OSError, subprocess.SubprocessError):
            return None
    return None


def environment() -> dict:
    runtimes = {}
    for dist, key in RUNTIME_DISTRIBUTIONS.items():
        version = package_version(dist)
        if version:
            runtimes[key] = version
    return {
        "os": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_isa": cpu_isa(),
        "cpu_cores_logical": os.cpu_count(),
        "cpu_cores_physical": physical_cores(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_total_mb": memory_total_mb(),
        "python": platform.python_version(),
        "numpy": package_version("numpy"),
        "runtimes": runtimes,
        **(
            {"onnxruntime_session_config": dict(ORT_SESSION_CONFIG)}
            if {"onnxruntime", "onnxruntime_gpu"} & set(runtimes)
            else {}
        ),
        "gpu": gpu_name(),
    }


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux VmHWM; getrusage elsewhere)."""
    for line in _read("/proc/self/status").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource  # POSIX only; ru_maxrss is KiB on Linux, bytes on macOS

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
