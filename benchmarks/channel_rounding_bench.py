"""Channel rounding and CBAM's cost, measured (issue 13, point 5): a benchmark script, not a test.

Prunes one resnet18_cbam (untrained weights: latency does not depend on them) with a device
profile's [prune] settings (default rpi4: progressive schedule scaled to its MAC target), then
with the same per-stage ratios at several other `round_to` values, plus the profile's round_to
with every CBAM gate replaced by an identity (a measurement only: the models are not changed).
Each model is exported to ONNX FP32 and TFLite FP32 / full-INT8, and every file is timed
INTERLEAVED in one run with the project's timer and runners (2 threads, batch 1): rounds of
`--seconds` per file, a rotated order each round. Prints a markdown table with the CPU and its
ISA flags and writes it to --out.

    .venv/bin/python benchmarks/channel_rounding_bench.py            # ~5-8 min on 2 free cores
    .venv/bin/python benchmarks/channel_rounding_bench.py --width 0.5 --round-to 1,8,32
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHEST = REPO.parent / "shared" / "data" / "chest-xray-pneumonia" / "train"
NO_CBAM = "no CBAM"
KINDS = ("tflite int8", "tflite fp32", "onnx fp32")  # (format precision) of every model


def without_cbam(model):
    """A copy of `model` with every CBAM module replaced by an identity (gates cost nothing)."""
    from torch import nn

    from edgexray.models.attention import CBAM

    model = copy.deepcopy(model)
    names = [n for n, m in model.named_modules() if isinstance(m, CBAM)]
    for name in names:
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, nn.Identity())
    if not names:
        raise SystemExit("the model has no CBAM module to remove")
    return model


def pruned_models(base, example, prune, round_tos, calib_batches) -> list:
    """(label, model) for each round_to, and the profile's round_to without CBAM. The profile's
    round_to reaches its MAC target; every other round_to keeps the same per-stage ratios (the
    schedule scale found there), so only the rounding of the kept channel counts differs."""
    from edgexray.prune.prune import PruneConfig, prune_model

    cfg = PruneConfig(
        method=prune.method,
        schedule=prune.schedule,
        ratio=prune.ratio,
        stage_ratios=tuple(prune.stage_ratios),
        target_macs=prune.target_macs,
        target_params=prune.target_params,
        round_to=prune.round_to,
        calib_images=sum(len(x) for x, _ in calib_batches),
    )
    reference = prune_model(copy.deepcopy(base), example, cfg, calib_batches)
    fixed = dataclasses.replace(
        cfg,
        stage_ratios=tuple(reference.report["stage_ratios_applied"]),
        target_macs=None,
        target_params=None,
    )
    out = []
    for r in round_tos:
        if r == prune.round_to:
            out.append((f"round_to {r}", reference.model))
            out.append((f"round_to {r}, {NO_CBAM}", without_cbam(reference.model)))
        else:
            rounded = dataclasses.replace(fixed, round_to=r)
            out.append(
                (f"round_to {r}", prune_model(copy.deepcopy(base), example, rounded, calib_batches).model)
            )
        print(f"pruned round_to {r}", file=sys.stderr, flush=True)
    return out, reference.report


def export_files(model, folder: Path, size: int, calib) -> dict:
    """{kind: path} of ONNX FP32 and TFLite FP32 / INT8 of `model`."""
    from edgexray.export.onnx import torch2onnx
    from edgexray.export.tflite import onnx2tflite

    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = torch2onnx(model, folder / "model_fp32.onnx", input_shape=(1, 1, size, size))
    made = onnx2tflite(onnx_path, folder, precisions=("fp32", "int8"), calib=calib)
    return {"tflite int8": made["int8"], "tflite fp32": made["fp32"], "onnx fp32": onnx_path}


def time_interleaved(paths: list, x, threads: int, rounds: int, seconds: float, warmup: int) -> list:
    """Nanosecond samples per path, timed in `rounds` rounds of `seconds` each, the order rotated
    every round so no file always follows the same neighbour."""
    import numpy as np

    from edgexray.runtime.latency import first_and_warmup, time_runs
    from edgexray.runtime.registry import runtime_for_suffix
    from edgexray.runtime.runners import open_runner

    calls = []
    for path in paths:
        runner = open_runner(runtime_for_suffix(path.suffix), path, threads)
        prepared = runner.prepare(x)
        calls.append(lambda runner=runner, prepared=prepared: runner.run_raw(prepared))
    for call in calls:
        first_and_warmup(call, warmup)
    samples = [[] for _ in paths]
    for r in range(rounds):
        for i in np.roll(np.arange(len(paths)), -r):
            samples[i] += time_runs(calls[i], seconds, min_runs=5)
    return samples


def table(rows: list, reference: str) -> str:
    """Markdown: one row per (model, file kind); p50 and min against the reference model's same
    kind (below 1: faster)."""
    ref = {r["kind"]: r for r in rows if r["model"] == reference}
    lines = [
        f"| model | params | MMACs | file | p50 ms | min ms | p90 ms | runs | GMAC/s | vs {reference} p50 / min |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        base = ref[r["kind"]]
        lines.append(
            f"| {r['model']} | {r['params'] / 1e6:.2f} M | {r['macs'] / 1e6:.0f} | {r['kind']} | "
            f"{r['p50']:.2f} | {r['min']:.2f} | {r['p90']:.2f} | {r['runs']} | "
            f"{r['macs'] / (r['p50'] / 1e3) / 1e9:.1f} | "
            f"{r['p50'] / base['p50']:.2f} / {r['min'] / base['min']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def prepare(args, work: Path) -> dict:
    """Prune, export and count every model into `work`; the file list and the pruning facts,
    also kept in work/entries.json for --reuse."""
    import numpy as np
    import torch

    from edgexray.devices.profiles import load_profile
    from edgexray.export.calibration import CalibrationSet
    from edgexray.models import create_model
    from edgexray.prune import measure
    from edgexray.runtime.preprocess import Preprocess

    t0 = time.time()
    prune = load_profile(args.profile).prune
    torch.manual_seed(0)
    base = create_model("resnet18_cbam", num_classes=2, in_chans=1, width=args.width).eval()
    pre = Preprocess(size=args.size, channels=1)
    calib = CalibrationSet.from_folder(args.calib, pre, count=args.calib_count, progress=False)
    x_cal, y_cal = torch.from_numpy(calib.arrays()), torch.from_numpy(np.asarray(calib.labels))
    batches = [(x_cal[i : i + 16], y_cal[i : i + 16]) for i in range(0, len(x_cal), 16)]
    example = torch.zeros(1, 1, args.size, args.size)
    round_tos = [int(v) for v in args.round_to.split(",")]
    models, ref_report = pruned_models(base, example, prune, round_tos, batches)
    print(f"pruned {len(models)} models in {time.time() - t0:.0f} s", file=sys.stderr)
    entries = []
    for label, model in models:
        counts = measure.count(model, example)
        files = export_files(model, work / label.replace(" ", "_").replace(",", ""), args.size, calib)
        entries += [{"model": label, "kind": k, "path": str(files[k]), **counts} for k in KINDS]
        print(f"exported {label}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    p = prune
    prepared = {
        "entries": entries,
        "reference": f"round_to {p.round_to}",
        "input": calib.arrays()[:1].tolist(),
        "about": (
            f"resnet18_cbam width {args.width}, {args.size} px, 1 channel, untrained weights, pruned "
            f"with {args.profile}'s [prune] ({p.method}, {p.schedule} {list(p.stage_ratios)}, "
            f"target_macs {p.target_macs}): round_to {p.round_to} reaches the target with stage "
            f"ratios {[round(v, 3) for v in ref_report['stage_ratios_applied']]}; every other round_to "
            "keeps those ratios, so only the rounding of the kept channel counts differs. Unpruned: "
            f"{measure.count(base, example)['params'] / 1e6:.2f} M params, "
            f"{measure.count(base, example)['macs'] / 1e6:.0f} MMACs."
        ),
    }
    (work / "entries.json").write_text(json.dumps(prepared))
    return prepared


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--profile", default="rpi4", help="device profile whose [prune] is used")
    ap.add_argument("--width", type=float, default=1.0, help="resnet18_cbam channel multiplier")
    ap.add_argument("--size", type=int, default=128, help="input side in pixels")
    ap.add_argument("--round-to", default="1,4,8,16,32", help="comma-separated round_to values")
    ap.add_argument("--calib", type=Path, default=CHEST, help="real images (ImageFolder) for scores and INT8")
    ap.add_argument("--calib-count", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=20, help="interleaved timing rounds")
    ap.add_argument("--seconds", type=float, default=0.4, help="timed seconds per file per round")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--work", type=Path, default=None, help="keep the exported files here")
    ap.add_argument("--reuse", action="store_true", help="time the files an earlier run left in --work")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "channel_rounding.md")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import numpy as np

    from edgexray.runtime.environment import cpu_isa, cpu_model, package_version
    from edgexray.runtime.latency import summarize_ns

    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="channel-rounding-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.reuse and (work / "entries.json").is_file():
            prepared = json.loads((work / "entries.json").read_text())
        else:
            prepared = prepare(args, work)
        entries = prepared["entries"]
        load_before = os.getloadavg()[0]
        t_timing = time.time()
        samples = time_interleaved(
            [Path(e["path"]) for e in entries],
            np.asarray(prepared["input"], np.float32),
            args.threads,
            args.rounds,
            args.seconds,
            args.warmup,
        )
        t_timing = time.time() - t_timing
    rows = []
    for e, s in zip(entries, samples):
        lat = summarize_ns(s)
        rows.append({**e, "p50": lat["p50"], "min": lat["min"], "p90": lat["p90"], "runs": len(s)})
    text = (
        prepared["about"] + f"\n\nCPU: {cpu_model()}, ISA flags: {', '.join(cpu_isa()) or 'none reported'}; "
        f"{args.threads} threads, batch 1; LiteRT (XNNPACK) {package_version('ai-edge-litert')}, "
        f"ONNX Runtime {package_version('onnxruntime')} (no spinning). All files timed interleaved in "
        f"one run of {t_timing:.0f} s: {args.rounds} rounds of {args.seconds} s per file, order rotated "
        f"each round, after {args.warmup} warm-up calls; 1-min load average {load_before:.1f} before "
        f"and {os.getloadavg()[0]:.1f} after. GMAC/s = MACs / p50.\n\n"
        + table(rows, prepared["reference"])
        + f"\nwall time {time.time() - t0:.0f} s\n"
    )
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
