"""The training loop, shared by `edgexray train` and by fine-tuning after pruning."""
from __future__ import annotations

import copy
import csv
import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from edgexray.config import config_from_dict
from edgexray.errors import EdgeXrayError
from edgexray.metrics import classification_metrics

log = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "cosine-restarts", "constant")
LOSSES = ("ce", "focal")
MONITORS = ("val_loss", "val_accuracy", "val_macro_f1", "val_roc_auc")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 8  # short enough for a 2-core CPU at 128 px; raise on a GPU
    batch_size: int = 32
    lr: float = 1e-3  # AdamW default that works from scratch; use ~1e-4 for pretrained
    optimizer: str = "adamw"  # adam | adamw | sgd (momentum 0.9)
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # cosine | cosine-restarts (SGDR, period restart_epochs) | constant
    restart_epochs: int = 4  # first period of cosine warm restarts
    label_smoothing: float = 0.0
    loss: str = "ce"  # ce | focal
    focal_gamma: float = 2.0
    class_weighted: bool = False  # weight the loss by inverse class frequency
    oversample: bool = False  # weighted sampler (applied where the loader is built)
    mixup_alpha: float = 0.0  # 0 = off; 0.2 as in the seed projects
    patience: int = 5  # early stopping: epochs without improvement of `monitor`
    monitor: str = "val_loss"  # val_loss | val_accuracy | val_macro_f1 | val_roc_auc
    seed: int = 0
    amp: bool = True  # mixed precision, used on CUDA only
    device: str = "auto"  # auto | cpu | cuda

    def __post_init__(self):
        for name, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES),
                              ("loss", LOSSES), ("monitor", MONITORS)):
            if getattr(self, name) not in allowed:
                raise EdgeXrayError(f"{name}={getattr(self, name)!r}; allowed: {', '.join(allowed)}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise EdgeXrayError(f"epochs={self.epochs}, batch_size={self.batch_size}, lr={self.lr}; "
                                "all must be positive")
        if not 0 <= self.label_smoothing < 1 or self.mixup_alpha < 0:
            raise EdgeXrayError("label_smoothing must be in [0, 1) and mixup_alpha >= 0")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return config_from_dict(cls, d, "training option")


@dataclass
class TrainResult:
    model: nn.Module  # best weights loaded, eval mode
    history: list = field(default_factory=list)  # one dict per epoch
    best_epoch: int = 0
    best_score: float = float("nan")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise EdgeXrayError("device 'cuda' was asked for but no CUDA GPU is visible; use --device cpu")
    return torch.device(name)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al., 2017) with optional class weights and label smoothing."""

    def __init__(self, gamma: float, weight=None, label_smoothing: float = 0.0):
        super().__init__()
        self.gamma, self.weight, self.label_smoothing = gamma, weight, label_smoothing

    def forward(self, logits, target):
        ce = F.cross_entropy(logits, target, weight=self.weight, reduction="none",
                             label_smoothing=self.label_smoothing)
        p_t = torch.exp(-F.cross_entropy(logits, target, reduction="none"))
        return ((1 - p_t) ** self.gamma * ce).mean()


def make_loss(cfg: TrainConfig, class_weights=None) -> nn.Module:
    weight = torch.as_tensor(class_weights, dtype=torch.float32) if cfg.class_weighted \
        and class_weights is not None else None
    if cfg.loss == "focal":
        return FocalLoss(cfg.focal_gamma, weight, cfg.label_smoothing)
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(params, cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(optimizer, cfg: TrainConfig, steps_per_epoch: int):
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total, 1))
    if cfg.schedule == "cosine-restarts":
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            optimizer, T_0=max(cfg.restart_epochs * steps_per_epoch, 1), T_mult=2)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


@torch.no_grad()
def predict_logits(model: nn.Module, loader, device=None) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels for every batch of `loader` (eval mode, no augmentation)."""
    device = device or next(model.parameters()).device
    model.eval()
    logits, labels = [], []
    for x, y in loader:
        logits.append(model(x.to(device)).float().cpu())
        labels.append(y)
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


def validate(model, loader, loss_fn, class_names, device) -> dict:
    logits, labels = predict_logits(model, loader, device)
    loss = float(F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels).long()))
    probs = torch.softmax(torch.from_numpy(logits), 1).numpy()
    m = classification_metrics(labels, probs, class_names or [str(i) for i in range(probs.shape[1])])
    return {"val_loss": loss, "val_accuracy": m["accuracy"], "val_macro_f1": m["macro_f1"],
            "val_roc_auc": m["roc_auc"]}


def _mixup(x, y, alpha: float):
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(x.size(0), device=x.device)
    return lam * x + (1 - lam) * x[perm], y, y[perm], lam


def train_model(model: nn.Module, train_loader, val_loader, cfg: TrainConfig,
                class_weights=None, class_names=None, out_dir=None,
                progress: bool = True) -> TrainResult:
    """Train with early stopping on `cfg.monitor`; the best epoch's weights are returned.

    Per-epoch metrics go to out_dir/metrics.csv and TensorBoard (out_dir/tensorboard)."""
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    model.to(device)
    loss_fn = make_loss(cfg, class_weights).to(device)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, len(train_loader))
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    writer = _tensorboard(out_dir)
    lower_is_better = cfg.monitor == "val_loss"
    best = TrainResult(model=model)
    best_state, stale = None, 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        running, seen = 0.0, 0
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{cfg.epochs}", leave=False,
                   disable=not progress, unit="batch")
        for x, y in bar:
            x, y = x.to(device), y.to(device).long()
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, enabled=use_amp):
                if cfg.mixup_alpha > 0:
                    x, y_a, y_b, lam = _mixup(x, y, cfg.mixup_alpha)
                    out = model(x)
                    loss = lam * loss_fn(out, y_a) + (1 - lam) * loss_fn(out, y_b)
                else:
                    loss = loss_fn(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            running += loss.item() * len(y)
            seen += len(y)
            bar.set_postfix(loss=f"{running / seen:.4f}")
        row = {"epoch": epoch, "train_loss": running / max(seen, 1),
               "lr": optimizer.param_groups[0]["lr"],
               **validate(model, val_loader, loss_fn, class_names, device)}
        best.history.append(row)
        _log_epoch(row, out_dir, writer)
        score = row[cfg.monitor] if row[cfg.monitor] is not None else float("nan")
        improved = best_state is None or (score < best.best_score if lower_is_better
                                          else score > best.best_score)
        if improved:
            best.best_score, best.best_epoch, stale = score, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
        log.info("epoch %d: %s", epoch, ", ".join(f"{k}={v:.4g}" for k, v in row.items()
                                                   if isinstance(v, float)))
        if stale >= cfg.patience:
            log.info("early stop: %s did not improve for %d epochs", cfg.monitor, cfg.patience)
            break
    if writer:
        writer.close()
    model.load_state_dict(best_state)
    model.eval()
    return best


def _tensorboard(out_dir):
    if out_dir is None:
        return None
    import sys
    import types
    # TensorBoard imports all of TensorFlow (seconds, and a thread fight with torch) unless its
    # no-TF marker module exists; its own stub covers what the event writer needs.
    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional at run time
        return None
    return SummaryWriter(str(Path(out_dir) / "tensorboard"))


def _log_epoch(row: dict, out_dir, writer) -> None:
    if out_dir is None:
        return
    path = Path(out_dir) / "metrics.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)
    if writer:
        for k, v in row.items():
            if k != "epoch" and v is not None:
                writer.add_scalar(k, v, row["epoch"])


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "resnet18_cbam"  # any name from `edgexray.models.list_models()`
    size: int = 128  # input side in pixels; 128 keeps CPU training short, 224 for full quality
    channels: int = 1  # 1 = grayscale stem; 3 = gray repeated (for ImageNet backbones)
    width: float = 1.0  # channel multiplier (tests use 0.25)
    pretrained: bool = False  # ImageNet weights from torchvision (cache or download)
    weights: str | None = None  # local ImageNet state-dict file, for offline machines
    norm: str = "zscore"  # zscore (training-split statistics) | imagenet


@dataclass(frozen=True)
class TrainedModel:
    checkpoint: Path
    data: object  # edgexray.data.PreparedData
    result: TrainResult


def train_folder(data_dir, out_dir, model_cfg: ModelConfig = ModelConfig(),
                 train_cfg: TrainConfig = TrainConfig(), split_cfg=None, augment="default",
                 splits=None, strict: bool = False, force: bool = False,
                 progress: bool = True) -> TrainedModel:
    """The train stage: split and decode the folder, train, save out_dir/model.pt (+ splits.json,
    metrics.csv, TensorBoard logs). Returns the checkpoint path and the prepared data."""
    from edgexray.checkpoint import save_checkpoint
    from edgexray.data import (IMAGENET_GRAY_MEAN, IMAGENET_GRAY_STD, IMAGENET_MEAN, IMAGENET_STD,
                               AugmentConfig, SplitConfig, XrayDataset, class_weights, make_loader,
                               norm_stats, prepare)
    from edgexray.fsutil import cache_dir, refuse_existing
    from edgexray.models import create_model
    from edgexray.preprocess import Preprocess

    out_dir = Path(out_dir)
    refuse_existing(out_dir, force, "training output folder")
    if model_cfg.norm not in ("zscore", "imagenet"):
        raise EdgeXrayError(f"norm={model_cfg.norm!r}; allowed: zscore, imagenet")
    data = prepare(data_dir, model_cfg.size, split_cfg or SplitConfig(), out_dir=out_dir,
                   strict=strict, splits=splits, cache_dir=cache_dir("arrays"),
                   progress=progress, force=force)
    if len(data.labels["val"]) == 0:
        raise EdgeXrayError(f"the validation split of {str(data_dir)!r} is empty; add images or "
                            "raise the val fraction (e.g. --split 0.6,0.2,0.2)")
    if model_cfg.norm == "imagenet":
        mean, std = (IMAGENET_GRAY_MEAN, IMAGENET_GRAY_STD) if model_cfg.channels == 1 \
            else (IMAGENET_MEAN, IMAGENET_STD)
    else:
        m, s = norm_stats(data.arrays["train"])
        mean, std = (m,) * model_cfg.channels, (s,) * model_cfg.channels
    preprocess = Preprocess(size=model_cfg.size, channels=model_cfg.channels, mean=mean, std=std)
    n_classes = len(data.class_names)
    model = create_model(model_cfg.arch, num_classes=n_classes, in_chans=model_cfg.channels,
                         width=model_cfg.width, pretrained=model_cfg.pretrained,
                         weights=model_cfg.weights)
    augment = AugmentConfig() if augment == "default" else augment  # None: no augmentation
    train_set = XrayDataset(data.arrays["train"], data.labels["train"], preprocess, augment,
                            seed=train_cfg.seed)
    val_set = XrayDataset(data.arrays["val"], data.labels["val"], preprocess)
    train_loader = make_loader(train_set, train_cfg.batch_size, shuffle=True,
                               oversample=train_cfg.oversample, seed=train_cfg.seed)
    val_loader = make_loader(val_set, max(train_cfg.batch_size, 64), shuffle=False)
    result = train_model(model, train_loader, val_loader, train_cfg,
                         class_weights=class_weights(data.labels["train"], n_classes),
                         class_names=list(data.class_names), out_dir=out_dir, progress=progress)
    model_options = {"num_classes": n_classes, "in_chans": model_cfg.channels,
                     "width": model_cfg.width}
    ckpt = save_checkpoint(
        out_dir / "model.pt", result.model, arch=model_cfg.arch, model_options=model_options,
        class_names=data.class_names, preprocess=preprocess,
        train_config={"model": asdict(model_cfg), "train": train_cfg.to_dict(),
                      "augment": augment.to_dict() if augment else None,
                      "split": data.split_config.to_dict()},
        metrics={"monitor": train_cfg.monitor, **result.history[result.best_epoch - 1]},
        extra={"data_dir": str(Path(data_dir).resolve()),
               "splits_path": str(data.splits_path.resolve()) if data.splits_path else None,
               "history": result.history}, force=force)
    return TrainedModel(checkpoint=ckpt, data=data, result=result)
