"""The build's candidates, measured on the target: every exported file of the pruned model timed
by the artifact's own code (`run.py time`: each file in a fresh process, interleaved rounds) on
this host for host-class targets (export.build_manifest.not_the_device), on the device over SSH
with `build --remote ssh://...`, otherwise not at all (the profile's precision order decides).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from edgexray.fsutil import atomic_write_json

ROUNDS = 3  # each file timed this many times, interleaved; the least disturbed round counts


@dataclass(frozen=True)
class Candidates:
    """Where the exported files were timed and what each measured (by precision)."""

    where: str | None  # "this host (...)", "ssh://user@host:port (...)"; None: not measured
    reason: str | None  # why nothing was measured (None when measured)
    entries: dict  # {precision: edgexray.bench/1 entry of `run.py time`}
    environment: dict | None = None  # the timing machine's environment block (ISA flags)

    def p50(self) -> dict:
        """{precision: p50 ms}; empty when not measured."""
        return {p: e["latency_ms"]["p50"] for p, e in self.entries.items()}

    def measured(self, precision: str) -> dict:
        """{"latency_ms", "memory_mb"} of one candidate (device_budgets reads these)."""
        e = self.entries.get(precision) or {}
        return {"latency_ms": e.get("latency_ms"), "memory_mb": e.get("memory_mb")}

    def rows(self, shipped: str) -> list[dict]:
        """Every candidate with its figures and its ratio to the shipped one (>1: slower)."""
        ship = self.entries.get(shipped, {}).get("latency_ms", {}).get("p50")
        return [
            {
                "precision": p,
                "file": e["model_file"],
                "latency_ms": {k: e["latency_ms"][k] for k in ("min", "p50", "p90", "runs")},
                "round_p50_ms": e.get("round_p50_ms"),
                "peak_rss_mb": (e.get("memory_mb") or {}).get("peak_rss"),
                "vs_shipped": e["latency_ms"]["p50"] / ship if ship else None,
            }
            for p, e in self.entries.items()
        ]


def measure_candidates(state) -> Candidates:
    """Time every exported file on the target (see the module doc); writes
    <build>/candidates/results.json. One candidate and no device: nothing to choose or time."""
    from edgexray.bench.local import run_py_here
    from edgexray.export.build_manifest import not_the_device
    from edgexray.export.run_py_render import render_run_py
    from edgexray.runtime.environment import cpu_isa, cpu_model, environment

    cfg, profile, files = state.cfg, state.profile, state.exported.files
    if cfg.remote is None and len(files) < 2:
        return Candidates(None, "one candidate: nothing to choose", {})
    if cfg.remote is None:
        reason = not_the_device(profile, environment(), profile.runner)
        if reason is not None:
            return Candidates(None, reason, {})
    folder = state.work / "candidates"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "run.py").write_text(render_run_py(), encoding="utf-8")
    names = {}
    for precision, path in files.items():
        shutil.copy2(path, folder / path.name)
        names[path.name] = precision
    options = {"rounds": ROUNDS, "seconds": cfg.bench_seconds, "threads": profile.threads}
    if cfg.remote is not None:
        from edgexray.bench.remote import parse_ssh_url, remote_time

        target = parse_ssh_url(cfg.remote, **cfg.remote_options)
        doc = remote_time(folder, list(names), target, remote_python=cfg.remote_python, **options)
        env = doc["environment"]
        where = f"{target} ({env.get('cpu_model')}, {env.get('machine')})"
    else:
        options["threads"] = min(profile.threads, os.cpu_count() or 1)  # this host's cores at most
        args = ["time", *names, *[f"--{k}={v}" for k, v in options.items()]]
        doc = run_py_here(folder / "run.py", args)
        where = f"this host ({cpu_model()}; {', '.join(cpu_isa()) or 'no ISA flags read'})"
    atomic_write_json(folder / "results.json", doc)
    entries = {names[e["model_file"]]: e for e in doc["results"]}
    return Candidates(where, None, {p: entries[p] for p in files}, doc["environment"])
