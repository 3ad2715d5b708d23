"""`edgexray compare`: several models measured in one run, interleaved, on the same images.

    doc = compare_models([("unpruned FP32 PyTorch", "best.pt"),
                          ("unpruned FP32 ORT", "model.onnx"),
                          ("unpruned ORT-INT8", "model.int8.onnx"),
                          ("pruned FP32 PyTorch", "pruned.pt"),
                          ("artifact", "artifacts/rpi4-resnet18_cbam-int8")], data="xrays/test")

Latency is taken in rounds that visit every model in turn (the order rotates each round), so
a slow drift of the machine (heat, other load) spreads over all models instead of favouring
one. Memory comes from fresh processes per model; accuracy from the same images for all, with
agreement against the baseline's outputs. Ratios in the reports are against the baseline (the
first entry unless named).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from edgexray.bench.local import PRODUCER, guess_precision, is_artifact, latency_input, model_context
from edgexray.bench.memory import file_size, measure_memory
from edgexray.bench.runtimes import load_runner, runtime_for_suffix
from edgexray.fsutil import sha256_file
from edgexray.runtime.accuracy import agreement, evaluate, labeled_images
from edgexray.runtime.environment import environment
from edgexray.runtime.errors import EdgeXrayError
from edgexray.runtime.latency import Stopwatch, first_and_warmup, latency_record, time_runs
from edgexray.runtime.preprocess import Preprocess
from edgexray.runtime.record import bench_document, bench_entry
from edgexray.runtime.registry import manifest_runtimes, runtime_for_manifest

log = logging.getLogger(__name__)

# manifest model.runtime -> the runner that measures it on the host
ARTIFACT_RUNTIMES = {m: runtime_for_manifest(m).name for m in manifest_runtimes()}


@dataclass
class _Loaded:
    label: str
    path: Path  # the model file
    kind: str
    runner: object
    load_ms: float
    preprocess: Preprocess | None
    class_names: list | None
    output_kind: str = "logits"
    precision: str | None = None


def _load(label: str, path, kind: str | None, threads) -> _Loaded:
    path = Path(path)
    if is_artifact(path):
        from edgexray.runtime.integrity import checked_manifest

        manifest = checked_manifest(path)
        model = path / manifest["model"]["file"]
        kind = kind or ARTIFACT_RUNTIMES[manifest["model"]["runtime"]]
        with Stopwatch() as sw:
            runner = load_runner(kind, model, threads or manifest.get("threads"))
        return _Loaded(
            label,
            model,
            kind,
            runner,
            sw.ms,
            Preprocess.from_dict(manifest["preprocess"]),
            list(manifest["class_names"]),
            manifest["output"].get("kind", "logits"),
            manifest["model"].get("precision"),
        )
    kind = kind or runtime_for_suffix(path.suffix)
    if kind is None:
        raise EdgeXrayError(
            f"compare entry {label!r}: {str(path)!r} is neither an artifact folder "
            "nor a .pt/.onnx/.tflite model file"
        )
    with Stopwatch() as sw:
        runner = load_runner(kind, path, threads)
    preprocess, class_names = model_context(runner)
    return _Loaded(
        label, path, kind, runner, sw.ms, preprocess, class_names, precision=guess_precision(runner)
    )


def compare_models(
    entries,
    data=None,
    *,
    seconds: float = 5.0,
    rounds: int = 5,
    warmup: int = 5,
    threads: int | None = None,
    limit: int | None = None,
    memory: bool = True,
    baseline: str | None = None,
    progress: bool = True,
) -> dict:
    """Measure every (label, path[, runtime]) entry; path is a model file or an artifact folder.

    seconds: timed budget per model, split over `rounds` interleaved rounds.
    Returns an edgexray.bench/1 document whose "baseline" is `baseline` or the first label.
    """
    entries = [tuple(e) for e in entries]
    if not entries:
        raise EdgeXrayError("compare needs at least one (label, model path) entry")
    labels = [e[0] for e in entries]
    if len(set(labels)) != len(labels):
        raise EdgeXrayError(f"compare labels must be unique, got {labels}")
    baseline = baseline or labels[0]
    if baseline not in labels:
        raise EdgeXrayError(f"baseline {baseline!r} is not one of the labels {labels}")
    loaded = [_load(e[0], e[1], e[2] if len(e) > 2 else None, threads) for e in entries]

    # one preprocess and class list for all: each model's own, else the first one known
    known = [m for m in loaded if m.preprocess is not None and m.class_names]
    if not known:
        raise EdgeXrayError(
            "none of the models carries its preprocess and class names; include "
            "an edgexray checkpoint, an edgexray ONNX file or an artifact"
        )
    for m in loaded:
        m.preprocess = m.preprocess or known[0].preprocess
        m.class_names = m.class_names or known[0].class_names
        if list(m.class_names) != list(known[0].class_names):
            raise EdgeXrayError(
                f"{m.label!r} predicts {list(m.class_names)}, {known[0].label!r} "
                f"predicts {list(known[0].class_names)}; compare models of one task"
            )
    items = labeled_images(data, known[0].class_names, limit) if data else None

    inputs = {m.label: latency_input(m.runner, m.preprocess, items) for m in loaded}
    calls = {m.label: (lambda r=m.runner, x=inputs[m.label]: r.predict(x)) for m in loaded}
    first = {m.label: first_and_warmup(calls[m.label], warmup) for m in loaded}
    samples = {m.label: [] for m in loaded}
    per_round = seconds / rounds
    bar = tqdm(total=rounds * len(loaded), desc="latency (interleaved)", disable=not progress, leave=False)
    for r in range(rounds):
        order = loaded[r % len(loaded) :] + loaded[: r % len(loaded)]
        for m in order:
            samples[m.label] += time_runs(calls[m.label], per_round, min_runs=2)
            bar.update()
    bar.close()

    probs, accuracy = {}, {}
    if items:
        for m in tqdm(loaded, desc="accuracy", disable=not progress, leave=False):
            accuracy[m.label], probs[m.label] = evaluate(
                m.runner, items, m.preprocess, m.class_names, m.output_kind, data_label=str(data)
            )
        for m in loaded:
            accuracy[m.label]["agreement"] = agreement(probs[m.label], probs[baseline], baseline)

    results = []
    for m in tqdm(loaded, desc="memory (fresh processes)", disable=not progress or not memory, leave=False):
        mem = measure_memory(m.kind, m.path, m.runner.threads) if memory else None
        results.append(
            bench_entry(
                label=m.label,
                model_file=m.path.name,
                model_sha256=sha256_file(m.path),
                size_bytes=file_size(m.path),
                runtime=m.kind,
                runtime_version=m.runner.version,
                device=m.runner.device,
                precision=m.precision,
                threads=m.runner.threads,
                batch=1,
                input=m.runner.input_spec.to_dict(),
                latency_ms=latency_record(
                    samples[m.label],
                    first_ms=first[m.label],
                    warmup=warmup,
                    seconds=seconds,
                    load_ms=m.load_ms,
                ),
                memory_mb=mem,
                accuracy=accuracy.get(m.label),
            )
        )
    return bench_document(results, environment(), PRODUCER, baseline=baseline)
