"""report.html of an artifact: one self-contained page, every plot embedded as a base64 PNG.

Rendered from the manifest (what the build measured; keys described in docs/ARCHITECTURE.md
"bundle") and the pipeline's images. Sections whose data is missing say so instead of vanishing.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from string import Template

from edgexray.export.bundle import RESERVED
from edgexray.runtime.metrics import rule_brief

# manifest keys this report draws itself (those write_artifact sets, and the build's); every other
# build key is listed as JSON at the end
_DRAWN = {
    *RESERVED,
    "models",
    "channels_kept",
    "parity",
    "arm_verification",
    "arm_reference",
    "budgets",
    "fallbacks",
    "config",
    "external",
    "grouping",
    "leakage",
    "calibration",
    "decision",
    "warnings",
    "saliency",
}


def render(manifest: dict, assets: dict, images_are_synthetic: bool, templates: Path) -> str:
    models = [m for m in manifest.get("models") or [] if isinstance(m, dict)]
    sections = [
        *([_section("Warnings", _warnings(manifest["warnings"]))] if manifest.get("warnings") else []),
        _section("Before and after", _comparison(models)),
        _section("External test set (other patients)", _external(manifest, models)),
        _section("Budgets", _budgets(manifest.get("budgets"), manifest.get("fallbacks"))),
        _section("Candidates: what ships and why", _candidates(manifest.get("selection"))),
        _section("Channels kept per layer", _channels(manifest.get("channels_kept"))),
        _section("Confusion matrices (held-out split)", _confusions(models)),
        _section(
            "Grad-CAM: original beside deployed model",
            _gradcam(assets.get("gradcam") or {}, images_are_synthetic, manifest.get("saliency")),
        ),
        _section("Parity of the exported files with PyTorch", _parity(manifest.get("parity"))),
        _section("ARM verification", _arm(manifest.get("arm_verification"))),
    ]
    if assets.get("plots"):
        sections.append(_section("More plots", _figures(assets["plots"])))
    sections.append(_section("Model, pre-processing and target", _deployment(manifest)))
    sections.append(_section("Files, versions and configuration", _provenance(manifest)))
    model = manifest["model"]
    subtitle = (
        f"{html.escape(manifest['arch'])} for {html.escape(manifest['profile']['name'])}"
        f" &middot; {html.escape(model['file'])} ({html.escape(model['precision'])}, "
        f"{html.escape(model['runtime'])}) &middot; classes: "
        f"{html.escape(', '.join(manifest['class_names']))}"
    )
    if manifest.get("synthetic_data"):
        subtitle += (
            " &middot; <strong>trained and evaluated on SYNTHETIC X-rays (demo): the "
            "accuracy figures say nothing about clinical performance</strong>"
        )
    return Template((templates / "report.html.tmpl").read_text(encoding="utf-8")).substitute(
        name=html.escape(manifest["name"]),
        subtitle=subtitle,
        cards=_cards(manifest, models),
        sections="\n".join(sections),
        created=html.escape(manifest["created"]),
        edgexray_version=html.escape(str(manifest.get("tool_versions", {}).get("edgexray"))),
    )


# ----------------------------------------------------------------------------- helpers


def _warnings(warnings: list) -> str:
    items = "".join(f"<li>{html.escape(str(w))}</li>" for w in warnings)
    return f'<div class="bad"><strong>A reviewer should know:</strong><ul>{items}</ul></div>'


def _section(title: str, body: str) -> str:
    return f"<h2>{html.escape(title)}</h2>\n{body}"


def _missing(what: str) -> str:
    return f'<p class="sub">{html.escape(what)}</p>'


def _png_b64(image) -> str:
    """PNG bytes or a matplotlib Figure -> base64 text."""
    if hasattr(image, "savefig"):
        buf = io.BytesIO()
        image.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        image = buf.getvalue()
    if not isinstance(image, (bytes, bytearray)) or not bytes(image[:8]) == b"\x89PNG\r\n\x1a\n":
        raise ValueError("report images must be PNG bytes or matplotlib figures")
    return base64.b64encode(bytes(image)).decode("ascii")


def _img(image, caption: str) -> str:
    return (
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,'
        f'{_png_b64(image)}"><figcaption>{html.escape(caption)}</figcaption></figure>'
    )


def _figures(images: dict) -> str:
    return '<div class="figs">' + "".join(_img(v, k) for k, v in images.items()) + "</div>"


def _candidates(selection) -> str:
    """Every exported precision: its val budget check, its latency on the target when timed there."""
    choice = next((d for d in (selection or {}).get("decisions", []) if d.get("what") == "precision"), None)
    if choice is None:
        return _missing("No precision choice was recorded.")
    where = choice.get("latency_measured_on")
    rows = [
        {
            "precision": c["precision"] + (" (shipped)" if c["precision"] == choice["chosen"] else ""),
            "within val budget": bool(c["passed"] and c["parity_passed"]),
            "accuracy drop pp (95% upper)": (c.get("accuracy_drop_interval_pp") or [None, None])[1],
            **{f"{k} ms": (c.get("latency_ms") or {}).get(k) for k in ("min", "p50", "p90")},
            "runs": (c.get("latency_ms") or {}).get("runs"),
            "peak RSS MB": c.get("peak_rss_mb"),
            "x shipped p50": c.get("vs_shipped"),
        }
        for c in choice["candidates"]
    ]
    said = (
        f"Timed on {where}."
        if where
        else f"Device latency not measured: {choice.get('latency_not_measured')}."
    )
    return f"<p>{html.escape(str(choice.get('by')))}. {html.escape(said)}</p>" + _table(rows)


def _num(v, digits=4) -> str:
    if v is None:
        return "&ndash;"
    if isinstance(v, bool):
        return '<span class="ok">yes</span>' if v else '<span class="bad">no</span>'
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    if isinstance(v, (dict, list)):
        return f"<code>{html.escape(json.dumps(v))}</code>"
    return html.escape(str(v))


def _table(rows: list, columns: list | None = None) -> str:
    if not rows:
        return ""
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{"num" if isinstance(r.get(c), (int, float)) else ""}">{_num(r.get(c))}</td>'
            for c in columns
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _kv(d: dict) -> str:
    return _table([{"key": k, "value": v} for k, v in d.items()], ["key", "value"])


def _figure(width=6.0, height=3.2):
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    return Figure(figsize=(width, height))


def _latency(m: dict):
    v = m.get("latency_ms")
    return v.get("p50") if isinstance(v, dict) else v


def _accuracy(m: dict):
    if m.get("accuracy") is not None:
        return m["accuracy"]
    return (m.get("metrics") or {}).get("accuracy")


def _bars(title: str, unit: str, labels: list, values: list, highlight: int | None):
    fig = _figure(4.4, 0.45 * len(values) + 1.0)
    ax = fig.add_subplot()
    colors = ["#8aa1bd"] * len(values)
    if highlight is not None:
        colors[highlight] = "#1f5fa8"
    ax.barh(range(len(values)), values, color=colors)
    ax.set_yticks(range(len(values)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(unit)
    ax.set_title(title, fontsize=10)
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.3g}", va="center", fontsize=8)
    ax.margins(x=0.15)
    return fig


# ----------------------------------------------------------------------------- sections


def _cards(manifest: dict, models: list) -> str:
    cards = []
    ref = models[0] if models else {}
    shipped = next((m for m in models if m.get("shipped")), models[-1] if models else {})

    def card(value, key):
        cards.append(
            f'<div class="card"><div class="v">{value}</div><div class="k">{html.escape(key)}</div></div>'
        )

    for key, label in (("params", "fewer parameters"), ("macs", "fewer MACs")):
        if ref.get(key) and shipped.get(key) is not None:
            card(f"{100 * (1 - shipped[key] / ref[key]):.1f}%", label)
    if ref.get("size_bytes") and shipped.get("size_bytes"):
        card(f"{ref['size_bytes'] / 1e6:.2f} &rarr; {shipped['size_bytes'] / 1e6:.2f} MB", "model size")
    if _latency(ref) and _latency(shipped):
        card(f"{_latency(ref) / _latency(shipped):.1f}x", "faster on the build host (p50)")
    if _accuracy(ref) is not None and _accuracy(shipped) is not None:
        card(f"{100 * _accuracy(ref):.1f} &rarr; {100 * _accuracy(shipped):.1f}%", "held-out accuracy")
    cal = manifest.get("calibration")
    if isinstance(cal, dict) and "ece_after" in cal:  # temperature scaling, fitted on val
        test = cal.get("test") or {}
        card(
            f"{cal.get('ece_before', 0):.3f} &rarr; {cal['ece_after']:.3f}",
            f"ECE val (T = {cal['temperature']:.2f})"
            + (f"; test {test['ece_before']:.3f} -> {test['ece_after']:.3f}" if test else ""),
        )
    dec = manifest.get("decision")
    if isinstance(dec, dict) and isinstance(dec.get("test"), dict):  # operating point, chosen on val
        t = dec["test"]
        card(
            " / ".join(
                "n/a" if t.get(k) is None else f"{100 * t[k]:.1f}%" for k in ("sensitivity", "specificity")
            ),
            f"test sensitivity / specificity of {dec['positive_class']} at p >= "
            f"{dec['threshold']:.3f} (chosen on val for {dec['target_sensitivity']})",
        )
    arm = manifest.get("arm_verification")
    if isinstance(arm, dict):
        status = _arm_status(arm)
        card(f'<span class="{_status_class(status)}">{html.escape(status)}</span>', "ARM verification")
    return f'<div class="cards">{"".join(cards)}</div>' if cards else ""


def _comparison(models: list) -> str:
    if not models:
        return _missing("The build recorded no model comparison (manifest key 'models').")
    labels = [str(m.get("label", f"model {i}")) for i, m in enumerate(models)]
    hi = next((i for i, m in enumerate(models) if m.get("shipped")), None)
    plots = {}
    for title, unit, get in (
        ("File size", "MB", lambda m: m.get("size_bytes") and m["size_bytes"] / 1e6),
        ("Latency on the build host, batch 1 (p50)", "ms", _latency),
        (
            "Accuracy on the held-out split",
            "%",
            lambda m: None if _accuracy(m) is None else 100 * _accuracy(m),
        ),
    ):
        pairs = [(lb, v, i == hi) for i, (lb, v) in enumerate(zip(labels, map(get, models))) if v]
        if pairs:
            h = next((j for j, p in enumerate(pairs) if p[2]), None)
            plots[f"{title} ({unit})"] = _bars(
                title, unit, [p[0] for p in pairs], [float(p[1]) for p in pairs], h
            )
    rows = [
        {
            "model": label,
            "format": m.get("format"),
            "precision": m.get("precision"),
            "params": m.get("params"),
            "MACs": m.get("macs"),
            "size (bytes)": m.get("size_bytes"),
            "latency p50 (ms)": _latency(m),
            "accuracy": _accuracy(m),
            "accuracy 95% CI": _ci(m.get("accuracy_ci95")),
            "sensitivity per class (95% CI)": "; ".join(
                f"{c} {100 * v['sensitivity']:.1f}% ({_ci(m['per_class_ci95'][c]['sensitivity'])})"
                for c, v in (m.get("metrics") or {}).get("per_class", {}).items()
                if c in (m.get("per_class_ci95") or {})
            ),
            "shipped": "shipped" if m.get("shipped") else "",
        }
        for label, m in zip(labels, models)
    ]
    note = (
        '<p class="sub">Latency is measured on the build host, not on the device; run '
        "<code>python run.py bench</code> on the device for its own numbers.</p>"
    )
    return (_figures(plots) if plots else "") + _table(rows) + note


def _ci(interval) -> str | None:
    return f"{100 * interval[0]:.1f}-{100 * interval[1]:.1f}%" if interval else None


def _budgets(budgets, fallbacks) -> str:
    out = ""
    if isinstance(budgets, dict) and budgets:
        rows = []
        for k, v in budgets.items():
            row = {"budget": k}
            row.update(v if isinstance(v, dict) else {"value": v})
            rows.append(row)
        out += _table(rows)
    if fallbacks:
        out += (
            "<p>The build changed course to meet its budgets:</p><ul>"
            + "".join(f"<li>{html.escape(str(f))}</li>" for f in fallbacks)
            + "</ul>"
        )
    return out or _missing("No budgets were recorded.")


def _channels(kept) -> str:
    if not kept:
        return _missing("No pruning record (manifest key 'channels_kept').")
    layers = list(kept)
    before = [int(kept[k][0]) for k in layers]
    after = [int(kept[k][1]) for k in layers]
    fig = _figure(7.5, max(2.5, 0.22 * len(layers) + 1))
    ax = fig.add_subplot()
    y = range(len(layers))
    ax.barh(y, before, color="#d5dde8", label="before")
    ax.barh(y, after, color="#1f5fa8", label="kept")
    ax.set_yticks(y, layers, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("output channels")
    ax.legend(fontsize=8, loc="lower right")
    total_b, total_a = sum(before), sum(after)
    ax.set_title(f"{total_a:,} of {total_b:,} channels kept ({100 * total_a / total_b:.1f}%)", fontsize=10)
    return _figures({"Channels per layer, before and after pruning": fig})


def _confusions(models: list) -> str:
    figs = {}
    for m in models:
        metrics = m.get("metrics") or {}
        cm = metrics.get("confusion_matrix") or m.get("confusion_matrix")
        if not cm:
            continue
        names = metrics.get("class_names") or [str(i) for i in range(len(cm))]
        fig = _figure(3.6, 3.2)
        ax = fig.add_subplot()
        ax.imshow(cm, cmap="Blues")
        ax.set_xticks(range(len(names)), names, fontsize=8, rotation=30)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        peak = max(max(r) for r in cm) or 1
        for i, row in enumerate(cm):
            for j, v in enumerate(row):
                ax.text(
                    j,
                    i,
                    str(v),
                    ha="center",
                    va="center",
                    fontsize=9,
                    color="white" if v > peak / 2 else "black",
                )
        figs[str(m.get("label", "model"))] = fig
    return _figures(figs) if figs else _missing("No confusion matrices were recorded.")


def _saliency_numbers(block: dict | None) -> str:
    """What the IoU means, and the per-image table of the manifest's "saliency" block."""
    if not block:
        return ""
    top = block.get("top_fraction", 0.15)
    occ = block.get("occlusion") or {}
    return (
        f'<p class="sub">Grad-CAM of the unpruned PyTorch model beside the occlusion map of the '
        f"shipped file {html.escape(str(block.get('file')))} (run by {html.escape(str(block.get('runner')))}"
        f", the class run.py uses; {occ.get('patch')} px patches, stride {occ.get('stride')}) for the "
        f"class Grad-CAM explains. IoU = overlap of the two maps' top {top:.0%} pixels: 1 means the "
        f"shipped file relies on the same regions as the original model, 0 on none of them. Mean "
        f"IoU {_num(block.get('mean_iou'))} on {len(block.get('images') or [])} "
        f"{html.escape(str(block.get('split', 'val')))} images.</p>"
        + _table(block.get("images") or [], ["index", "class", "iou"])
    )


def _gradcam(images: dict, synthetic: bool, saliency: dict | None = None) -> str:
    numbers = _saliency_numbers(saliency)
    if images and synthetic:
        return (
            '<p class="sub">Computed on synthetic images (no patient data).</p>' + numbers + _figures(images)
        )
    if images or saliency:
        where = f" ({html.escape(saliency['overlays'])})" if saliency and saliency.get("overlays") else ""
        return (
            '<p class="note">Grad-CAM overlays are derived from patient images, so they were '
            f"left out of this artifact for privacy. They are in the build's own report{where}, "
            "outside the artifact.</p>" + numbers
        )
    return _missing("Grad-CAM was not computed for this build.")


def saliency_page(block: dict, images: dict) -> str:
    """The build's own saliency report (build-<target>/saliency/report.html, never shipped):
    the overlays and the numbers, self-contained."""
    from datetime import UTC, datetime

    from edgexray import __version__

    return Template(
        (Path(__file__).resolve().parent / "templates" / "report.html.tmpl").read_text(encoding="utf-8")
    ).substitute(
        name="saliency of the shipped file",
        subtitle=html.escape(str(block.get("method", ""))),
        cards="",
        sections=_section("Grad-CAM beside the shipped file's occlusion map", _saliency_numbers(block))
        + _figures(images),
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        edgexray_version=html.escape(__version__),
    )


def _parity(parity) -> str:
    if not parity:
        return _missing("No parity check was recorded.")
    if isinstance(parity, dict) and all(isinstance(v, dict) for v in parity.values()):
        rows = [
            {"file": k, **{c: v for c, v in row.items() if not isinstance(v, (dict, list))}}
            for k, row in parity.items()
        ]
    elif isinstance(parity, list):
        rows = [{c: v for c, v in r.items() if not isinstance(v, (dict, list))} for r in parity]
    else:
        return _kv(parity)
    return _table(rows)


def _status_class(status: str) -> str:
    return {"passed": "ok", "failed": "bad"}.get(status, "")


def _arm_status(arm: dict) -> str:
    if "status" in arm:
        return str(arm["status"])
    if "passed" in arm:
        return "passed" if arm["passed"] else "failed"
    return "unknown"


def _arm(arm) -> str:
    if not isinstance(arm, dict):
        return (
            '<p class="sub">Not run: the artifact was not executed on (emulated) ARM; '
            "<code>edgexray verify ARTIFACT</code> does it.</p>"
        )
    status = _arm_status(arm)
    head = f'<p>Status: <span class="{_status_class(status)}">{html.escape(status)}</span></p>'
    checks = arm.get("checks")
    rows = ""
    if isinstance(checks, dict):
        rows = _table(
            [{"check": k, **(v if isinstance(v, dict) else {"value": v})} for k, v in checks.items()]
        )
    rest = {k: v for k, v in arm.items() if k not in ("checks", "status")}
    return head + rows + (_kv(rest) if rest else "")


def _deployment(manifest: dict) -> str:
    inp, out = manifest["input"], manifest["output"]
    io_rows = [{"tensor": "input", **inp}, {"tensor": "output", **out}]
    prof = {k: v for k, v in manifest["profile"].items() if k != "prune"}
    return (
        _table(io_rows)
        + "<p>Pre-processing</p>"
        + _kv(manifest["preprocess"])
        + "<p>Target profile</p>"
        + _kv(prof)
    )


def _provenance(manifest: dict) -> str:
    files = [{"file": k, **v} for k, v in (manifest.get("files") or {}).items()]
    parts = [
        "<p>Files (manifest.json is authoritative; <code>python run.py verify</code> "
        "checks them)</p>" + (_table(files) or _missing("none recorded yet")),
        "<p>Tool versions</p>" + _kv(manifest.get("tool_versions") or {}),
    ]
    if manifest.get("config") is not None:
        parts.append(_details("Resolved build configuration", manifest["config"]))
    other = {k: v for k, v in manifest.items() if k not in _DRAWN}
    if other:
        parts.append(_details("Other build data", other))
    return "\n".join(parts)


def _details(title: str, obj) -> str:
    return (
        f"<details><summary>{html.escape(title)}</summary><pre>"
        f"{html.escape(json.dumps(obj, indent=2, default=str))}</pre></details>"
    )


def _external(manifest: dict, models: list) -> str:
    """Every model on the external test set beside its internal test figure, the overlap
    warnings, the splits' patient key and the leakage guard's findings."""
    ext, grouping, leak = manifest.get("external"), manifest.get("grouping"), manifest.get("leakage")
    out = ""
    if isinstance(grouping, dict):
        out += (
            "<p>Splits grouped by patient key <code>"
            + html.escape(str(grouping.get("key")))
            + f"</code> ({html.escape(str(grouping.get('source')))}; "
            f"{grouping.get('groups', 0)} groups)</p>"
            if grouping.get("groups")
            else f"<p>Splits not grouped by patient: {html.escape(str(grouping.get('source')))}</p>"
        )
    if isinstance(leak, dict):
        out += (
            f"<p>Leakage guard: {leak.get('exact_duplicate_clusters')} exact and "
            f"{leak.get('near_duplicate_clusters')} near-duplicate clusters, "
            f"{leak.get('conflicting_labels')} with conflicting labels, "
            f"{leak.get('across_splits')} across splits.</p>"
        )
    if not isinstance(ext, dict):
        return out + _missing(
            "No external test set (--test-data): every accuracy in this report "
            "comes from a split of the training folder, i.e. the training "
            "cohort; it says little about other patients or sites."
        )
    for w in ext.get("warnings") or []:
        out += f'<p class="bad"><strong>{html.escape(w)}</strong></p>'
    rows = []
    for m in models:
        e = m.get("external") or {}
        if "accuracy" not in e:
            rows.append({"model": m.get("label"), "external accuracy": "not evaluated"})
            continue
        pc, pci = e.get("per_class") or {}, e.get("per_class_ci95") or {}
        rows.append(
            {
                "model": str(m.get("label")) + (" (shipped, via run.py)" if m.get("shipped") else ""),
                "internal test accuracy": _accuracy(m),
                "external accuracy": e["accuracy"],
                "95% CI": _ci(e.get("accuracy_ci95")),
                "external ROC-AUC": e.get("roc_auc"),
                "AUC 95% CI": _ci(e.get("roc_auc_ci95")),
                "labels by": rule_brief(e.get("decision_rule")),
                "sensitivity (95% CI)": "; ".join(
                    f"{c} {100 * v['sensitivity']:.1f}% ({_ci((pci.get(c) or {}).get('sensitivity'))})"
                    for c, v in pc.items()
                ),
                "specificity (95% CI)": "; ".join(
                    f"{c} {100 * v['specificity']:.1f}% ({_ci((pci.get(c) or {}).get('specificity'))})"
                    for c, v in pc.items()
                ),
            }
        )
    return (
        out + f"<p>{ext.get('n')} images {html.escape(json.dumps(ext.get('counts')))} from "
        f"<code>{html.escape(str(ext.get('data')))}</code>, scored once at the end, never used "
        f"for a choice; {html.escape(str(ext.get('intervals')))}.</p>" + _table(rows)
    )
