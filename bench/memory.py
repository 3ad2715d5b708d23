"""Memory of a model: peak RSS of a fresh process that loads and runs it, minus the peak of a
fresh process that only imported the same runtime; the file size; CUDA device peak when used.

A fresh process each time, because a process that already ran other models (or imported torch
for something else) would report their memory, not this model's.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from edgexray.runtime.errors import EdgeXrayError

log = logging.getLogger(__name__)


def _probe(args: list, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "edgexray.bench.memory_probe", *args]
    env = dict(os.environ, PYTHONWARNINGS="ignore", TF_CPP_MIN_LOG_LEVEL="3")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise EdgeXrayError(f"memory probe did not finish within {timeout:.0f} s: {' '.join(cmd)}") from None
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise EdgeXrayError(f"memory probe failed (exit {proc.returncode}): {tail[0]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_memory(kind: str, model_path, threads=None, runs: int = 20, timeout: float = 600) -> dict:
    """-> the bench schema's memory_mb: peak_rss, baseline_rss, increment, device_peak, method."""
    model_path = Path(model_path)
    common = ["--kind", kind] + (["--threads", str(threads)] if threads else [])
    empty = _probe(common + ["--empty"], timeout)
    loaded = _probe(common + ["--model", str(model_path), "--runs", str(runs)], timeout)
    out = {
        "peak_rss": loaded["peak_rss_mb"],
        "baseline_rss": empty["peak_rss_mb"],
        "increment": loaded["peak_rss_mb"] - empty["peak_rss_mb"],
        "device_peak": loaded.get("device_peak_mb"),
        "method": "fresh-process",
    }
    log.info(
        "%s with %s: peak RSS %.1f MB (+%.1f MB over the runtime alone)",
        model_path.name,
        kind,
        out["peak_rss"],
        out["increment"],
    )
    return out


def file_size(path) -> int:
    """Bytes of a model file (a folder: the sum of its files)."""
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size
