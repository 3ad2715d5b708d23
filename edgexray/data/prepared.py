"""Everything at once: scan a folder, split it (leakage guard included), decode every image."""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgexray import leakage as leak_guard
from edgexray.data.arrays import decode_all, load_arrays
from edgexray.data.scan import ImageFolderIndex, scan_image_folder
from edgexray.data.splits import SPLIT_NAMES, SplitConfig, grouping_of, make_splits, read_splits, write_splits
from edgexray.runtime.errors import EdgeXrayError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedData:
    """An indexed folder, its splits, and decoded arrays + labels per split."""

    index: ImageFolderIndex
    splits: dict  # {"train": [relpath, ...], "val": [...], "test": [...]}
    split_config: SplitConfig
    arrays: dict = field(repr=False)  # {split: float16 (N, S, S) in [0, 1]}
    labels: dict = field(repr=False)  # {split: int64 (N,)}
    size: int = 224
    splits_path: Path | None = None
    grouping: dict | None = None  # Grouping.summary(): key, source, group counts
    leakage: dict | None = None  # leakage.folder_report of the whole folder

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.index.class_names


def prepare(
    data_dir: str | os.PathLike,
    size: int,
    split_cfg: SplitConfig = SplitConfig(),
    out_dir: str | os.PathLike | None = None,
    strict: bool = False,
    splits: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    force: bool = False,
) -> PreparedData:
    """Scan `data_dir`, split it (or reuse the `splits` json), decode every image once.

    Images that fail to decode are skipped with a warning naming them (an error when
    `strict`); new splits are made after decoding, so they only hold readable images. With
    `out_dir`, the splits are written to `out_dir/splits.json`.
    """
    index = scan_image_folder(data_dir, strict=strict)
    root = Path(data_dir)
    if splits is not None:
        stored = read_splits(splits)
        if stored.class_names != index.class_names:
            raise EdgeXrayError(
                f"splits file {str(splits)!r} has classes {list(stored.class_names)} "
                f"but {str(root)!r} has {list(index.class_names)}; use the data "
                "folder the splits were made from, or make new splits"
            )
        chosen, split_cfg = stored.splits, stored.config
        arrays = {s: load_arrays(root, chosen[s], size, progress, cache_dir) for s in SPLIT_NAMES}
        grouping = stored.grouping
        relpaths = [rel for s in SPLIT_NAMES for rel in chosen[s]]
        leak = _leakage_report(
            index, relpaths, np.concatenate([arrays[s] for s in SPLIT_NAMES]), chosen, moved=False
        )
    else:
        relpaths = [rel for rel, _ in index.items]
        all_arrays, failed = decode_all(root, relpaths, size, progress, strict, cache_dir)
        if failed:
            bad = {rel for rel, _ in failed}
            index = dataclasses.replace(
                index,
                items=tuple(it for it in index.items if it[0] not in bad),
                skipped=index.skipped + tuple(failed),
            )
            relpaths = [rel for rel in relpaths if rel not in bad]
        row = {rel: i for i, rel in enumerate(relpaths)}
        found = grouping_of(index, split_cfg)
        grouping = found.summary()
        if found.keys is not None:
            log.warning(
                "splitting by patient: %s groups of images (key %r, %s); pass "
                "--no-group to split images independently",
                grouping["groups"],
                found.key,
                found.source,
            )
        exact, near = leak_guard.duplicate_clusters(all_arrays)
        # a cluster larger than half the smallest split is no copy but a folder of look-alikes
        # (e.g. uniform test patterns): kept together, it would distort or empty a split
        limit = 0.5 * min(f for f in split_cfg.fractions().values() if f > 0) * len(relpaths)
        too_big = [c for c in near if len(c) > limit]
        if too_big:
            log.warning(
                "leakage guard: %d near-duplicate cluster(s) of up to %d images are too "
                "large to keep in one split (limit: half the smallest split, %d); split "
                "as usual",
                len(too_big),
                max(map(len, too_big)),
                limit,
            )
        chosen = make_splits(
            index,
            split_cfg,
            grouping=found,
            links=[[relpaths[i] for i in c] for c in near if c not in too_big],
        )
        arrays = {s: all_arrays[[row[rel] for rel in chosen[s]]] for s in SPLIT_NAMES}
        leak = _leakage_report(index, relpaths, all_arrays, chosen, moved=True, found=(exact, near))
    labels = {s: index.labels_of(chosen[s]) for s in SPLIT_NAMES}
    splits_path = Path(splits) if splits is not None else None
    if out_dir is not None:
        target = Path(out_dir) / "splits.json"
        if splits_path is None or target.resolve() != splits_path.resolve():
            splits_path = write_splits(
                target, chosen, index, split_cfg, force=force, grouping=grouping, leakage=leak
            )
    counts = {s: len(chosen[s]) for s in SPLIT_NAMES}
    log.info(
        "%s: %d classes %s, images per split %s, %d skipped",
        root,
        len(index.class_names),
        list(index.class_names),
        counts,
        len(index.skipped),
    )
    return PreparedData(
        index=index,
        splits=chosen,
        split_config=split_cfg,
        arrays=arrays,
        labels=labels,
        size=int(size),
        splits_path=splits_path,
        grouping=grouping,
        leakage=leak,
    )


def _leakage_report(
    index: ImageFolderIndex, relpaths: list[str], arrays: np.ndarray, splits: dict, moved: bool, found=None
) -> dict:
    """Run the leakage guard (unless `found` = its clusters) and say what it found on stderr."""
    exact, near = found or leak_guard.duplicate_clusters(arrays)
    split_of = {rel: s for s in SPLIT_NAMES for rel in splits[s]}
    report = leak_guard.folder_report(
        relpaths, index.labels_of(relpaths), index.class_names, exact, near, split_of
    )
    report["near_duplicates_kept_in_one_split"] = moved
    if near:
        log.warning(
            "leakage guard: %d exact and %d near-duplicate cluster(s) (%d images)%s",
            len(exact),
            len(near),
            report["images_in_near_clusters"],
            "; each kept in one split" if moved else "",
        )
    if report["conflicting_labels"]:
        log.warning(
            "leakage guard: %d duplicate cluster(s) carry different labels, e.g. %s",
            report["conflicting_labels"],
            report["conflicting_label_clusters"][0]["images"],
        )
    if report["across_splits"]:
        log.warning(
            "leakage guard: %d duplicate cluster(s) span splits, e.g. %s",
            report["across_splits"],
            report["across_split_clusters"][0]["images"],
        )
    return report
