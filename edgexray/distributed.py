"""Multi-process training under `torchrun` (PyTorch DistributedDataParallel).

`edgexray train` (and every caller of train.train_folder / train_model) notices torchrun's
environment (WORLD_SIZE > 1) and then: joins the process group (gloo on CPU, nccl on CUDA, one
GPU per local rank), reads the splits rank 0 made (so every rank trains on the same grouped
splits), shards the training split with a DistributedSampler (or, with --oversample, a
class-balanced sampler made distributed), shards validation without padding and gathers the
predictions so every rank computes the same metrics over the whole split, sums the training
loss over ranks, and leaves all file writing (splits.json, metrics, checkpoint) to rank 0.
Without torchrun nothing changes.

EDGEXRAY_DIST_DEBUG=DIR makes each rank write DIR/rank<R>.json with the training-split indices
it drew per epoch and the splits it used (the tests check that ranks are disjoint).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from edgexray.runtime.errors import EdgeXrayError

DEBUG_ENV = "EDGEXRAY_DIST_DEBUG"


@dataclass(frozen=True)
class DistContext:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    backend: str | None = None

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")


def context() -> DistContext:
    """The current process group (a single process when none was started)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistContext()
    backend = dist.get_backend()
    return DistContext(dist.get_world_size(), dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0)), backend)


def init(device: str = "auto") -> DistContext:
    """Join torchrun's process group once (no-op outside torchrun): nccl when CUDA is used,
    gloo otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistContext()
    if dist.is_initialized():
        return context()
    if not dist.is_available():
        raise EdgeXrayError("this PyTorch build has no torch.distributed; run without torchrun")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise EdgeXrayError("device 'cuda' was asked for but no CUDA GPU is visible; use --device cpu")
        if local_rank >= torch.cuda.device_count():
            raise EdgeXrayError(
                f"local rank {local_rank} has no GPU ({torch.cuda.device_count()} "
                "visible); start at most one process per GPU (--nproc-per-node)"
            )
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if use_cuda else "gloo")
    if dist.get_rank() != 0:  # one voice: rank 0 logs and warns, the others report errors only
        import logging

        logging.getLogger("edgexray").setLevel(logging.ERROR)
    return context()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast(ctx: DistContext, value):
    """Rank 0's `value` on every rank (any picklable object)."""
    if not ctx.active:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@contextlib.contextmanager
def text_file(text):
    """A temporary file holding `text` (None: yields None)."""
    if text is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="edgexray-rank-") as tmp:
        path = Path(tmp) / "splits.json"
        path.write_text(text, encoding="utf-8")
        yield path


def barrier(ctx: DistContext) -> None:
    if ctx.active:
        dist.barrier()


class DistributedWeightedSampler(Sampler):
    """WeightedRandomSampler (with replacement) made distributed: every rank draws the same
    epoch-seeded sequence and takes every world_size-th position from its rank on."""

    def __init__(self, weights, num_replicas: int, rank: int, seed: int = 0):
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        self.num_replicas, self.rank, self.seed, self.epoch = num_replicas, rank, seed, 0
        self.num_samples = math.ceil(len(self.weights) / num_replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        drawn = torch.multinomial(
            self.weights, self.num_samples * self.num_replicas, replacement=True, generator=g
        ).tolist()
        return iter(drawn[self.rank :: self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples


class ShardSampler(Sampler):
    """Indices rank, rank + world, ... in order, no padding (evaluation: gathered afterwards)."""

    def __init__(self, n: int, num_replicas: int, rank: int):
        self.indices = list(range(rank, n, num_replicas))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def loaders(ctx: DistContext, train_set, val_set, batch_size: int, oversample: bool, seed: int) -> tuple:
    """The distributed counterparts of data.make_loader for training and validation."""
    if oversample:
        import numpy as np

        labels = np.asarray(train_set.labels)
        weights = 1.0 / np.bincount(labels)[labels]
        sampler = DistributedWeightedSampler(weights, ctx.world_size, ctx.rank, seed)
    else:  # drop_last: equal, disjoint shards (at most world_size - 1 images wait an epoch)
        sampler = DistributedSampler(
            train_set, ctx.world_size, ctx.rank, shuffle=True, seed=seed, drop_last=True
        )
    per_rank = len(sampler)
    if per_rank < 2:
        raise EdgeXrayError(
            f"the train split ({len(train_set)} images) is too small for "
            f"{ctx.world_size} processes; use fewer (--nproc-per-node) or more images"
        )
    # batch norm cannot train on a last batch of one image (as in data.make_loader)
    drop_last = per_rank > batch_size and per_rank % batch_size == 1
    train_loader = DataLoader(train_set, batch_size=batch_size, sampler=sampler, drop_last=drop_last)
    val_loader = DataLoader(
        val_set, batch_size=max(batch_size, 64), sampler=ShardSampler(len(val_set), ctx.world_size, ctx.rank)
    )
    return train_loader, val_loader


def wrap(model: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """The module to train with: DDP around `model` (already on ctx.device()) when distributed."""
    if not ctx.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [ctx.local_rank] if ctx.backend == "nccl" else None
    return DistributedDataParallel(model, device_ids=ids)


def start_epoch(ctx: DistContext, loader, epoch: int) -> None:
    """Reshuffle the shards for this epoch; record the drawn indices when debugging."""
    sampler = getattr(loader, "sampler", None)
    if not ctx.active or not hasattr(sampler, "set_epoch"):
        return
    sampler.set_epoch(epoch)
    debug = os.environ.get(DEBUG_ENV)
    if debug:
        path = Path(debug) / f"rank{ctx.rank}.json"
        doc = (
            json.loads(path.read_text())
            if path.exists()
            else {"rank": ctx.rank, "world_size": ctx.world_size}
        )
        doc.setdefault("train_indices", {})[str(epoch)] = list(iter(sampler))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc))


def record_splits(ctx: DistContext, splits: dict) -> None:
    debug = os.environ.get(DEBUG_ENV)
    if ctx.active and debug:
        path = Path(debug) / f"rank{ctx.rank}.json"
        doc = (
            json.loads(path.read_text())
            if path.exists()
            else {"rank": ctx.rank, "world_size": ctx.world_size}
        )
        doc["splits"] = {k: list(v) for k, v in splits.items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc))


def sum_over_ranks(ctx: DistContext, *values: float) -> tuple:
    if not ctx.active:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device())
    dist.all_reduce(t)
    return tuple(t.tolist())


def sync_buffers(ctx: DistContext, model: torch.nn.Module) -> None:
    """Rank 0's batch-norm statistics everywhere, so every rank evaluates the same model."""
    if ctx.active:
        for buf in model.buffers():
            dist.broadcast(buf, src=0)


def gather_predictions(ctx: DistContext, predict, loader) -> tuple:
    """(logits, labels) of the whole split: each rank predicts its shard (ShardSampler) with
    `predict(loader)`, the shards are gathered and put back in dataset order."""
    import numpy as np

    mine = predict(loader) if len(loader.sampler) else None  # a rank may get no image
    parts = [None] * ctx.world_size
    dist.all_gather_object(parts, (list(loader.sampler), mine))
    parts = [(idx, *rows) for idx, rows in parts if rows is not None]
    order = np.concatenate([np.asarray(p[0], dtype=np.int64) for p in parts])
    all_logits = np.concatenate([p[1] for p in parts])
    all_labels = np.concatenate([p[2] for p in parts])
    inv = np.argsort(order, kind="stable")
    return all_logits[inv], all_labels[inv]
