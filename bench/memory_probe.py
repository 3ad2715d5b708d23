"""One fresh process for edgexray.bench.memory: load a model (or only its runtime), run it,
print {"peak_rss_mb": ..., "device_peak_mb": ...} as the last stdout line.

    python -m edgexray.bench.memory_probe --kind onnxruntime-cpu --model m.onnx --threads 2 --runs 20
    python -m edgexray.bench.memory_probe --kind onnxruntime-cpu --empty
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys


def load_runtime_only(kind: str) -> None:
    """What the 'empty' baseline holds: the runtime imported (and a CUDA context for torch)."""
    from edgexray.runtime.registry import get_runtime
    from edgexray.runtime.runner_base import import_runtime

    module = get_runtime(kind).module
    import_runtime(kind, "ai_edge_litert.interpreter" if module == "ai_edge_litert" else None)
    if kind.startswith("torch"):
        import edgexray.checkpoint  # noqa: F401  (loading a checkpoint needs it; not the model)

        if kind == "torch-cuda":
            import torch

            torch.zeros(1, device="cuda")


def gpu_memory_mb(pid: int):
    """Device memory that nvidia-smi attributes to `pid` (ORT's arena keeps its peak)."""
    if not shutil.which("nvidia-smi"):
        return None
    out = subprocess.run(
        ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    for line in out.stdout.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) == 2 and fields[0] == str(pid):
            return float(fields[1])
    return None


def main(argv=None) -> int:
    from edgexray.runtime.environment import peak_rss_mb
    from edgexray.runtime.errors import EdgeXrayError

    parser = argparse.ArgumentParser(prog="python -m edgexray.bench.memory_probe")
    parser.add_argument("--kind", required=True)
    parser.add_argument("--model", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--empty", action="store_true", help="import the runtime only")
    args = parser.parse_args(argv)
    device_peak = None
    try:
        if args.empty:
            load_runtime_only(args.kind)
        else:
            import numpy as np

            from edgexray.bench.runtimes import load_runner

            runner = load_runner(args.kind, args.model, args.threads)
            shape = [d if d > 0 else 1 for d in runner.input_spec.shape]
            if runner.input_spec.layout == "NHWC":
                shape = [shape[0], shape[3], shape[1], shape[2]]
            x = np.zeros(shape, np.float32)
            for _ in range(args.runs):
                runner.predict(x)
            if runner.device == "cuda":
                peak = getattr(runner, "device_peak_mb", lambda: None)()
                device_peak = peak if peak is not None else gpu_memory_mb(os.getpid())
    except EdgeXrayError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"peak_rss_mb": peak_rss_mb(), "device_peak_mb": device_peak}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
