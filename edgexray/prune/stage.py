"""The prune stage on files: checkpoint (+ its data) in; pruned checkpoint + reports out.

Shared by `edgexray prune`, `--sensitivity` and `--compare`: loading the data a checkpoint was
trained on, evaluating, fine-tuning with the training loop, measuring size and latency.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edgexray.fsutil import atomic_write_json, atomic_write_text, refuse_existing, replace_dir
from edgexray.prune import measure
from edgexray.prune import report as report_md
from edgexray.prune.prune import PruneConfig, PruneResult, prune_model
from edgexray.runtime.errors import EdgeXrayError

log = logging.getLogger(__name__)


@dataclass
class PruneData:
    """Loaders over the checkpoint's splits (normalized as the checkpoint expects)."""

    train: object  # shuffled, augmented: fine-tuning
    calib: object  # shuffled, no augmentation: calibration images
    val: object
    test: object | None
    class_names: tuple
    class_weights: torch.Tensor
    source: str  # data folder


def load_data(
    ckpt,
    data_dir=None,
    splits=None,
    batch_size: int = 32,
    progress: bool = True,
    need: str = "calibration images",
) -> PruneData:
    """The data a checkpoint was trained on (its `extra` names the folder and splits file);
    `data_dir` / `splits` override them."""
    from edgexray.evaluate import held_out_data

    data_dir = data_dir or ckpt.extra.get("data_dir")
    if not data_dir or not Path(data_dir).is_dir():
        raise EdgeXrayError(
            f"missing {need}: the data folder {str(data_dir)!r} "
            f"{'does not exist' if data_dir else 'is not recorded in the checkpoint'}; "
            "pass --data DIR (the image folder the model was trained on)"
        )
    data = held_out_data(ckpt, data_dir, progress, splits=splits)
    if len(data.labels["train"]) == 0 or len(data.labels["val"]) == 0:
        raise EdgeXrayError(
            f"missing {need}: the train or val split of {str(data_dir)!r} is empty; "
            "add images or pass another --splits file"
        )
    return loaders_for(ckpt, data, batch_size)


def loaders_for(ckpt, data, batch_size: int = 32) -> PruneData:
    """Loaders over prepared data (edgexray.data.PreparedData), normalized for `ckpt`."""
    from edgexray.data import AugmentConfig, XrayDataset, class_weights, make_loader

    pre = ckpt.preprocess

    def loader(split, augment=None, shuffle=False):
        if len(data.labels[split]) == 0:
            return None
        return make_loader(
            XrayDataset(data.arrays[split], data.labels[split], pre, augment),
            batch_size,
            shuffle=shuffle,
            seed=0,
        )

    stored = (ckpt.train_config or {}).get("augment")  # the training run's own augmentation
    return PruneData(
        train=loader("train", AugmentConfig.from_dict(stored) if stored else AugmentConfig(), True),
        calib=loader("train", None, True),
        val=loader("val"),
        test=loader("test"),
        class_names=tuple(data.class_names),
        class_weights=class_weights(data.labels["train"], len(data.class_names)),
        source=str(data.index.root),
    )


def evaluate(model: nn.Module, loader, class_names) -> dict | None:
    """accuracy, macro F1, ROC-AUC of `model` on `loader` (None without a loader)."""
    if loader is None:
        return None
    from edgexray.runtime.metrics import classification_metrics
    from edgexray.train import loader_logits

    with torch.no_grad():
        logits, labels = loader_logits(model.eval(), loader, torch.device("cpu"))
    probs = torch.softmax(torch.from_numpy(logits), 1).numpy()
    m = classification_metrics(labels, probs, list(class_names))
    return {
        "n": int(len(labels)),
        "accuracy": float(m["accuracy"]),
        "macro_f1": float(m["macro_f1"]),
        "roc_auc": None if m.get("roc_auc") is None else float(m["roc_auc"]),
    }


def finetune_config(ckpt, epochs: int, lr: float | None = None):
    """The checkpoint's own training settings, for `epochs` more epochs (no early stop)."""
    from edgexray.train import TrainConfig

    stored = dict((ckpt.train_config or {}).get("train") or {})
    stored = {k: v for k, v in stored.items() if k in TrainConfig.__dataclass_fields__}
    cfg = TrainConfig.from_dict(stored)
    return dataclasses.replace(cfg, epochs=epochs, patience=epochs + 1, lr=lr if lr else cfg.lr)


def make_finetune(ckpt, data: PruneData, epochs: int, lr: float | None, log_to: list, progress: bool = True):
    """A `finetune(model, step)` for prune_model: records val accuracy before and after."""
    from edgexray.train import train_model

    cfg = finetune_config(ckpt, epochs, lr)

    def finetune(model, step):
        entry = {"step": step, "val_before": evaluate(model, data.val, data.class_names)}
        result = train_model(
            model,
            data.train,
            data.val,
            cfg,
            class_weights=data.class_weights,
            class_names=list(data.class_names),
            progress=progress,
        )
        model = result.model.cpu()  # pruning and measuring continue on the CPU
        entry["val_after"] = evaluate(model, data.val, data.class_names)
        entry["epochs"], entry["best_epoch"] = len(result.history), result.best_epoch
        log_to.append(entry)
        return model

    return finetune


def _measure(model, example, runs, threads) -> dict:
    return {
        **measure.count(model, example),
        "state_dict_bytes": measure.state_dict_bytes(model),
        "latency_ms": measure.cpu_latency_ms(model, example, runs=runs, threads=threads),
    }


@dataclass
class PruneOutcome:
    checkpoint: Path
    report: dict
    out_dir: Path


def prune_checkpoint(
    ckpt_path,
    out_dir,
    cfg: PruneConfig,
    data_dir=None,
    splits=None,
    finetune_lr: float | None = None,
    latency_runs: int = 30,
    latency_threads: int | None = 1,
    force: bool = False,
    progress: bool = True,
    extra_report: dict | None = None,
    extra_files: dict[str, bytes | str] | None = None,
) -> PruneOutcome:
    """Prune a checkpoint, fine-tune, measure; write out_dir/model.pt, prune_report.json/.md.
    Latency is PyTorch on the CPU, batch 1, `latency_threads` threads (1: steadiest on a busy
    machine; None: torch's default). `extra_report` joins the JSON report, `extra_files` (name:
    content) are written beside it (e.g. the sensitivity analysis that seeded the schedule)."""
    from edgexray.checkpoint import load_checkpoint, save_checkpoint

    cfg.validate()
    out_dir = Path(out_dir)
    refuse_existing(out_dir, force, "prune output folder", folder=True)
    ckpt = load_checkpoint(ckpt_path)
    from edgexray.prune.importance import get_importance
    from edgexray.prune.unstructured import METHOD as UNSTRUCTURED

    needs_data = (
        cfg.method != UNSTRUCTURED and get_importance(cfg.method).needs_data
    ) or cfg.finetune_epochs > 0
    data = None
    if needs_data or data_dir or ckpt.extra.get("data_dir"):
        try:
            data = load_data(
                ckpt,
                data_dir,
                splits,
                progress=progress,
                need=f"calibration images for --method {cfg.method}" if needs_data else "validation data",
            )
        except EdgeXrayError:
            if needs_data:
                raise
            log.warning("no data: accuracy is not reported")
    model = ckpt.model
    example = torch.zeros(ckpt.input_shape)
    before = _measure(model, example, latency_runs, latency_threads)
    val_before = evaluate(model, data.val, data.class_names) if data else None
    test_before = evaluate(model, data.test, data.class_names) if data else None
    ft_log: list = []
    finetune = (
        make_finetune(ckpt, data, cfg.finetune_epochs, finetune_lr, ft_log, progress)
        if cfg.finetune_epochs > 0
        else None
    )
    result: PruneResult = prune_model(model, example, cfg, data.calib if data else None, finetune)
    model = result.model
    after = _measure(model, example, latency_runs, latency_threads)
    accuracy = {
        "val_before": val_before,
        "val_pruned": ft_log[-1]["val_before"]
        if ft_log
        else (evaluate(model, data.val, data.class_names) if data else None),
        "val_finetuned": ft_log[-1]["val_after"] if ft_log else None,
        "test_before": test_before,
        "test_after": evaluate(model, data.test, data.class_names) if data else None,
        "finetune": ft_log,
    }
    rep = {
        "schema": "edgexray.prune/1",
        "source_checkpoint": str(Path(ckpt_path)),
        "arch": ckpt.arch,
        "input_shape": list(ckpt.input_shape),
        "data": data.source if data else None,
        **result.report,
        "measured": {"before": before, "after": after},
        "accuracy": accuracy,
    }
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        metrics = {"val": accuracy["val_finetuned"] or accuracy["val_pruned"], "test": accuracy["test_after"]}
        extra = {
            **ckpt.extra,
            "pruned_from": str(Path(ckpt_path).resolve()),
            "prune": {"method": cfg.method, "config": cfg.to_dict(), "reduction": result.report["reduction"]},
        }
        if data:
            extra["data_dir"] = str(Path(data.source).resolve())
        save_checkpoint(
            tmp / "model.pt",
            model,
            arch=ckpt.arch,
            model_options=ckpt.model_options,
            class_names=ckpt.class_names,
            preprocess=ckpt.preprocess,
            train_config=ckpt.train_config,
            metrics=metrics,
            extra=extra,
        )
        rep["files"] = {
            "before_bytes": Path(ckpt_path).stat().st_size,
            "after_bytes": (tmp / "model.pt").stat().st_size,
            "before_zipped_bytes": measure.zipped_bytes(Path(ckpt_path).read_bytes()),
            "after_zipped_bytes": measure.zipped_bytes((tmp / "model.pt").read_bytes()),
        }
        rep.update(extra_report or {})
        for name, content in (extra_files or {}).items():
            (tmp / name).write_bytes(content if isinstance(content, bytes) else content.encode())
        atomic_write_json(tmp / "prune_report.json", rep)
        atomic_write_text(tmp / "prune_report.md", report_md.prune_markdown(rep))
        replace_dir(tmp, out_dir, force)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PruneOutcome(out_dir / "model.pt", rep, out_dir)


def pruned_copy(model, example, cfg, data: PruneData | None, finetune=None) -> PruneResult:
    """prune_model on a deep copy (sensitivity and comparison keep the original intact)."""
    return prune_model(copy.deepcopy(model), example, cfg, data.calib if data else None, finetune)
