"""PNG plots people would rather look at than read. matplotlib with the Agg backend."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from edgexray.runtime.metrics import pr_curve, roc_curve


def new_figure(figsize=(5, 4)):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, plt.figure(figsize=figsize, dpi=100)


def save_figure(plt, fig, path) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    data = buf.getvalue()
    if path is not None:
        from edgexray.fsutil import atomic_write_bytes

        atomic_write_bytes(path, data)
    return data


def plot_confusion(cm, class_names, path=None, title="Confusion matrix") -> bytes:
    plt, fig = new_figure()
    ax = fig.add_subplot()
    cm = np.asarray(cm)
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=30, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
    ax.set_title(title)
    return save_figure(plt, fig, path)


def _one_vs_rest(y_true, probs, class_names, curve, xlabel, ylabel, title, path, diagonal=False):
    plt, fig = new_figure()
    ax = fig.add_subplot()
    for i, name in enumerate(class_names):
        ax.plot(*curve(np.asarray(y_true) == i, np.asarray(probs)[:, i]), label=name)
    if diagonal:
        ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    return save_figure(plt, fig, path)


def plot_roc(y_true, probs, class_names, path=None) -> bytes:
    return _one_vs_rest(
        y_true,
        probs,
        class_names,
        roc_curve,
        "1 - specificity",
        "sensitivity",
        "ROC (one-vs-rest)",
        path,
        diagonal=True,
    )


def plot_roc_point(is_pos, score, point: tuple[float, float], label: str, path=None) -> bytes:
    """ROC of one class with the operating point (sensitivity, specificity) marked."""
    plt, fig = new_figure()
    ax = fig.add_subplot()
    ax.plot(*roc_curve(np.asarray(is_pos, bool), np.asarray(score)), label="test ROC")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.plot([1 - point[1]], [point[0]], "ro", label=label)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title("Operating point (chosen on val), test split")
    ax.legend(loc="lower right")
    return save_figure(plt, fig, path)


def plot_pr(y_true, probs, class_names, path=None) -> bytes:
    return _one_vs_rest(
        y_true, probs, class_names, pr_curve, "recall", "precision", "Precision-recall (one-vs-rest)", path
    )


def plot_history(history: list[dict], path=None) -> bytes:
    plt, fig = new_figure((8, 3.5))
    epochs = [r["epoch"] for r in history]
    ax = fig.add_subplot(1, 2, 1)
    ax.plot(epochs, [r["train_loss"] for r in history], label="train loss")
    ax.plot(epochs, [r["val_loss"] for r in history], label="val loss")
    ax.set_xlabel("epoch")
    ax.legend()
    ax = fig.add_subplot(1, 2, 2)
    ax.plot(epochs, [r["val_accuracy"] for r in history], label="val accuracy")
    ax.plot(epochs, [r["val_macro_f1"] for r in history], label="val macro F1")
    ax.set_xlabel("epoch")
    ax.legend()
    return save_figure(plt, fig, path)


def plot_class_distribution(counts: dict[str, dict[str, int]], path=None) -> bytes:
    """counts: {split: {class: n}}."""
    plt, fig = new_figure()
    ax = fig.add_subplot()
    splits = list(counts)
    classes = list(next(iter(counts.values())))
    width = 0.8 / len(classes)
    for k, c in enumerate(classes):
        ax.bar(np.arange(len(splits)) + k * width, [counts[s][c] for s in splits], width, label=c)
    ax.set_xticks(np.arange(len(splits)) + 0.4 - width / 2, splits)
    ax.set_ylabel("images")
    ax.set_title("Class distribution")
    ax.legend()
    return save_figure(plt, fig, path)


def bar_before_after(values: dict[str, float], ylabel: str, title: str, path=None) -> bytes:
    plt, fig = new_figure((5, 3.5))
    ax = fig.add_subplot()
    names = list(values)
    bars = ax.bar(names, [values[n] for n in names], color=["#888", "#2a7", "#27a", "#a72"][: len(names)])
    ax.bar_label(bars, fmt="%.3g")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return save_figure(plt, fig, path)


def overlay_heatmap(gray: np.ndarray, heat: np.ndarray, path=None, title: str = "") -> bytes:
    plt, fig = new_figure((3, 3))
    ax = fig.add_subplot()
    ax.imshow(gray, cmap="gray")
    ax.imshow(heat, cmap="jet", alpha=0.4)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)
    return save_figure(plt, fig, Path(path) if path else None)
