"""Calibration images: one protocol shared by every INT8 backend (ONNX Runtime, TFLite).

A `CalibrationSet` holds a stratified sample of real training images, decoded and resized
once, plus the model's own `Preprocess`; each backend asks for the layout it needs:
`.arrays()` (NCHW, normalized), `.nhwc()` (NHWC, normalized), `.unit_nhwc()` (NHWC in [0, 1],
what onnx2tf's `-cind` expects together with mean/std) or `.reader()` (an ONNX Runtime
`CalibrationDataReader`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgexray.runtime.errors import EdgeXrayError
from edgexray.runtime.preprocess import Preprocess

log = logging.getLogger(__name__)

DEFAULT_COUNT = 200  # images; enough for stable min/max and histogram calibration
WARN_BELOW = 100  # fewer images than this give noticeably less stable INT8 ranges


def stratified_sample(labels: Sequence[int], count: int, seed: int = 0) -> np.ndarray:
    """Indices of `count` items with the class proportions of `labels` (>= 1 per class)."""
    labels = np.asarray(labels)
    classes, sizes = np.unique(labels, return_counts=True)
    share = sizes / sizes.sum() * count
    take = np.maximum(np.floor(share).astype(int), 1)
    take = np.minimum(take, sizes)
    for i in np.argsort(-(share - np.floor(share))):  # largest remainder first
        if take.sum() >= count:
            break
        if take[i] < sizes[i]:
            take[i] += 1
    while take.sum() < count:  # a small class ran out: fill from the others
        i = int(np.argmax(sizes - take))
        take[i] += 1
    while take.sum() > count:  # more classes than `count`
        take[int(np.argmax(take))] -= 1
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(labels == c), size=k, replace=False) for c, k in zip(classes, take)]
    return np.sort(np.concatenate(picked))


@dataclass(frozen=True)
class CalibrationSet:
    """Decoded images (float32 N x S x S in [0, 1]) and the preprocessing the model expects."""

    gray: np.ndarray = field(repr=False)
    preprocess: Preprocess
    labels: np.ndarray = field(repr=False, default=None)  # int class indices, when known
    class_names: tuple = ()
    paths: tuple = ()  # relative to `root`, when read from a folder
    root: str = ""

    def __post_init__(self):
        gray = np.asarray(self.gray, np.float32)
        size = self.preprocess.size
        if gray.ndim != 3 or gray.shape[1:] != (size, size):
            raise EdgeXrayError(
                f"calibration images of shape {gray.shape}; expected "
                f"(N, {size}, {size}) to match the model's input size"
            )
        if len(gray) == 0:
            raise EdgeXrayError(
                f"calibration set is empty; give at least one image (recommended: {DEFAULT_COUNT})"
            )
        object.__setattr__(self, "gray", gray)

    @classmethod
    def from_folder(
        cls, root, preprocess: Preprocess, count: int = DEFAULT_COUNT, seed: int = 0, progress: bool = True
    ) -> CalibrationSet:
        """A stratified sample of `count` images from an image folder (one sub-folder per class);
        all of them, with a warning, when the folder holds fewer."""
        from edgexray.data import load_arrays, scan_image_folder

        count = int(count)
        if count < 1:
            raise EdgeXrayError(f"calibration count {count}; must be >= 1 (default {DEFAULT_COUNT})")
        index = _scan(root, scan_image_folder)
        labels = np.asarray([label for _, label in index.items])
        if len(labels) < count:
            log.warning(
                "calibration folder %r has %d images (%s), fewer than the %d asked for: "
                "calibrating on all %d",
                str(root),
                len(labels),
                index.counts(),
                count,
                len(labels),
            )
            count = len(labels)
        if count < WARN_BELOW:
            log.warning(
                "calibrating INT8 on only %d images; fewer than %d give less stable "
                "quantization ranges (default %d)",
                count,
                WARN_BELOW,
                DEFAULT_COUNT,
            )
        picked = stratified_sample(labels, count, seed)
        paths = tuple(index.items[i][0] for i in picked)
        gray = load_arrays(root, paths, preprocess.size, progress=progress)
        return cls(
            gray=gray,
            preprocess=preprocess,
            labels=labels[picked],
            class_names=index.class_names,
            paths=paths,
            root=str(Path(root)),
        )

    def __len__(self) -> int:
        return len(self.gray)

    def arrays(self) -> np.ndarray:
        """float32 (N, C, S, S), normalized exactly as the model was trained."""
        return self.preprocess.normalize(self.gray)

    def nhwc(self) -> np.ndarray:
        """float32 (N, S, S, C), normalized: what a converted TFLite float model takes."""
        return np.ascontiguousarray(self.arrays().transpose(0, 2, 3, 1))

    def unit_nhwc(self) -> np.ndarray:
        """float32 (N, S, S, C) in [0, 1] (after the per-image intensity step, if any), before
        the mean/std normalization (onnx2tf -cind data)."""
        gray = self.preprocess.adjust_intensity(self.gray)
        return np.ascontiguousarray(np.repeat(gray[..., None], self.preprocess.channels, -1))

    def mean_std_nhwc(self) -> tuple[np.ndarray, np.ndarray]:
        """(1, 1, 1, C) mean and std, broadcastable over `unit_nhwc()`."""
        shape = (1, 1, 1, self.preprocess.channels)
        return (
            np.asarray(self.preprocess.mean, np.float32).reshape(shape),
            np.asarray(self.preprocess.std, np.float32).reshape(shape),
        )

    def reader(self, input_name: str = "input", batch_size: int = 1):
        """An ONNX Runtime `CalibrationDataReader` over `arrays()`."""
        from onnxruntime.quantization import CalibrationDataReader

        data = self.arrays()

        class _Reader(CalibrationDataReader):
            def __init__(self):
                self._i = 0

            def get_next(self):
                if self._i >= len(data):
                    return None
                batch = data[self._i : self._i + batch_size]
                self._i += batch_size
                return {input_name: batch}

            def rewind(self):
                self._i = 0

        return _Reader()


def _scan(root, scan_image_folder):
    root = Path(root)
    if root.is_dir() and not any(p for p in root.rglob("*") if p.is_file()):
        raise EdgeXrayError(
            f"calibration folder {str(root)!r} is empty; point --calib at the "
            "training images (one sub-folder per class)"
        )
    return scan_image_folder(root)


def records_data(ckpt) -> bool:
    """Whether the checkpoint records a data folder that still exists."""
    return bool(ckpt.extra.get("data_dir")) and Path(ckpt.extra["data_dir"]).is_dir()


def recorded_data(ckpt, need: str):
    """The checkpoint's data folder and splits.json, decoded (as `evaluate` uses them)."""
    from edgexray.evaluate import held_out_data

    if not records_data(ckpt):
        recorded = ckpt.extra.get("data_dir")
        why = (
            f"its data folder {recorded!r} no longer exists"
            if recorded
            else "it does not record its data folder"
        )
        raise EdgeXrayError(f"{need}; the checkpoint cannot supply images: {why}")
    log.info("using the checkpoint's data folder %s and its splits", ckpt.extra["data_dir"])
    return held_out_data(ckpt)


def train_calibration(data, preprocess: Preprocess, count: int, seed: int = 0) -> CalibrationSet:
    """`count` images of the train split of prepared `data` (edgexray.data), stratified by class
    (all of them, with a warning, when fewer): what `edgexray export` and `build` calibrate on."""
    labels = data.labels["train"]
    if len(labels) == 0:
        raise EdgeXrayError("the train split of the checkpoint's data is empty; pass --calib DIR")
    if len(labels) < count:
        log.warning(
            "the train split has %d images, fewer than the %d asked for with "
            "--calib-count: calibrating on all %d",
            len(labels),
            count,
            len(labels),
        )
    idx = stratified_sample(labels, min(count, len(labels)), seed=seed)
    return CalibrationSet(
        gray=data.arrays["train"][idx].astype(np.float32),
        preprocess=preprocess,
        labels=labels[idx],
        class_names=tuple(data.class_names),
        root=str(data.index.root),
    )
