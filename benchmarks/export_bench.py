"""Time to export a pruned ResNet18-CBAM (224 x 224, grayscale) to every format and precision.

    .venv/bin/python benchmarks/export_bench.py [--calib DIR] [--calib-count 200] [--ratio 0.5]

The model is resnet18_cbam pruned one-shot with edgexray.prune (L1, half of every channel
group). Calibration uses real chest X-rays from ../shared/data. Each step is timed on its own;
onnx2tf runs once in its subprocess (import, ONNX -> Keras) and then writes exactly one file
per requested TFLite precision. Prints a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
CHEST = REPO.parent / "shared" / "data" / "chest-xray-pneumonia" / "train"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calib", type=Path, default=CHEST, help="calibration images (ImageFolder)")
    ap.add_argument("--calib-count", type=int, default=200)
    ap.add_argument("--ratio", type=float, default=0.5, help="fraction of channels pruned")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--precisions", default="fp32,fp16,dynamic,int8", help="TFLite precisions")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    from edgexray.export.calibration import CalibrationSet
    from edgexray.export.onnx import onnx_metadata, torch2onnx
    from edgexray.export.quantize_onnx import onnx2int8onnx
    from edgexray.export.tflite import onnx2tflite, tflite_io_details
    from edgexray.models import create_model
    from edgexray.prune.prune import PruneConfig, prune_model
    from edgexray.runtime.preprocess import Preprocess

    torch.manual_seed(0)
    pre = Preprocess(size=args.size, channels=1)
    model = create_model("resnet18_cbam", num_classes=2, in_chans=1).eval()
    example = torch.zeros(1, 1, args.size, args.size)
    n_before = sum(p.numel() for p in model.parameters())
    t = time.perf_counter()
    prune_model(model, example, PruneConfig(method="l1", schedule="one-shot", ratio=args.ratio))
    rows = [("prune (setup, not export)", time.perf_counter() - t, "")]
    n_after = sum(p.numel() for p in model.parameters())

    t = time.perf_counter()
    calib = CalibrationSet.from_folder(args.calib, pre, count=args.calib_count, progress=False)
    rows.append((f"decode {len(calib)} calibration images", time.perf_counter() - t, ""))

    total = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        t = time.perf_counter()
        fp32 = torch2onnx(
            model,
            out / "model_fp32.onnx",
            input_shape=(1, 1, args.size, args.size),
            metadata=onnx_metadata(("NORMAL", "PNEUMONIA"), pre),
        )
        dt = time.perf_counter() - t
        total += dt
        rows.append(("onnx fp32 (torch2onnx + onnxsim)", dt, _mb(fp32)))
        t = time.perf_counter()
        int8 = onnx2int8onnx(fp32, out / "model_int8.onnx", calib)
        dt = time.perf_counter() - t
        total += dt
        rows.append(("onnx int8 (ORT static QDQ, minmax)", dt, _mb(int8)))
        log = out / "onnx2tf.log"
        t = time.perf_counter()
        files = onnx2tflite(fp32, out, precisions=args.precisions.split(","), calib=calib, log_path=log)
        dt = time.perf_counter() - t
        total += dt
        worker = _worker_timings(log)
        steps = sum(worker.values())
        rows.append(("tflite: process start + TF import", dt - steps, ""))
        rows.append(("tflite: onnx2tf ONNX -> Keras", worker.pop("onnx2tf", 0.0), ""))
        rows.append(("tflite: trace + freeze once", worker.pop("freeze", 0.0), ""))
        for p, path in files.items():
            rows.append((f"tflite {p}", worker.get(p, float("nan")), _mb(path)))
        io = tflite_io_details(files["int8"]) if "int8" in files else None
    rows.append(("TOTAL export (all formats)", total, ""))

    print(
        f"export benchmark: resnet18_cbam {args.size}x{args.size}x1, pruned {args.ratio:.0%} "
        f"of channels ({n_before / 1e6:.2f}M -> {n_after / 1e6:.2f}M params), "
        f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}"
    )
    print(f"{'step':<40} {'seconds':>8} {'size':>9}")
    for name, sec, size in rows:
        print(f"{name:<40} {sec:>8.1f} {size:>9}")
    if io:
        print("int8 tflite io:", json.dumps(io))
    return 0


def _mb(path) -> str:
    return f"{Path(path).stat().st_size / 1e6:.2f} MB"


def _worker_timings(log: Path) -> dict:
    """Per-step seconds the conversion worker printed ('edgexray: timing onnx2tf 12.3')."""
    out = {}
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("edgexray: timing "):
            _, _, name, sec = line.split()
            out[name] = float(sec)
    return out


if __name__ == "__main__":
    sys.exit(main())
