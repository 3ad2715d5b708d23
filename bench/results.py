"""Bench reports: results.json, a Markdown table, plots and one HTML page combining them.

matplotlib is imported only when plots are drawn (the Agg backend, no display needed).
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import shutil
import tempfile
from pathlib import Path

from edgexray.fsutil import atomic_write_json, atomic_write_text, refuse_existing, replace_dir
from edgexray.runtime.errors import EdgeXrayError
from edgexray.runtime.record import schema_problems

log = logging.getLogger(__name__)

PLOTS = ("latency", "accuracy_size", "memory")


def _measured(doc) -> list:
    return [e for e in doc["results"] if not e.get("error")]


def _baseline(doc):
    label = doc.get("baseline")
    for e in _measured(doc):
        if e["label"] == label:
            return e
    return None


def ratios(entry: dict, baseline: dict | None) -> dict:
    """speedup (baseline p50 / p50), size and memory as fractions of the baseline's."""
    if baseline is None or entry is baseline:
        return {}
    out = {}
    lat, base_lat = entry.get("latency_ms") or {}, baseline.get("latency_ms") or {}
    if lat.get("p50") and base_lat.get("p50"):
        out["speedup"] = base_lat["p50"] / lat["p50"]
    if entry.get("size_bytes") and baseline.get("size_bytes"):
        out["size"] = entry["size_bytes"] / baseline["size_bytes"]
    mem, base_mem = entry.get("memory_mb") or {}, baseline.get("memory_mb") or {}
    if mem.get("peak_rss") and base_mem.get("peak_rss"):
        out["peak_rss"] = mem["peak_rss"] / base_mem["peak_rss"]
    return out


def _fmt(value, spec=".2f", suffix=""):
    return "–" if value is None else f"{value:{spec}}{suffix}"


def fleet_rows(doc) -> tuple:
    """One row per host of a fleet bench (bench/fleet.py): the device's CPU and ISA too."""
    header = [
        "host",
        "CPU",
        "ISA",
        "runtime",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "peak RSS MB",
        "accuracy",
        "status",
    ]
    rows = []
    for host, e in zip(doc["fleet"], doc["results"]):
        env = host.get("environment") or {}
        isa = " ".join(env.get("cpu_isa") or []) or ("–" if not env else "none listed")
        cpu = f"{env['cpu_model']} ({env.get('machine')})" if env.get("cpu_model") else "–"
        if e.get("error"):
            rows.append(
                [
                    host["host"],
                    cpu,
                    isa,
                    "–",
                    "–",
                    "–",
                    "–",
                    "–",
                    "–",
                    "failed: " + " ".join(e["error"].split())[:200],
                ]
            )
            continue
        lat, mem = e["latency_ms"], e.get("memory_mb") or {}
        metrics = (e.get("accuracy") or {}).get("metrics") or {}
        provider = e.get("provider") or {}
        status = "ok" + (" (CPU fallback)" if provider.get("fallback") else "")
        rows.append(
            [
                host["host"],
                cpu,
                isa,
                f"{e['runtime']} {e['runtime_version']}",
                _fmt(lat["p50"], ".3f"),
                _fmt(lat["p90"], ".3f"),
                _fmt(lat["p99"], ".3f"),
                _fmt(mem.get("peak_rss"), ".1f"),
                _fmt(metrics.get("accuracy"), ".3f"),
                status,
            ]
        )
    return header, rows


def table_rows(doc) -> tuple:
    """(header, rows of strings) shared by the Markdown and HTML tables."""
    if doc.get("fleet"):
        return fleet_rows(doc)
    base = _baseline(doc)
    header = [
        "model",
        "runtime",
        "precision",
        "threads",
        "size MB",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "peak RSS MB",
        "+RSS MB",
        "accuracy",
        "macro F1",
        "AUC",
        "agreement",
    ]
    if base is not None:
        header += [f"speedup vs {base['label']}", "size ratio", "RSS ratio"]
    rows = []
    for e in doc["results"]:
        if e.get("error"):
            rows.append(
                [e["label"], e.get("runtime") or "?", "failed: " + e["error"][:120]]
                + [""] * (len(header) - 3)
            )
            continue
        lat, mem = e["latency_ms"], e.get("memory_mb") or {}
        metrics = (e.get("accuracy") or {}).get("metrics") or {}
        agree = (e.get("accuracy") or {}).get("agreement") or {}
        row = [
            e["label"],
            f"{e['runtime']} {e['runtime_version']}",
            e.get("precision") or "–",
            str(e.get("threads") or "–"),
            _fmt((e.get("size_bytes") or 0) / 1e6, ".3f"),
            _fmt(lat["p50"], ".3f"),
            _fmt(lat["p90"], ".3f"),
            _fmt(lat["p99"], ".3f"),
            _fmt(mem.get("peak_rss"), ".1f"),
            _fmt(mem.get("increment"), ".1f"),
            _fmt(metrics.get("accuracy"), ".3f"),
            _fmt(metrics.get("macro_f1"), ".3f"),
            _fmt(metrics.get("roc_auc"), ".3f"),
            _fmt(agree.get("label_agreement"), ".3f"),
        ]
        if base is not None:
            r = ratios(e, base)
            row += [
                "1.00x" if e is base else _fmt(r.get("speedup"), ".2f", "x"),
                "1.00" if e is base else _fmt(r.get("size"), ".3f"),
                "1.00" if e is base else _fmt(r.get("peak_rss"), ".2f"),
            ]
        rows.append(row)
    return header, rows


def markdown_table(doc) -> str:
    header, rows = table_rows(doc)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def markdown_report(doc) -> str:
    env = doc["environment"]
    runtimes = ", ".join(f"{k} {v}" for k, v in sorted(env.get("runtimes", {}).items()))
    entry = next(iter(_measured(doc)), None)
    timing = ""
    if entry:
        lat = entry["latency_ms"]
        timing = (
            f"Batch {entry['batch']}; {lat['warmup_runs']} warm-up runs, then timed runs for "
            f"{lat['budget_s']:g} s each (p50/p90/p99 over at least {lat['runs']} runs for "
            f"{entry['label']}). Memory: peak RSS of a fresh process that loads and runs the "
            "model; +RSS is its excess over a fresh process with only the runtime imported.\n"
        )
    from edgexray.bench.external import table_lines

    external = "".join(line + "\n" for line in table_lines(doc.get("external")))
    return (
        f"# Benchmark\n\n{markdown_table(doc)}{external}\n{timing}\n"
        f"Machine: {env.get('cpu_model')} ({env.get('cpu_cores_logical')} logical cores, "
        f"{env.get('memory_total_mb')} MB), {env.get('os')}, Python {env.get('python')}; "
        f"{runtimes}. GPU: {env.get('gpu') or 'none'}. Measured {doc['created']} by "
        f"{doc['producer']}.\n"
    )


# ---------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_latency(doc):
    """p50 bars with whiskers to p99 (and a tick at p90), one per model."""
    plt = _pyplot()
    entries = _measured(doc)
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(entries) + 1.5))
    labels = [e["label"] for e in entries]
    p50 = [e["latency_ms"]["p50"] for e in entries]
    p90 = [e["latency_ms"]["p90"] for e in entries]
    p99 = [e["latency_ms"]["p99"] for e in entries]
    y = list(range(len(entries)))
    ax.barh(y, p50, color="#4c78a8", label="p50")
    ax.errorbar(
        p50,
        y,
        xerr=[[0] * len(p50), [b - a for a, b in zip(p50, p99)]],
        fmt="none",
        ecolor="black",
        capsize=4,
        label="p50 to p99",
    )
    ax.plot(p90, y, "k|", markersize=12, label="p90")
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel("latency per image (ms, batch 1)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def plot_accuracy_size(doc):
    """Accuracy against model file size; None when no entry was scored."""
    entries = [e for e in _measured(doc) if (e.get("accuracy") or {}).get("metrics")]
    if not entries:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for e in entries:
        size, acc = e["size_bytes"] / 1e6, e["accuracy"]["metrics"]["accuracy"]
        ax.scatter(size, acc, s=40)
        ax.annotate(e["label"], (size, acc), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("model file size (MB, log scale)")
    ax.set_ylabel(f"accuracy (n={entries[0]['accuracy']['n']})")
    fig.tight_layout()
    return fig


def plot_memory(doc):
    """Peak RSS per model, split into the runtime alone and the model's increment."""
    entries = [e for e in _measured(doc) if e.get("memory_mb")]
    if not entries:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(entries) + 1.5))
    y = list(range(len(entries)))
    base = [e["memory_mb"]["baseline_rss"] for e in entries]
    inc = [max(e["memory_mb"]["increment"], 0.0) for e in entries]
    ax.barh(y, base, color="#bab0ac", label="runtime alone")
    ax.barh(y, inc, left=base, color="#f58518", label="model (increment)")
    ax.set_yticks(y, [e["label"] for e in entries])
    ax.invert_yaxis()
    ax.set_xlabel("peak RSS of a fresh process (MB)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def figures(doc) -> dict:
    out = {}
    for name, fn in (
        ("latency", plot_latency),
        ("accuracy_size", plot_accuracy_size),
        ("memory", plot_memory),
    ):
        if _measured(doc):
            fig = fn(doc)
            if fig is not None:
                out[name] = fig
    return out


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    _pyplot().close(fig)
    return buf.getvalue()


def render_html(doc, pngs: dict) -> str:
    header, rows = table_rows(doc)
    esc = html.escape
    table = (
        "<table><thead><tr>"
        + "".join(f"<th>{esc(h)}</th>" for h in header)
        + "</tr></thead><tbody>"
        + "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
        + "</tbody></table>"
    )
    images = "".join(
        f'<figure><img alt="{esc(name)}" src="data:image/png;base64,'
        f'{base64.b64encode(data).decode()}"><figcaption>{esc(name)}</figcaption></figure>'
        for name, data in pngs.items()
    )
    env = esc(json.dumps(doc["environment"], indent=2))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>edgexray benchmark</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:75em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}td:first-child,th:first-child{{text-align:left}}
figure{{display:inline-block;margin:1em}}pre{{background:#f6f6f6;padding:1em}}</style></head>
<body><h1>edgexray benchmark</h1>
<p>{esc(doc["created"])}, {esc(doc["producer"])}. Latency per image at batch 1 after warm-up;
memory is the peak RSS of a fresh process.</p>
{table}
{images}
<h2>Environment</h2><pre>{env}</pre>
</body></html>
"""


def write_results(doc: dict, out_dir, *, force: bool = False, plots: bool = True) -> dict:
    """results.json, results.md, <plot>.png and report.html in `out_dir` (all or nothing)."""
    problems = schema_problems(doc)
    if problems:
        raise EdgeXrayError("bench results do not follow edgexray.bench/1: " + "; ".join(problems))
    out_dir = Path(out_dir)
    refuse_existing(out_dir, force, "bench output folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        atomic_write_json(tmp / "results.json", doc)
        atomic_write_text(tmp / "results.md", markdown_report(doc))
        pngs = {name: _png(fig) for name, fig in figures(doc).items()} if plots else {}
        for name, data in pngs.items():
            (tmp / f"{name}.png").write_bytes(data)
        atomic_write_text(tmp / "report.html", render_html(doc, pngs))
        replace_dir(tmp, out_dir, force=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    written = {p.name: p for p in sorted(out_dir.iterdir())}
    log.info("wrote %s", ", ".join(written))
    return written


def read_results(path) -> dict:
    """A results.json (or the folder holding it), checked against the schema."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise EdgeXrayError(f"cannot read bench results {str(path)!r}: {e}") from None
    problems = schema_problems(doc)
    if problems:
        raise EdgeXrayError(f"{str(path)!r} is not edgexray.bench/1 results: " + "; ".join(problems))
    return doc
