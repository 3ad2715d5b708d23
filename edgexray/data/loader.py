"""Torch datasets and loaders over decoded arrays, normalized as `Preprocess.normalize` does."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from edgexray.data.augment import AugmentConfig, augment_image
from edgexray.runtime.errors import EdgeXrayError
from edgexray.runtime.preprocess import Preprocess

log = logging.getLogger(__name__)


class XrayDataset(Dataset):
    """(arrays (N, S, S) in [0, 1], labels) -> (float32 (C, S, S) normalized, int label).

    Without `augment` an item equals `preprocess.normalize(arrays[i].astype(float32))`.
    """

    def __init__(
        self,
        arrays: np.ndarray,
        labels: Sequence[int],
        preprocess: Preprocess,
        augment: AugmentConfig | None = None,
        seed: int = 0,
    ):
        if len(arrays) != len(labels):
            raise EdgeXrayError(f"{len(arrays)} images but {len(labels)} labels; they must match")
        if len(arrays) and tuple(arrays.shape[1:]) != (preprocess.size, preprocess.size):
            raise EdgeXrayError(
                f"images of shape {tuple(arrays.shape[1:])} but the preprocess "
                f"size is {preprocess.size}; load the arrays at that size"
            )
        self.arrays = arrays
        self.labels = np.asarray(labels, dtype=np.int64)
        self.preprocess = preprocess
        self.augment = augment
        self.seed = seed
        self._mean = torch.tensor(preprocess.mean, dtype=torch.float32)[:, None, None]
        self._std = torch.tensor(preprocess.std, dtype=torch.float32)[:, None, None]
        self._gen: tuple[int, torch.Generator] | None = None

    def __len__(self) -> int:
        return len(self.arrays)

    def _generator(self) -> torch.Generator:
        # One stream per process: DataLoader workers get distinct seeds, the main process `seed`.
        info = torch.utils.data.get_worker_info()
        key = -1 if info is None else info.id
        if self._gen is None or self._gen[0] != key:
            seed = self.seed if info is None else (self.seed * 1_000_003 + info.seed) % 2**63
            self._gen = (key, torch.Generator().manual_seed(seed))
        return self._gen[1]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = torch.from_numpy(np.asarray(self.arrays[i], dtype=np.float32))[None]
        if self.augment is not None:
            x = augment_image(x, self.augment, self._generator())
        if self.preprocess.intensity != "none":  # after augmentation, as on the device
            x = torch.from_numpy(self.preprocess.adjust_intensity(x.numpy()))
        x = x.expand(self.preprocess.channels, -1, -1)
        return ((x - self._mean) / self._std).contiguous(), int(self.labels[i])


def class_weights(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights n / (k * count) for a weighted loss; absent classes get 0."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    if (counts == 0).any():
        log.warning("class(es) %s have no training images", np.flatnonzero(counts == 0).tolist())
    w = np.where(counts > 0, counts.sum() / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def make_loader(
    dataset: XrayDataset,
    batch_size: int,
    shuffle: bool,
    oversample: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader; `oversample` draws with replacement by inverse class frequency.

    A training loader (`shuffle` or `oversample`) drops a last batch of one image: batch norm
    cannot train on a single value per channel."""
    if batch_size < 1:
        raise EdgeXrayError(f"batch size {batch_size}; must be >= 1, e.g. 32")
    if (shuffle or oversample) and len(dataset) > batch_size and len(dataset) % batch_size == 1:
        drop_last = True
    g = torch.Generator().manual_seed(seed)
    sampler = None
    if oversample:
        labels = np.asarray(dataset.labels)
        counts = np.bincount(labels)
        weights = 1.0 / counts[labels]
        sampler = WeightedRandomSampler(
            torch.as_tensor(weights, dtype=torch.double),
            num_samples=len(labels),
            replacement=True,
            generator=g,
        )
        shuffle = False
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        generator=g,
        num_workers=num_workers,
        drop_last=drop_last,
        persistent_workers=num_workers > 0,
    )
