"""The bench results document, "edgexray.bench/1" (docs/ARCHITECTURE.md, "bench results").

numpy-free, standard library only, no edgexray imports: inlined into every artifact's run.py, so
the host (`edgexray bench`) and the device (`python run.py bench`) write the same document.
"""

from __future__ import annotations

import datetime

BENCH_SCHEMA = "edgexray.bench/1"

LATENCY_KEYS = (
    "load",
    "first",
    "warmup_runs",
    "runs",
    "budget_s",
    "p50",
    "p90",
    "p99",
    "mean",
    "std",
    "min",
    "max",
)
MEMORY_KEYS = ("peak_rss", "baseline_rss", "increment", "device_peak", "method")
ENTRY_KEYS = (
    "label",
    "model_file",
    "model_sha256",
    "size_bytes",
    "runtime",
    "runtime_version",
    "device",
    "precision",
    "threads",
    "batch",
    "input",
    "latency_ms",
    "memory_mb",
    "accuracy",
    "error",
)
# present only when set: "provider" = {"requested", "used", "fallback": bool} of an ONNX Runtime run
OPTIONAL_ENTRY_KEYS = ("provider",)


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def bench_entry(**fields) -> dict:
    """One measured model; every key of the schema is present (None when not measured)."""
    unknown = set(fields) - set(ENTRY_KEYS) - set(OPTIONAL_ENTRY_KEYS)
    if unknown:
        raise ValueError(
            f"unknown bench entry keys {sorted(unknown)}; allowed: {list(ENTRY_KEYS + OPTIONAL_ENTRY_KEYS)}"
        )
    entry = {key: fields.get(key) for key in ENTRY_KEYS}
    entry.update({key: fields[key] for key in OPTIONAL_ENTRY_KEYS if fields.get(key) is not None})
    if entry["batch"] is None:
        entry["batch"] = 1
    return entry


def bench_document(results: list, environment: dict, producer: str, baseline=None) -> dict:
    """`baseline`: label of the entry that ratios are taken against (compare), or None."""
    return {
        "schema": BENCH_SCHEMA,
        "created": utc_now(),
        "producer": producer,
        "environment": environment,
        "baseline": baseline,
        "results": list(results),
    }


def schema_problems(doc) -> list:
    """Everything wrong with a bench document, as readable strings ([] when valid)."""
    if not isinstance(doc, dict):
        return [f"document is {type(doc).__name__}, expected an object"]
    problems = []
    if doc.get("schema") != BENCH_SCHEMA:
        problems.append(f"schema is {doc.get('schema')!r}, expected {BENCH_SCHEMA!r}")
    labels = [e.get("label") for e in doc.get("results") or [] if isinstance(e, dict)]
    if doc.get("baseline") is not None and doc["baseline"] not in labels:
        problems.append(f"baseline {doc['baseline']!r} is not the label of any result {labels}")
    for key, kind in (("created", str), ("producer", str), ("environment", dict), ("results", list)):
        if not isinstance(doc.get(key), kind):
            problems.append(f"{key!r} missing or not {kind.__name__}")
    for i, entry in enumerate(doc.get("results") or []):
        where = f"results[{i}]"
        if not isinstance(entry, dict):
            problems.append(f"{where} is not an object")
            continue
        missing = [k for k in ENTRY_KEYS if k not in entry]
        if missing:
            problems.append(f"{where} lacks {missing}")
        if entry.get("error"):
            continue  # an entry that failed carries no measurements
        lat = entry.get("latency_ms")
        if not isinstance(lat, dict) or any(k not in lat for k in LATENCY_KEYS):
            problems.append(f"{where}.latency_ms lacks some of {list(LATENCY_KEYS)}")
        elif not lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]:
            problems.append(f"{where}.latency_ms percentiles out of order: {lat}")
        mem = entry.get("memory_mb")
        if mem is not None and (not isinstance(mem, dict) or any(k not in mem for k in MEMORY_KEYS)):
            problems.append(f"{where}.memory_mb lacks some of {list(MEMORY_KEYS)}")
        acc = entry.get("accuracy")
        if acc is not None and (not isinstance(acc, dict) or "metrics" not in acc or "n" not in acc):
            problems.append(f"{where}.accuracy lacks 'n' or 'metrics'")
    return problems
