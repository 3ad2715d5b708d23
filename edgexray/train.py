"""The training loop, shared by `edgexray train` and by fine-tuning after pruning."""

from __future__ import annotations

import copy
import csv
import logging
import math
import random
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from edgexray import distributed
from edgexray.cliparams import MAX_SIZE, MIN_SIZE
from edgexray.config import config_from_dict
from edgexray.data.augment import mixup_batch
from edgexray.runtime.errors import EdgeXrayError
from edgexray.runtime.metrics import classification_metrics

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
    recipe: str = "default"  # the edgexray.recipes entry these settings came from (a record)

    def __post_init__(self):
        for name, allowed in (
            ("optimizer", OPTIMIZERS),
            ("schedule", SCHEDULES),
            ("loss", LOSSES),
            ("monitor", MONITORS),
        ):
            if getattr(self, name) not in allowed:
                raise EdgeXrayError(f"{name}={getattr(self, name)!r}; allowed: {', '.join(allowed)}")
        if self.epochs < 1 or self.batch_size < 1 or not (math.isfinite(self.lr) and self.lr > 0):
            raise EdgeXrayError(
                f"epochs={self.epochs}, batch_size={self.batch_size}, lr={self.lr}; "
                "all must be positive and finite, e.g. --lr 0.001"
            )
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise EdgeXrayError(f"seed={self.seed!r}; must be an integer from 0 to {2**32 - 1}")
        if not 0 <= self.label_smoothing < 1 or not 0 <= self.mixup_alpha < math.inf:
            raise EdgeXrayError("label_smoothing must be in [0, 1) and mixup_alpha >= 0")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
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
        ce = F.cross_entropy(
            logits, target, weight=self.weight, reduction="none", label_smoothing=self.label_smoothing
        )
        p_t = torch.exp(-F.cross_entropy(logits, target, reduction="none"))
        return ((1 - p_t) ** self.gamma * ce).mean()


def make_loss(cfg: TrainConfig, class_weights=None) -> nn.Module:
    weight = (
        torch.as_tensor(class_weights, dtype=torch.float32)
        if cfg.class_weighted and class_weights is not None
        else None
    )
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
            optimizer, T_0=max(cfg.restart_epochs * steps_per_epoch, 1), T_mult=2
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


@torch.no_grad()
def loader_logits(model: nn.Module, loader, device=None) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels for every batch of `loader` (eval mode, no augmentation)."""
    device = device or next(model.parameters()).device
    model.eval()
    logits, labels = [], []
    for x, y in loader:
        logits.append(model(x.to(device)).float().cpu())
        labels.append(y)
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


def validate(model, loader, loss_fn, class_names, device) -> dict:
    ctx = distributed.context()
    if ctx.active and isinstance(loader.sampler, distributed.ShardSampler):
        # every rank gets the metrics of the whole split
        logits, labels = distributed.gather_predictions(
            ctx, lambda shard: loader_logits(model, shard, device), loader
        )
    else:
        logits, labels = loader_logits(model, loader, device)
    loss = float(F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels).long()))
    probs = torch.softmax(torch.from_numpy(logits), 1).numpy()
    m = classification_metrics(labels, probs, class_names or [str(i) for i in range(probs.shape[1])])
    return {
        "val_loss": loss,
        "val_accuracy": m["accuracy"],
        "val_macro_f1": m["macro_f1"],
        "val_roc_auc": m["roc_auc"],
    }


def train_model(
    model: nn.Module,
    train_loader,
    val_loader,
    cfg: TrainConfig,
    class_weights=None,
    class_names=None,
    out_dir=None,
    progress: bool = True,
) -> TrainResult:
    """Train with early stopping on `cfg.monitor`; the best epoch's weights are returned.

    Per-epoch metrics go to out_dir/metrics.csv and TensorBoard (out_dir/tensorboard).
    Under torchrun (edgexray.distributed) the model trains wrapped in DDP; pass out_dir on rank 0
    only."""
    seed_everything(cfg.seed)
    ctx = distributed.context()
    device = ctx.device() if ctx.active else resolve_device(cfg.device)
    model.to(device)
    net = distributed.wrap(model, ctx)  # the module the training steps run through
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
        net.train()
        distributed.start_epoch(ctx, train_loader, epoch)
        running, seen = 0.0, 0
        bar = tqdm(
            train_loader,
            desc=f"epoch {epoch}/{cfg.epochs}",
            leave=False,
            disable=not progress or not ctx.is_main,
            unit="batch",
        )
        for x, y in bar:
            x, y = x.to(device), y.to(device).long()
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, enabled=use_amp):
                if cfg.mixup_alpha > 0:
                    x, partner, lam = mixup_batch(x, cfg.mixup_alpha)
                    out = net(x)
                    loss = lam * loss_fn(out, y) + (1 - lam) * loss_fn(out, y[partner])
                else:
                    loss = loss_fn(net(x), y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            running += loss.item() * len(y)
            seen += len(y)
            bar.set_postfix(loss=f"{running / seen:.4f}")
        running, seen = distributed.sum_over_ranks(ctx, running, seen)
        distributed.sync_buffers(ctx, model)
        row = {
            "epoch": epoch,
            "train_loss": running / max(seen, 1),
            "lr": optimizer.param_groups[0]["lr"],
            **validate(model, val_loader, loss_fn, class_names, device),
        }
        best.history.append(row)
        _log_epoch(row, out_dir, writer)
        score = row[cfg.monitor] if row[cfg.monitor] is not None else float("nan")
        improved = best_state is None or (
            score < best.best_score if lower_is_better else score > best.best_score
        )
        if improved:
            best.best_score, best.best_epoch, stale = score, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
        log.info(
            "epoch %d: %s", epoch, ", ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float))
        )
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
    intensity: str = "none"  # per-image step before norm: none | standardize | equalize (Preprocess)

    def __post_init__(self):
        if not isinstance(self.size, int) or not MIN_SIZE <= self.size <= MAX_SIZE:
            raise EdgeXrayError(
                f"size={self.size!r}; allowed: an integer from {MIN_SIZE} to "
                f"{MAX_SIZE} pixels, e.g. 128 (224 for full quality)"
            )
        if self.channels not in (1, 3):
            raise EdgeXrayError(f"channels={self.channels!r}; allowed: 1 or 3")
        if not (isinstance(self.width, (int, float)) and math.isfinite(self.width) and 0 < self.width <= 4):
            raise EdgeXrayError(
                f"width={self.width!r}; allowed: 0 < width <= 4, e.g. 1.0 (0.25 for a quick test)"
            )
        if self.norm not in ("zscore", "imagenet"):
            raise EdgeXrayError(f"norm={self.norm!r}; allowed: zscore, imagenet")
        from edgexray.runtime.preprocess import INTENSITIES

        if self.intensity not in INTENSITIES:
            raise EdgeXrayError(
                f"intensity={self.intensity!r}; allowed: {', '.join(INTENSITIES)} "
                "(per-image, before the mean/std normalization)"
            )
        if (self.pretrained or self.weights) and self.width != 1.0:
            raise EdgeXrayError(
                f"ImageNet weights need width 1.0, got width {self.width}; "
                "drop --width or --pretrained/--weights"
            )


def check_model_config(cfg: ModelConfig) -> None:
    """Fail before any image is read: the architecture must accept the input size (tried on
    the meta device: shapes only, no compute), and ImageNet weights must load."""
    from edgexray.models import create_model

    def fits(size: int) -> bool:
        with torch.device("meta"), torch.no_grad():
            model = create_model(cfg.arch, num_classes=2, in_chans=cfg.channels, width=cfg.width)
            try:
                model.eval()(torch.zeros(1, cfg.channels, size, size))
            except RuntimeError as e:
                if "too small" not in str(e):
                    raise
                return False
        return True

    if not fits(cfg.size):
        smallest = next((s for s in range(cfg.size + 8 - cfg.size % 8, MAX_SIZE + 1, 8) if fits(s)), None)
        raise EdgeXrayError(
            f"input size {cfg.size} px is too small for {cfg.arch}: its feature "
            f"maps shrink to nothing; use --size {smallest or 224} or more"
        )
    if cfg.pretrained or cfg.weights:
        create_model(
            cfg.arch,
            num_classes=2,
            in_chans=cfg.channels,
            width=cfg.width,
            pretrained=cfg.pretrained,
            weights=cfg.weights,
        )


def _intensity_adjusted(arrays: np.ndarray, intensity: str) -> np.ndarray:
    """The training arrays after the per-image intensity step (float16, as load_arrays keeps
    them), so that the z-score statistics describe what the model sees."""
    if intensity == "none" or len(arrays) == 0:
        return arrays
    from edgexray.runtime.preprocess import Preprocess

    adjust = Preprocess(size=arrays.shape[-1], intensity=intensity).adjust_intensity
    chunks = np.array_split(np.asarray(arrays), max(1, len(arrays) // 256))
    return np.concatenate([adjust(c).astype(np.float16) for c in chunks])


@dataclass(frozen=True)
class TrainedModel:
    checkpoint: Path
    data: object  # edgexray.data.PreparedData
    result: TrainResult


def recorded_splits_path(splits_path, out_dir, final_dir=None) -> str | None:
    """The splits file as a checkpoint records it: absolute, and under `final_dir` when it sits
    in `out_dir` and the caller moves out_dir there afterwards."""
    if splits_path is None:
        return None
    if final_dir is not None and Path(splits_path).parent == Path(out_dir):
        splits_path = Path(final_dir) / Path(splits_path).name
    return str(Path(splits_path).resolve())


def train_folder(
    data_dir,
    out_dir,
    model_cfg: ModelConfig = ModelConfig(),
    train_cfg: TrainConfig = TrainConfig(),
    split_cfg=None,
    augment="default",
    splits=None,
    strict: bool = False,
    force: bool = False,
    progress: bool = True,
    final_dir=None,
) -> TrainedModel:
    """The train stage: split and decode the folder, train, save out_dir/model.pt (+ splits.json,
    metrics.csv, TensorBoard logs). Returns the checkpoint path and the prepared data.
    `final_dir`: where the caller moves out_dir afterwards (compare-archs trains inside its own
    staged folder); the checkpoint records its splits.json there, so `evaluate` finds it.

    Under torchrun every rank trains (edgexray.distributed) on the splits rank 0 made; only
    rank 0 writes files."""
    import contextlib

    from edgexray.checkpoint import save_checkpoint
    from edgexray.data import (
        IMAGENET_GRAY_MEAN,
        IMAGENET_GRAY_STD,
        IMAGENET_MEAN,
        IMAGENET_STD,
        AugmentConfig,
        SplitConfig,
        XrayDataset,
        class_weights,
        make_loader,
        norm_stats,
        prepare,
    )
    from edgexray.fsutil import cache_dir, refuse_existing, staged_dir
    from edgexray.models import create_model
    from edgexray.runtime.preprocess import Preprocess

    out_dir = Path(out_dir)
    ctx = distributed.init(train_cfg.device)
    if ctx.is_main:
        refuse_existing(out_dir, force, "training output folder", folder=True)
    check_model_config(model_cfg)  # before any image is read
    with (
        staged_dir(out_dir, force, "training output folder", merge=True)
        if ctx.is_main
        else contextlib.nullcontext(None)
    ) as work:
        data = None
        if ctx.is_main:
            data = prepare(
                data_dir,
                model_cfg.size,
                split_cfg or SplitConfig(),
                out_dir=work,
                strict=strict,
                splits=splits,
                cache_dir=cache_dir("arrays"),
                progress=progress,
                force=force,
            )
        # the other ranks (on other nodes too) train on rank 0's splits, sent as splits.json text
        made = distributed.broadcast(
            ctx, data.splits_path.read_text(encoding="utf-8") if data and data.splits_path else None
        )
        if data is None:
            with distributed.text_file(made) as rank0_splits:
                data = prepare(
                    data_dir,
                    model_cfg.size,
                    split_cfg or SplitConfig(),
                    strict=strict,
                    splits=rank0_splits or splits,
                    cache_dir=cache_dir("arrays"),
                    progress=False,
                )
        distributed.record_splits(ctx, data.splits)
        if data.splits_path is not None and work is not None and data.splits_path.parent == work:
            data = replace(data, splits_path=out_dir / data.splits_path.name)
        if len(data.labels["train"]) < 2 or len(data.labels["val"]) == 0:
            raise EdgeXrayError(
                f"the train or validation split of {str(data_dir)!r} is too small "
                f"({len(data.labels['train'])} and {len(data.labels['val'])} "
                "images; at least 2 and 1 are needed); add images or change the "
                "fractions (e.g. --split 0.6,0.2,0.2)"
            )
        if model_cfg.norm == "imagenet":
            mean, std = (
                (IMAGENET_GRAY_MEAN, IMAGENET_GRAY_STD)
                if model_cfg.channels == 1
                else (IMAGENET_MEAN, IMAGENET_STD)
            )
        else:
            m, s = norm_stats(_intensity_adjusted(data.arrays["train"], model_cfg.intensity))
            mean, std = (m,) * model_cfg.channels, (s,) * model_cfg.channels
        preprocess = Preprocess(
            size=model_cfg.size,
            channels=model_cfg.channels,
            mean=mean,
            std=std,
            intensity=model_cfg.intensity,
        )
        n_classes = len(data.class_names)
        model = create_model(
            model_cfg.arch,
            num_classes=n_classes,
            in_chans=model_cfg.channels,
            width=model_cfg.width,
            pretrained=model_cfg.pretrained,
            weights=model_cfg.weights,
        )
        augment = AugmentConfig() if augment == "default" else augment  # None: no augmentation
        train_set = XrayDataset(
            data.arrays["train"], data.labels["train"], preprocess, augment, seed=train_cfg.seed
        )
        val_set = XrayDataset(data.arrays["val"], data.labels["val"], preprocess)
        if ctx.active:
            train_loader, val_loader = distributed.loaders(
                ctx, train_set, val_set, train_cfg.batch_size, train_cfg.oversample, train_cfg.seed
            )
        else:
            train_loader = make_loader(
                train_set,
                train_cfg.batch_size,
                shuffle=True,
                oversample=train_cfg.oversample,
                seed=train_cfg.seed,
            )
            val_loader = make_loader(val_set, max(train_cfg.batch_size, 64), shuffle=False)
        result = train_model(
            model,
            train_loader,
            val_loader,
            train_cfg,
            class_weights=class_weights(data.labels["train"], n_classes),
            class_names=list(data.class_names),
            out_dir=work,
            progress=progress,
        )
        if not ctx.is_main:  # rank 0 writes the checkpoint (the same weights on every rank)
            return TrainedModel(checkpoint=out_dir / "model.pt", data=data, result=result)
        model_options = {"num_classes": n_classes, "in_chans": model_cfg.channels, "width": model_cfg.width}
        save_checkpoint(
            work / "model.pt",
            result.model,
            arch=model_cfg.arch,
            model_options=model_options,
            class_names=data.class_names,
            preprocess=preprocess,
            train_config={
                "model": asdict(model_cfg),
                "train": train_cfg.to_dict(),
                "augment": augment.to_dict() if augment else None,
                "split": data.split_config.to_dict(),
            },
            metrics={"monitor": train_cfg.monitor, **result.history[result.best_epoch - 1]},
            extra={
                "data_dir": str(Path(data_dir).resolve()),
                "splits_path": recorded_splits_path(data.splits_path, out_dir, final_dir),
                "history": result.history,
            },
            force=force,
        )
    return TrainedModel(checkpoint=out_dir / "model.pt", data=data, result=result)
