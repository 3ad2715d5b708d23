"""Several architectures trained on the SAME patient-grouped splits, in one table.

The folder is split once (OUT/splits.json, edgexray.data.prepare with its leakage guard); each
architecture is trained by `train_folder` on those splits into OUT/<arch>/, then scored on the
test split (accuracy and ROC-AUC with 95% bootstrap intervals, over patients when the splits are
grouped), measured (params, MACs) and timed on this host's CPU (batch 1, PyTorch). Nothing is
chosen on test: the rows keep the order given, and early stopping looks at val only.
Writes comparison.md, comparison.csv, comparison.json and comparison.png.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgexray import plots
from edgexray.cliparams import MAX_SIZE, MIN_SIZE
from edgexray.runtime.errors import EdgeXrayError

log = logging.getLogger(__name__)

COMPARISON_FORMAT = "edgexray-compare-archs/1"


@dataclass(frozen=True)
class CompareConfig:
    archs: tuple[str, ...]
    size: int = 128  # input side in pixels, every architecture
    width: float = 1.0  # channel multiplier, every architecture
    epochs: int = 8
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0  # the splits' and every training run's seed
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    group_regex: str | None = None  # patient key; None: detected as `edgexray train` does
    group: bool = True  # False: split images independently
    latency_seconds: float = 2.0  # timed calls per architecture, after warm-up
    latency_threads: int | None = None  # PyTorch CPU threads while timing; None: its current count
    device: str = "auto"  # training device; latency is always measured on the CPU

    def __post_init__(self):
        if not self.archs or len(set(self.archs)) != len(self.archs):
            raise EdgeXrayError(
                f"--archs {','.join(self.archs)!r}; give one or more distinct "
                "architecture names, e.g. resnet18,mobilenet_v2 (see "
                "`edgexray train --list-archs`)"
            )
        if not isinstance(self.size, int) or not MIN_SIZE <= self.size <= MAX_SIZE:
            raise EdgeXrayError(f"size {self.size!r}; allowed: {MIN_SIZE} to {MAX_SIZE} pixels")
        if not self.latency_seconds > 0:
            raise EdgeXrayError(f"latency seconds {self.latency_seconds!r}; must be > 0, e.g. 2")
        if self.latency_threads is not None and not (
            isinstance(self.latency_threads, int) and self.latency_threads >= 1
        ):
            raise EdgeXrayError(f"latency threads {self.latency_threads!r}; must be >= 1, e.g. 1")

    def split_config(self):
        from edgexray.data import SplitConfig

        train, val, test = self.split
        return SplitConfig(
            train, val, test, seed=self.seed, group_regex=self.group_regex, auto_group=self.group
        )


def _check_archs(cfg: CompareConfig) -> None:
    """Unknown names, input sizes an architecture cannot take: fail before any image is read."""
    from edgexray.train import ModelConfig, check_model_config

    for arch in cfg.archs:
        check_model_config(ModelConfig(arch=arch, size=cfg.size, width=cfg.width))
    if cfg.split[2] <= 0:
        raise EdgeXrayError(
            f"--split {','.join(map(str, cfg.split))}: the comparison is scored "
            "on the test split; give it a fraction > 0, e.g. 0.6,0.2,0.2"
        )


def host_latency_ms(model, example, seconds: float, threads: int | None = None) -> dict:
    """Batch-1 CPU latency of a PyTorch model (edgexray.runtime.latency's protocol) with
    `threads` PyTorch threads (None: the current count)."""
    import torch

    from edgexray.runtime.latency import measure_latency

    model = model.eval().cpu()
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        with torch.inference_mode():
            rec = measure_latency(lambda: model(example), seconds=seconds, warmup=5, min_runs=10)
    finally:
        torch.set_num_threads(before)
    return rec | {"threads": threads or before}


def score_arch(checkpoint: Path, data, cfg: CompareConfig) -> dict:
    """One table row: test metrics with intervals, val metrics, params, MACs, host latency."""
    import torch

    from edgexray.checkpoint import load_checkpoint
    from edgexray.data import split_group_ids
    from edgexray.models.predict import predict_logits
    from edgexray.prune.measure import count
    from edgexray.runtime.metrics import classification_metrics, softmax

    ckpt = load_checkpoint(checkpoint)
    names = list(ckpt.class_names)
    metrics = {}
    for split in ("val", "test"):
        probs = softmax(predict_logits(ckpt.model, ckpt.preprocess.normalize(data.arrays[split])))
        groups = split_group_ids(data, split) if split == "test" else None
        metrics[split] = classification_metrics(
            data.labels[split], probs, names, intervals=split == "test", groups=groups, seed=cfg.seed
        )
    example = torch.from_numpy(ckpt.preprocess.normalize(data.arrays["test"][:1].astype(np.float32)))
    size = count(ckpt.model, example)
    latency = host_latency_ms(ckpt.model, example, cfg.latency_seconds, cfg.latency_threads)
    test, ci = metrics["test"], metrics["test"]["ci95"]
    return {
        "arch": ckpt.arch,
        "test_accuracy": test["accuracy"],
        "test_accuracy_ci95": ci["accuracy"],
        "test_roc_auc": test["roc_auc"],
        "test_roc_auc_ci95": ci["roc_auc"],
        "test_macro_f1": test["macro_f1"],
        "val_accuracy": metrics["val"]["accuracy"],
        "val_roc_auc": metrics["val"]["roc_auc"],
        "params": size["params"],
        "macs": size["macs"],
        "latency_p50_ms": latency["p50"],
        "latency_p90_ms": latency["p90"],
        "latency_runs": latency["runs"],
        "latency_threads": latency["threads"],
        "interval_unit": ci["unit"],
        "interval_units": ci["n_units"],
        "test_per_class": {
            c: {k: v[k] for k in ("sensitivity", "specificity", "support")}
            for c, v in test["per_class"].items()
        },
    }


def compare_archs(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: CompareConfig,
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Split `data_dir` once, train and score every architecture of `cfg` on those splits,
    write the table files into `out_dir` (atomically) and return the comparison document."""
    from edgexray.data import prepare, split_counts
    from edgexray.fsutil import atomic_write_json, atomic_write_text, cache_dir, refuse_existing, staged_dir
    from edgexray.runtime.environment import cpu_isa, cpu_model, environment
    from edgexray.runtime.latency import Stopwatch
    from edgexray.train import ModelConfig, TrainConfig, train_folder

    refuse_existing(out_dir, force, "comparison output folder", folder=True)
    _check_archs(cfg)
    train_cfg = TrainConfig(
        epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, device=cfg.device
    )
    with staged_dir(out_dir, force, "comparison output folder") as work:
        shared = prepare(
            data_dir,
            cfg.size,
            cfg.split_config(),
            out_dir=work,
            cache_dir=cache_dir("arrays"),
            progress=progress,
        )
        rows = []
        for arch in cfg.archs:
            log.info("compare-archs: training %s", arch)
            with Stopwatch() as sw:
                run = train_folder(
                    data_dir,
                    work / arch,
                    ModelConfig(arch=arch, size=cfg.size, width=cfg.width),
                    train_cfg,
                    splits=shared.splits_path,
                    progress=progress,
                    final_dir=Path(os.path.abspath(out_dir)) / arch,  # where `work` is moved
                )
            if run.data.splits != shared.splits:  # train_folder read the one splits.json
                raise EdgeXrayError(f"{arch} was trained on other splits than {shared.splits_path}")
            row = score_arch(run.checkpoint, run.data, cfg)
            rows.append(
                row
                | {
                    "best_epoch": run.result.best_epoch,
                    "epochs_run": len(run.result.history),
                    "train_seconds": round(sw.ms / 1000, 1),
                    "checkpoint": f"{arch}/model.pt",
                }
            )
        doc = {
            "format": COMPARISON_FORMAT,
            "data": str(Path(data_dir).resolve()),
            "synthetic": (Path(data_dir) / "SYNTHETIC.txt").exists(),
            "class_names": list(shared.class_names),
            "splits": "splits.json",
            "split_counts": split_counts(shared.splits, shared.index),
            "grouping": shared.grouping,
            "config": asdict(cfg),
            "choice": "none: rows in the order given; test is only reported",
            "host": {"cpu_model": cpu_model(), "cpu_isa": cpu_isa(), "environment": environment()},
            "rows": rows,
        }
        atomic_write_json(work / "comparison.json", doc)
        atomic_write_text(work / "comparison.csv", comparison2csv(rows))
        atomic_write_text(work / "comparison.md", comparison2markdown(doc))
        plot_comparison(rows, work / "comparison.png")
    return doc


def _ci(v, ci, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    return f"{v:.{digits}f}" + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


def _big(n: int) -> str:
    return f"{n / 1e9:.2f} G" if n >= 1e9 else f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.1f} k"


def comparison2markdown(doc: dict) -> str:
    rows = doc["rows"]
    n_test = sum(doc["split_counts"]["test"].values())
    unit = rows[0]["interval_unit"] if rows else "image"
    lines = [
        "| arch | test accuracy [95% CI] | test ROC-AUC [95% CI] | val accuracy | params | MACs "
        "| host p50 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['arch']} | {_ci(r['test_accuracy'], r['test_accuracy_ci95'])} | "
            f"{_ci(r['test_roc_auc'], r['test_roc_auc_ci95'])} | {r['val_accuracy']:.3f} | "
            f"{_big(r['params'])} | {_big(r['macs'])} | {r['latency_p50_ms']:.2f} |"
        )
    cfg, host = doc["config"], doc["host"]
    lines += [
        "",
        f"{n_test} test images; intervals: percentile bootstrap over {unit}s "
        f"({rows[0]['interval_units'] if rows else 0}). Same splits for every row "
        f"(splits.json, grouping: {(doc['grouping'] or {}).get('source')}). "
        f"{cfg['size']} px, width {cfg['width']}, {cfg['epochs']} epoch(s), seed "
        f"{cfg['seed']}. Nothing chosen on test.",
        f"Host latency: PyTorch, batch 1, {rows[0]['latency_threads'] if rows else '?'} "
        f"thread(s), on {host['cpu_model']} (ISA: {', '.join(host['cpu_isa']) or 'none'}).",
    ]
    if doc["synthetic"]:
        lines.append("SYNTHETIC data: not medical images.")
    return "\n".join(lines) + "\n"


CSV_FIELDS = (
    "arch",
    "test_accuracy",
    "test_accuracy_ci95",
    "test_roc_auc",
    "test_roc_auc_ci95",
    "test_macro_f1",
    "val_accuracy",
    "val_roc_auc",
    "params",
    "macs",
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_threads",
    "best_epoch",
    "epochs_run",
    "train_seconds",
    "checkpoint",
)


def comparison2csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_FIELDS)
    for r in rows:
        w.writerow(
            [
                " ".join(f"{v:.4f}" for v in r[k]) if isinstance(r[k], list) else "" if r[k] is None else r[k]
                for k in CSV_FIELDS
            ]
        )
    return buf.getvalue()


def plot_comparison(rows: list[dict], path=None) -> bytes:
    """Test accuracy with its 95% interval per architecture, and accuracy against latency."""
    plt, fig = plots.new_figure((9, 3.8))
    names = [r["arch"] for r in rows]
    acc = np.array([r["test_accuracy"] for r in rows])
    lo = np.array([(r["test_accuracy_ci95"] or [a, a])[0] for r, a in zip(rows, acc)])
    hi = np.array([(r["test_accuracy_ci95"] or [a, a])[1] for r, a in zip(rows, acc)])
    ax = fig.add_subplot(1, 2, 1)
    ax.errorbar(acc, np.arange(len(rows)), xerr=[acc - lo, hi - acc], fmt="o", capsize=4)
    ax.set_yticks(np.arange(len(rows)), names)
    ax.invert_yaxis()
    ax.set_xlabel("test accuracy (95% CI)")
    ax.set_title("Accuracy")
    ax = fig.add_subplot(1, 2, 2)
    lat = [r["latency_p50_ms"] for r in rows]
    ax.scatter(lat, acc, s=[30 + 200 * r["params"] / max(x["params"] for x in rows) for r in rows])
    for name, x, y in zip(names, lat, acc):
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("host p50 latency (ms, batch 1)")
    ax.set_ylabel("test accuracy")
    ax.set_title("Accuracy vs latency (size: params)")
    return plots.save_figure(plt, fig, path)


def format_comparison(doc: dict) -> str:
    return comparison2markdown(doc).rstrip()
