"""`edgexray bench ARTIFACT --remote ssh://a --remote ssh://b ...` or `--hosts hosts.txt`: the
same artifact benchmarked on several devices at once, one row per device.

Each device is one `remote_bench` (bench/remote.py: OpenSSH, its own temporary folder, its own
timeouts), run in a bounded thread pool. A device that fails becomes a row with its error; the
others are unaffected. The document is an ordinary "edgexray.bench/1" with one entry per host
(label = the host's URL) plus `fleet`: [{"host", "ok", "error", "seconds", "environment"}], the
device's own environment block (cpu_model, cpu_isa, ...) for the table's CPU/ISA columns.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from edgexray.bench.remote import SshTarget, parse_ssh_url, remote_bench
from edgexray.runtime.environment import environment
from edgexray.runtime.errors import EdgeXrayError
from edgexray.runtime.record import bench_document, bench_entry

MAX_PARALLEL = 4


def hosts2urls(path) -> list:
    """The ssh URLs of a hosts file: one per line; blank lines and '#' comments are skipped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise EdgeXrayError(f"cannot read hosts file {str(path)!r}: {e}") from None
    urls = []
    for number, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            parse_ssh_url(line)
        except EdgeXrayError as e:
            raise EdgeXrayError(f"{path}, line {number}: {e}") from None
        urls.append(line)
    if not urls:
        raise EdgeXrayError(
            f"hosts file {str(path)!r} lists no host; write one ssh://user@host[:port] per line"
        )
    return urls


def _one_host(artifact, target: SshTarget, options: dict) -> dict:
    t0 = time.monotonic()
    try:
        doc = remote_bench(artifact, target, **options)
    except EdgeXrayError as e:  # a bug (anything else) is not a host failure: it propagates
        return {
            "host": str(target),
            "ok": False,
            "error": str(e),
            "seconds": round(time.monotonic() - t0, 2),
            "environment": None,
            "entry": None,
        }
    entry = dict(doc["results"][0], label=str(target))
    return {
        "host": str(target),
        "ok": not entry.get("error"),
        "error": entry.get("error"),
        "seconds": round(time.monotonic() - t0, 2),
        "environment": doc["environment"],
        "entry": entry,
    }


def fleet_bench(artifact, targets: list, *, max_parallel: int = MAX_PARALLEL, **options) -> dict:
    """Bench `artifact` on every target (SshTarget), at most `max_parallel` at a time.

    options: as for remote_bench (data, remote_python, timeout, seconds, runs, ...); `timeout`
    bounds each step on each host, so a hung device costs its own row only.
    """
    names = [str(t) for t in targets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise EdgeXrayError(f"host(s) {duplicates} given more than once; list each device once")
    with ThreadPoolExecutor(max_workers=max(1, min(max_parallel, len(targets)))) as pool:
        hosts = list(pool.map(lambda t: _one_host(artifact, t, options), targets))
    results = []
    for host in hosts:
        entry = host.pop("entry")
        results.append(
            entry if entry is not None else bench_entry(label=host["host"], runtime=None, error=host["error"])
        )
    doc = bench_document(results, environment(), "edgexray fleet bench")
    doc["fleet"] = hosts
    return doc


def failed_hosts(doc) -> list:
    return [h["host"] for h in doc.get("fleet") or [] if not h["ok"]]
