"""The evaluate stage: clinical metrics, plots and Grad-CAM for a checkpoint on a held-out split."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from edgexray import plots
from edgexray.checkpoint import Checkpoint, load_checkpoint
from edgexray.fsutil import atomic_write_json, cache_dir, refuse_existing, staged_dir
from edgexray.runtime.errors import EdgeXrayError
from edgexray.runtime.metrics import classification_metrics

log = logging.getLogger(__name__)


def _shifted(dy: int, dx: int):
    """A view that moves the image by (dy, dx) pixels, repeating the edge row/column into the gap."""

    def view(x: np.ndarray) -> np.ndarray:
        pad = [(0, 0)] * (x.ndim - 2) + [(abs(dy), abs(dy)), (abs(dx), abs(dx))]
        padded = np.pad(x, pad, mode="edge")
        h, w = x.shape[-2:]
        y0, x0 = abs(dy) - dy, abs(dx) - dx
        return padded[..., y0 : y0 + h, x0 : x0 + w]

    return view


def _zoomed(factor: float):
    """A view scaled by `factor` about the centre (> 1 crops and enlarges, < 1 shrinks and pads
    with the edge), resized back to the input side."""

    def view(x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        side = x.shape[-1]
        inner = max(1, round(side / factor))
        if inner <= side:  # zoom in: the centre inner x inner square
            o = (side - inner) // 2
            t = t[..., o : o + inner, o : o + inner]
        else:  # zoom out: pad with the edge to inner x inner
            p = (inner - side) // 2
            t = torch.nn.functional.pad(t, (p, inner - side - p, p, inner - side - p), mode="replicate")
        t = torch.nn.functional.interpolate(t, size=(side, side), mode="bilinear", align_corners=False)
        return t.numpy()

    return view


# Test-time views of a normalized (N, C, S, S) batch; each keeps the shape. Shifts are 1/32 of a
# 128 px side (4 px) scaled to the input; zooms are +-10%, inside the training augmentation's range.
TTA_VIEWS = {
    "identity": lambda x: x,
    "mirror": lambda x: x[..., ::-1],
    "shift-left": lambda x: _shifted(0, -max(1, x.shape[-1] // 32))(x),
    "shift-right": lambda x: _shifted(0, max(1, x.shape[-1] // 32))(x),
    "shift-up": lambda x: _shifted(-max(1, x.shape[-1] // 32), 0)(x),
    "shift-down": lambda x: _shifted(max(1, x.shape[-1] // 32), 0)(x),
    "zoom-in": _zoomed(1.1),
    "zoom-out": _zoomed(0.9),
}

# Named sets of views for `evaluate --tta --tta-views NAME`; "mirror" is what --tta always did.
# A chest X-ray is not left-right symmetric (the heart), so only "mirror" and "all" use the mirror.
TTA_SETS = {
    "mirror": ("identity", "mirror"),
    "shifts": ("identity", "shift-left", "shift-right", "shift-up", "shift-down"),
    "shift-scale": ("identity", "shift-left", "shift-right", "shift-up", "shift-down", "zoom-in", "zoom-out"),
    "all": tuple(TTA_VIEWS),
}


def tta_views_of(tta) -> tuple[str, ...]:
    """The view names for `tta`: False/None -> identity only, True -> "mirror", or a TTA_SETS name."""
    if not tta:
        return ("identity",)
    name = "mirror" if tta is True else tta
    if name not in TTA_SETS:
        raise EdgeXrayError(f"TTA views {name!r}; allowed: {', '.join(TTA_SETS)}")
    return TTA_SETS[name]


def predict_proba(model, inputs: np.ndarray, batch_size: int = 64, tta=False) -> np.ndarray:
    """Class probabilities for normalized inputs (N, C, S, S). `tta`: False, True (average with
    the mirror) or a TTA_SETS name: the mean of the softmax over those views."""
    from edgexray.models.predict import predict_logits

    views = tta_views_of(tta)
    p = sum(
        torch.softmax(torch.from_numpy(predict_logits(model, TTA_VIEWS[v](inputs), batch_size)), 1)
        for v in views
    )
    return (p / len(views)).numpy()


def held_out_data(ckpt: Checkpoint, data_dir=None, progress: bool = True, splits=None):
    """The checkpoint's own data folder and splits.json; another `data_dir` is split with the
    checkpoint's split config, unless a `splits` file is given."""
    from edgexray.data import SplitConfig, prepare

    data_dir = data_dir or ckpt.extra.get("data_dir")
    if not data_dir:
        raise EdgeXrayError("this checkpoint does not record its data folder; pass --data DIR")
    stored = ckpt.extra.get("splits_path")
    same_folder = (
        ckpt.extra.get("data_dir") and Path(data_dir).resolve() == Path(ckpt.extra["data_dir"]).resolve()
    )
    if splits is None and same_folder and stored and Path(stored).is_file():
        splits = stored
    split_cfg = SplitConfig.from_dict((ckpt.train_config or {}).get("split") or {})
    data = prepare(
        data_dir,
        ckpt.preprocess.size,
        split_cfg,
        splits=splits,
        cache_dir=cache_dir("arrays"),
        progress=progress,
    )
    if tuple(data.class_names) != tuple(ckpt.class_names):
        raise EdgeXrayError(
            f"the data has classes {list(data.class_names)}, the checkpoint "
            f"{list(ckpt.class_names)}; evaluate on data with the same classes"
        )
    return data


def evaluate_checkpoint(
    ckpt_path,
    out_dir,
    data_dir=None,
    split: str = "test",
    tta: bool = False,
    gradcam: int = 0,
    force: bool = False,
    progress: bool = True,
    test_data=None,
    shift: bool = False,
    shift_seed: int = 0,
    tta_views: str = "mirror",
) -> dict:
    """Write metrics.json and PNG plots (confusion, ROC, PR, training curves, class
    distribution) and `gradcam` Grad-CAM overlays; return the metrics. With `test_data` (an
    external folder of other patients) that folder is scored instead of `split`, with 95%
    intervals and its overlap with the training folder (edgexray.external). With `shift`, the
    same images are also scored as a shifted copy (edgexray.shift, seeded by `shift_seed`):
    metrics["shifted"], with intervals and the ShiftConfig used."""
    if split not in ("train", "val", "test"):
        raise EdgeXrayError(f"split {split!r}; allowed: train, val, test")
    if not isinstance(gradcam, int) or gradcam < 0:
        raise EdgeXrayError(
            f"gradcam={gradcam!r}; allowed: 0 (none) or the number of Grad-CAM "
            "overlays to write, e.g. --gradcam 8"
        )
    out_dir = Path(out_dir)
    refuse_existing(out_dir, force, "evaluation output folder", folder=True)
    ckpt = load_checkpoint(ckpt_path)
    ext = None
    if test_data is not None:
        from edgexray import external

        ext = external.load_external(
            test_data,
            ckpt.class_names,
            ckpt.preprocess.size,
            data_dir or ckpt.extra.get("data_dir"),
            progress,
        )
    data = held_out_data(ckpt, data_dir, progress)
    arrays, labels = data.arrays[split], data.labels[split]
    if ext is not None:
        split, arrays, labels = "external", ext.arrays, ext.labels
    if len(labels) == 0:
        raise EdgeXrayError(f"the {split} split is empty; choose --split val or re-split the data")
    inputs = ckpt.preprocess.normalize(arrays)
    tta_views_of(tta_views)  # refuse an unknown name before any work
    views = tta_views if tta else False
    probs = predict_proba(ckpt.model, inputs, tta=views)
    names = list(ckpt.class_names)
    from edgexray.data import split_group_ids

    groups = None if ext is not None else split_group_ids(data, split)
    metrics = classification_metrics(labels, probs, names, intervals=True, groups=groups)
    if ext is not None:
        metrics = external.metrics_of(ext, probs)
        metrics["external"] = external.block(ext, {})
    if shift:
        from edgexray.shift import ShiftConfig, shifted_block, shifted_probs

        cfg = ShiftConfig()
        shifted = shifted_probs(ckpt.model, arrays, ckpt.preprocess, shift_seed, cfg, tta=views)
        shift_groups = groups if ext is None else ext.groups
        metrics["shifted"] = dict(
            shifted_block(labels, probs, shifted, names, shift_seed, cfg, shift_groups),
            split=f"{split} (shifted)",
        )
    metrics.update(
        split=split,
        tta=tta,
        tta_views=list(tta_views_of(views)),
        checkpoint=str(Path(ckpt_path).resolve()),
        arch=ckpt.arch,
        synthetic=(Path(data.index.root) / "SYNTHETIC.txt").exists(),
    )
    with staged_dir(out_dir, force, "evaluation output folder", merge=True) as work:
        plots.plot_confusion(metrics["confusion_matrix"], names, work / "confusion_matrix.png")
        plots.plot_roc(labels, probs, names, work / "roc.png")
        plots.plot_pr(labels, probs, names, work / "pr.png")
        plots.plot_class_distribution(
            {s: {c: int((data.labels[s] == i).sum()) for i, c in enumerate(names)} for s in data.labels},
            work / "class_distribution.png",
        )
        if ckpt.extra.get("history"):
            plots.plot_history(ckpt.extra["history"], work / "training_curves.png")
        if gradcam:
            write_gradcams(ckpt, arrays, labels, work / "gradcam", gradcam)
        atomic_write_json(work / "metrics.json", metrics)
    return metrics


def write_gradcams(ckpt: Checkpoint, arrays, labels, out_dir: Path, n: int) -> list[Path]:
    from edgexray.gradcam import gradcam

    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in sorted(rng.choice(len(arrays), size=min(n, len(arrays)), replace=False)):
        x = torch.from_numpy(ckpt.preprocess.normalize(arrays[i].astype(np.float32)))[None]
        heat, cls = gradcam(ckpt.model, x)
        title = f"true {ckpt.class_names[labels[i]]} / pred {ckpt.class_names[cls]}"
        path = out_dir / f"gradcam_{i:04d}.png"
        plots.overlay_heatmap(arrays[i].astype(np.float32), heat, path, title)
        paths.append(path)
    return paths
