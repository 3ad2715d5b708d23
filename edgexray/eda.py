"""Exploratory data analysis of an image folder: what a reader should know before training.

Class balance, stored image sizes, modes and bit depths (from the file headers), intensity
histograms per class (of the pixels edgexray decodes, so what a model sees), exact and
near-duplicate images (edgexray.leakage) and patient groups (edgexray.data.splits grouping).
`write_eda` writes report.html, eda.json, images.csv and PNG plots into one folder atomically.
"""

from __future__ import annotations

import csv
import html
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgexray import leakage, plots
from edgexray.cliparams import MAX_SIZE, MIN_SIZE
from edgexray.data.arrays import decode_all
from edgexray.data.scan import ImageFolderIndex, scan_image_folder
from edgexray.data.splits import SplitConfig, grouping_of
from edgexray.imageio import DICOM_SUFFIXES
from edgexray.runtime.errors import EdgeXrayError

log = logging.getLogger(__name__)

EDA_FORMAT = "edgexray-eda/1"
# bits per sample of PIL's modes (a multi-band mode counts one band)
PIL_MODE_BITS = {
    "1": 1,
    "L": 8,
    "P": 8,
    "LA": 8,
    "PA": 8,
    "RGB": 8,
    "RGBA": 8,
    "RGBX": 8,
    "CMYK": 8,
    "YCbCr": 8,
    "LAB": 8,
    "HSV": 8,
    "I;16": 16,
    "I;16L": 16,
    "I;16B": 16,
    "I;16N": 16,
    "I": 32,
    "F": 32,
}


@dataclass(frozen=True)
class EdaConfig:
    size: int = 128  # side the images are decoded to for histograms and the duplicate search
    bins: int = 64  # intensity histogram bins over [0, 1]
    group_regex: str | None = None  # patient key; None: detected as `edgexray train` does

    def __post_init__(self):
        if not isinstance(self.size, int) or not MIN_SIZE <= self.size <= MAX_SIZE:
            raise EdgeXrayError(
                f"EDA size {self.size!r}; allowed: an integer from {MIN_SIZE} to {MAX_SIZE} pixels, e.g. 128"
            )
        if not isinstance(self.bins, int) or not 2 <= self.bins <= 1024:
            raise EdgeXrayError(f"histogram bins {self.bins!r}; allowed: 2 to 1024, e.g. 64")
        SplitConfig(group_regex=self.group_regex)  # a bad regex fails here, before any work


def image_header(path: str | os.PathLike) -> dict:
    """{"format", "mode", "bits", "width", "height"} of an image file, read from its header."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES:
        import pydicom

        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        return {
            "format": "DICOM",
            "mode": str(ds.get("PhotometricInterpretation", "?")),
            "bits": int(ds.get("BitsStored") or ds.get("BitsAllocated") or 0),
            "width": int(ds.Columns),
            "height": int(ds.Rows),
        }
    if suffix == ".npy":
        a = np.load(path, mmap_mode="r", allow_pickle=False)
        return {
            "format": "NPY",
            "mode": f"array {a.dtype}",
            "bits": a.dtype.itemsize * 8,
            "width": int(a.shape[1]) if a.ndim > 1 else 1,
            "height": int(a.shape[0]),
        }
    from PIL import Image

    with Image.open(path) as im:
        bits = PIL_MODE_BITS.get(im.mode, 0)
        return {
            "format": im.format or suffix.lstrip(".").upper(),
            "mode": im.mode,
            "bits": bits,
            "width": int(im.size[0]),
            "height": int(im.size[1]),
        }


def _counts(values) -> dict:
    keys, n = np.unique(np.asarray(list(values), dtype=str), return_counts=True)
    return {str(k): int(c) for k, c in sorted(zip(keys, n), key=lambda kv: (-kv[1], kv[0]))}


def _spread(values) -> dict | None:
    v = np.asarray(values, np.float64)
    if v.size == 0:
        return None
    return {"min": float(v.min()), "median": float(np.median(v)), "max": float(v.max())}


def header_summary(headers: list[dict], labels: np.ndarray, class_names) -> dict:
    """Per class: formats, modes, bit depths, width/height/aspect spread, distinct sizes."""
    out = {}
    for k, name in [(None, "all"), *enumerate(class_names)]:
        rows = [h for h, lab in zip(headers, labels) if k is None or lab == k]
        out[name] = {
            "images": len(rows),
            "formats": _counts(h["format"] for h in rows),
            "modes": _counts(h["mode"] for h in rows),
            "bit_depths": _counts(h["bits"] for h in rows),
            "width": _spread([h["width"] for h in rows]),
            "height": _spread([h["height"] for h in rows]),
            "aspect_w_over_h": _spread([h["width"] / max(h["height"], 1) for h in rows]),
            "distinct_sizes": len({(h["width"], h["height"]) for h in rows}),
        }
    return out


def intensity_summary(arrays: np.ndarray, labels: np.ndarray, class_names, bins: int) -> dict:
    """Per class: pixel histogram (density over [0, 1]) and per-image mean/std spreads."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    flat = np.asarray(arrays, np.float32).reshape(len(arrays), -1)
    means, stds = flat.mean(1), flat.std(1)
    out = {"edges": edges.tolist(), "per_class": {}}
    for k, name in enumerate(class_names):
        rows = flat[labels == k]
        hist = np.zeros(bins, np.float64)
        for chunk in np.array_split(rows, max(1, len(rows) // 256)):
            hist += np.histogram(chunk, bins=edges)[0]
        out["per_class"][name] = {
            "histogram": (hist / max(hist.sum(), 1) * bins).tolist(),  # density: integrates to 1
            "image_mean": _spread(means[labels == k]),
            "image_std": _spread(stds[labels == k]),
        }
    return out | {"image_means": means.tolist()}


def group_summary(
    index: ImageFolderIndex, relpaths: list[str], labels: np.ndarray, group_regex: str | None
) -> tuple[dict, dict | None]:
    """The patient grouping `edgexray train` would use, with groups per class, images per
    group, and groups holding images of several classes. Also returns relpath -> group."""
    grouping = grouping_of(index, SplitConfig(group_regex=group_regex))
    out = grouping.summary()
    if grouping.keys is None:
        return out, None
    keys = [grouping.keys[rel] for rel in relpaths]
    classes_of: dict[str, set] = {}
    for g, lab in zip(keys, labels):
        classes_of.setdefault(g, set()).add(int(lab))
    sizes = np.asarray(list(_counts(keys).values()))
    out.update(
        groups_per_class={
            name: sum(k in c for c in classes_of.values()) for k, name in enumerate(index.class_names)
        },
        groups_with_several_classes=sum(len(c) > 1 for c in classes_of.values()),
        images_per_group=_spread(sizes),
        images_per_group_counts=_counts(sizes.tolist()),
    )
    return out, dict(zip(relpaths, keys))


def duplicate_summary(
    arrays: np.ndarray, relpaths: list[str], labels: np.ndarray, class_names, group_of: dict | None
) -> dict:
    """edgexray.leakage's folder report, plus near-duplicate clusters spanning patient groups
    (copies that grouping alone would not keep in one split)."""
    exact, near = leakage.duplicate_clusters(arrays)
    report = leakage.folder_report(relpaths, labels, class_names, exact, near)
    if group_of is not None:
        report["near_clusters_spanning_groups"] = sum(
            len({group_of[relpaths[i]] for i in c}) > 1 for c in near
        )
    return report


def folder2eda(
    data_dir: str | os.PathLike, cfg: EdaConfig = EdaConfig(), progress: bool = True
) -> tuple[dict, list[dict]]:
    """(the EDA document, one row per readable image) of an image folder."""
    from edgexray.fsutil import cache_dir

    index = scan_image_folder(data_dir)
    relpaths = [rel for rel, _ in index.items]
    arrays, failed = decode_all(
        Path(index.root), relpaths, cfg.size, progress, strict=False, cache_dir=cache_dir("arrays")
    )
    bad = {rel for rel, _ in failed}
    relpaths = [rel for rel in relpaths if rel not in bad]
    if not relpaths:
        raise EdgeXrayError(
            f"no image of {str(data_dir)!r} could be decoded, e.g. {failed[0][1]}; check the files"
        )
    labels = index.labels_of(relpaths)
    headers = [image_header(Path(index.root) / rel) for rel in relpaths]
    names = list(index.class_names)
    groups, group_of = group_summary(index, relpaths, labels, cfg.group_regex)
    intensity = intensity_summary(arrays, labels, names, cfg.bins)
    doc = {
        "format": EDA_FORMAT,
        "root": str(Path(index.root).resolve()),
        "synthetic": (Path(index.root) / "SYNTHETIC.txt").exists(),
        "config": {"size": cfg.size, "bins": cfg.bins, "group_regex": cfg.group_regex},
        "class_names": names,
        "class_counts": {name: int((labels == k).sum()) for k, name in enumerate(names)},
        "images": len(relpaths),
        "unreadable": [list(s) for s in index.skipped] + [list(f) for f in failed],
        "headers": header_summary(headers, labels, names),
        "intensity": {k: v for k, v in intensity.items() if k != "image_means"},
        "groups": groups,
        "duplicates": duplicate_summary(arrays, relpaths, labels, names, group_of),
    }
    rows = [
        {
            "image": rel,
            "class": names[lab],
            **h,
            "mean": round(float(m), 4),
            "group": group_of[rel] if group_of else "",
        }
        for rel, lab, h, m in zip(relpaths, labels, headers, intensity["image_means"])
    ]
    return doc, rows


# ---- plots ---------------------------------------------------------------------------------


def plot_class_balance(counts: dict, path=None) -> bytes:
    plt, fig = plots.new_figure((5, 3.5))
    ax = fig.add_subplot()
    bars = ax.bar(list(counts), list(counts.values()), color="#27a")
    ax.bar_label(bars)
    ax.set_ylabel("images")
    ax.set_title("Class balance")
    return plots.save_figure(plt, fig, path)


def plot_sizes(rows: list[dict], class_names, path=None) -> bytes:
    plt, fig = plots.new_figure((5, 4))
    ax = fig.add_subplot()
    for name in class_names:
        w = [r["width"] for r in rows if r["class"] == name]
        h = [r["height"] for r in rows if r["class"] == name]
        ax.scatter(w, h, s=6, alpha=0.5, label=name)
    ax.set_xlabel("width (px)")
    ax.set_ylabel("height (px)")
    ax.set_title("Stored image sizes")
    ax.legend()
    return plots.save_figure(plt, fig, path)


def plot_intensity(intensity: dict, rows: list[dict], class_names, path=None) -> bytes:
    plt, fig = plots.new_figure((9, 3.5))
    edges = np.asarray(intensity["edges"])
    centers = (edges[:-1] + edges[1:]) / 2
    ax = fig.add_subplot(1, 2, 1)
    for name in class_names:
        ax.plot(centers, intensity["per_class"][name]["histogram"], label=name)
    ax.set_xlabel("decoded intensity")
    ax.set_ylabel("density")
    ax.set_title("Pixel intensities per class")
    ax.legend()
    ax = fig.add_subplot(1, 2, 2)
    for name in class_names:
        ax.hist([r["mean"] for r in rows if r["class"] == name], bins=30, alpha=0.5, label=name)
    ax.set_xlabel("image mean intensity")
    ax.set_ylabel("images")
    ax.set_title("Brightness per image")
    ax.legend()
    return plots.save_figure(plt, fig, path)


def plot_groups(groups: dict, path=None) -> bytes:
    plt, fig = plots.new_figure((5, 3.5))
    ax = fig.add_subplot()
    counts = groups.get("images_per_group_counts") or {}
    sizes = sorted(counts, key=int)
    ax.bar([str(s) for s in sizes], [counts[s] for s in sizes], color="#a72")
    ax.set_xlabel("images per group")
    ax.set_ylabel("groups")
    ax.set_title(f"Patient groups ({groups.get('groups', 0)})")
    return plots.save_figure(plt, fig, path)


# ---- report --------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list]) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt_spread(s: dict | None, digits: int = 0) -> str:
    return "-" if s is None else "/".join(f"{s[k]:.{digits}f}" for k in ("min", "median", "max"))


def _fmt_counts(counts: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in counts.items())


def eda2html(doc: dict, figures: dict[str, str]) -> str:
    """A self-contained HTML page (the PNGs next to it) from the EDA document."""
    esc = html.escape
    names = doc["class_names"]
    total = max(doc["images"], 1)
    parts = [f"<h1>Dataset EDA: {esc(doc['root'])}</h1>"]
    if doc["synthetic"]:
        parts.append("<p><b>SYNTHETIC data (SYNTHETIC.txt): not medical images.</b></p>")
    parts.append(
        f"<p>{doc['images']} readable images, {len(names)} classes, "
        f"{len(doc['unreadable'])} unreadable. Intensities and duplicates are computed on "
        f"the decoded gray pixels at {doc['config']['size']} px, as edgexray trains.</p>"
    )
    parts.append(
        "<h2>Class balance</h2>"
        + _table(
            ["class", "images", "share"], [[c, n, f"{n / total:.1%}"] for c, n in doc["class_counts"].items()]
        )
    )
    parts.append(f'<img src="{figures["class_balance"]}">')
    h = doc["headers"]
    parts.append(
        "<h2>Stored sizes, modes, bit depths</h2>"
        + _table(
            [
                "class",
                "formats",
                "modes",
                "bit depths",
                "width min/med/max",
                "height min/med/max",
                "aspect w/h min/med/max",
                "distinct sizes",
            ],
            [
                [
                    c,
                    _fmt_counts(h[c]["formats"]),
                    _fmt_counts(h[c]["modes"]),
                    _fmt_counts(h[c]["bit_depths"]),
                    _fmt_spread(h[c]["width"]),
                    _fmt_spread(h[c]["height"]),
                    _fmt_spread(h[c]["aspect_w_over_h"], 2),
                    h[c]["distinct_sizes"],
                ]
                for c in ["all", *names]
            ],
        )
    )
    parts.append(f'<img src="{figures["image_sizes"]}">')
    inten = doc["intensity"]["per_class"]
    parts.append(
        "<h2>Intensities per class</h2>"
        + _table(
            ["class", "image mean min/med/max", "image std min/med/max"],
            [
                [c, _fmt_spread(inten[c]["image_mean"], 3), _fmt_spread(inten[c]["image_std"], 3)]
                for c in names
            ],
        )
    )
    parts.append(f'<img src="{figures["intensity"]}">')
    d = doc["duplicates"]
    parts.append(
        "<h2>Duplicates</h2><p>"
        + esc(d["method"])
        + "</p>"
        + _table(
            [
                "exact clusters",
                "images in them",
                "near clusters (incl. exact)",
                "images in them",
                "clusters with conflicting labels",
                "near clusters spanning patient groups",
            ],
            [
                [
                    d["exact_duplicate_clusters"],
                    d["images_in_exact_clusters"],
                    d["near_duplicate_clusters"],
                    d["images_in_near_clusters"],
                    d["conflicting_labels"],
                    d.get("near_clusters_spanning_groups", "-"),
                ]
            ],
        )
    )
    if d["examples"]:
        parts.append(
            "<p>First clusters:</p>"
            + _table(
                ["images", "labels"],
                [[", ".join(e["images"]), ", ".join(e["labels"])] for e in d["examples"]],
            )
        )
    g = doc["groups"]
    rows = [["key", g.get("key")], ["source", g.get("source")]]
    if "groups" in g:
        rows += [
            ["groups", g["groups"]],
            ["groups with several images", g["groups_with_several_images"]],
            ["images per group min/med/max", _fmt_spread(g["images_per_group"])],
            ["groups per class", _fmt_counts(g["groups_per_class"])],
            ["groups with several classes", g["groups_with_several_classes"]],
        ]
    parts.append("<h2>Patient groups</h2>" + _table(["", ""], rows))
    if "groups" in figures:
        parts.append(f'<img src="{figures["groups"]}">')
    if doc["unreadable"]:
        parts.append("<h2>Unreadable files</h2>" + _table(["file", "why"], doc["unreadable"][:50]))
    style = (
        "body{font-family:sans-serif;max-width:1000px;margin:auto}table{border-collapse:"
        "collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>edgexray EDA</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n"
    )


def _csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    fields = ["image", "class", "format", "mode", "bits", "width", "height", "mean", "group"]
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write_eda(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: EdaConfig = EdaConfig(),
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Write OUT/report.html, eda.json, images.csv and the PNGs; return the EDA document."""
    from edgexray.fsutil import atomic_write_json, atomic_write_text, refuse_existing, staged_dir

    refuse_existing(out_dir, force, "EDA output folder", folder=True)  # before minutes of work
    doc, rows = folder2eda(data_dir, cfg, progress)
    figures = {
        "class_balance": "class_balance.png",
        "image_sizes": "image_sizes.png",
        "intensity": "intensity.png",
    }
    if doc["groups"].get("images_per_group_counts"):
        figures["groups"] = "groups.png"
    with staged_dir(out_dir, force, "EDA output folder") as work:
        plot_class_balance(doc["class_counts"], work / figures["class_balance"])
        plot_sizes(rows, doc["class_names"], work / figures["image_sizes"])
        plot_intensity(doc["intensity"], rows, doc["class_names"], work / figures["intensity"])
        if "groups" in figures:
            plot_groups(doc["groups"], work / figures["groups"])
        atomic_write_text(work / "images.csv", _csv_text(rows))
        atomic_write_json(work / "eda.json", doc)
        atomic_write_text(work / "report.html", eda2html(doc, figures))
    return doc


def format_eda(doc: dict) -> str:
    """A few lines for the terminal."""
    d, g = doc["duplicates"], doc["groups"]
    lines = [
        f"{doc['images']} images: " + ", ".join(f"{c} {n}" for c, n in doc["class_counts"].items()),
        "modes: "
        + _fmt_counts(doc["headers"]["all"]["modes"])
        + "; bit depths: "
        + _fmt_counts(doc["headers"]["all"]["bit_depths"]),
        f"duplicates: {d['exact_duplicate_clusters']} exact, {d['near_duplicate_clusters']} "
        f"near clusters ({d['images_in_near_clusters']} images)",
        f"groups: {g.get('groups', 'none')} ({g.get('source')})",
    ]
    return "\n".join(lines)
