"""Latency of one model call: load time, first inference, warm-up, then percentiles.

numpy and the standard library only, no edgexray imports: this module is inlined into every
artifact's run.py, so the host and the device time a model the same way.
"""

from __future__ import annotations

import time

import numpy as np


def summarize_ns(samples_ns) -> dict:
    """Nanosecond samples -> p50/p90/p99/mean/std/min/max in milliseconds."""
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    if ms.size == 0:
        raise ValueError("no latency samples")
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "mean": float(ms.mean()),
        "std": float(ms.std()),
        "min": float(ms.min()),
        "max": float(ms.max()),
    }


def time_runs(run, seconds: float, min_runs: int = 1, max_runs: int = 10000) -> list:
    """Nanoseconds of calls to `run()` until `seconds` passed (at least min_runs, at most max_runs)."""
    samples = []
    deadline = time.perf_counter_ns() + int(seconds * 1e9)
    while len(samples) < max_runs and (len(samples) < min_runs or time.perf_counter_ns() < deadline):
        t0 = time.perf_counter_ns()
        run()
        samples.append(time.perf_counter_ns() - t0)
    return samples


def first_and_warmup(run, warmup: int) -> float:
    """Time the first call alone (lazy allocation, delegate preparation), then run `warmup`
    untimed calls; returns the first call's milliseconds."""
    t0 = time.perf_counter_ns()
    run()
    first_ns = time.perf_counter_ns() - t0
    for _ in range(warmup):
        run()
    return first_ns / 1e6


def latency_record(samples_ns, *, first_ms, warmup, seconds, load_ms=None) -> dict:
    out = {
        "load": load_ms,
        "first": first_ms,
        "warmup_runs": warmup,
        "runs": len(samples_ns),
        "budget_s": float(seconds),
    }
    out.update(summarize_ns(samples_ns))
    return out


def measure_latency(
    run,
    *,
    seconds: float = 5.0,
    warmup: int = 5,
    min_runs: int = 10,
    max_runs: int = 10000,
    load_ms: float | None = None,
) -> dict:
    """Time `run()` (one inference on a prepared input): the first call alone, `warmup` calls
    discarded, then calls timed for `seconds` (at least `min_runs`, at most `max_runs`)."""
    first_ms = first_and_warmup(run, warmup)
    samples = time_runs(run, seconds, min_runs, max_runs)
    return latency_record(samples, first_ms=first_ms, warmup=warmup, seconds=seconds, load_ms=load_ms)


class Stopwatch:
    """`with Stopwatch() as sw: ...; sw.ms` — elapsed wall time of a block in milliseconds."""

    def __enter__(self):
        self._t0 = time.perf_counter_ns()
        return self

    def __exit__(self, *exc):
        self.ms = (time.perf_counter_ns() - self._t0) / 1e6
        return False


def gmac_per_s(macs, p50_ms) -> float | None:
    """Achieved multiply-accumulates per second (GMAC/s) of one batch-1 call at its p50."""
    return macs / (p50_ms / 1e3) / 1e9 if macs and p50_ms else None
