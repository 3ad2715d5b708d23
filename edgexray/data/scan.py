"""Scanning an image folder: `root/<class>/**/<image>` (torchvision ImageFolder layout)."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgexray.imageio import IMAGE_SUFFIXES, ImageReadError, probe
from edgexray.runtime.errors import EdgeXrayError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageFolderIndex:
    """What `scan_image_folder` found: classes are the sorted sub-folder names of `root`."""

    root: Path
    class_names: tuple[str, ...]
    items: tuple[tuple[str, int], ...]  # (path relative to root, with '/', class index)
    skipped: tuple[tuple[str, str], ...] = ()  # (relative path, reason)

    @functools.cached_property
    def _labels(self) -> dict[str, int]:
        return dict(self.items)

    def labels_of(self, relpaths: Sequence[str]) -> np.ndarray:
        """int64 class indices of `relpaths` (which must be in this index)."""
        try:
            return np.asarray([self._labels[p] for p in relpaths], dtype=np.int64)
        except KeyError as e:
            raise EdgeXrayError(
                f"image {e.args[0]!r} is not among the {len(self.items)} images "
                f"found in {str(self.root)!r}; was the folder changed since the "
                "splits were written? Re-create the splits"
            ) from None

    def counts(self) -> dict[str, int]:
        n = np.bincount([label for _, label in self.items], minlength=len(self.class_names))
        return {c: int(k) for c, k in zip(self.class_names, n)}


def scan_image_folder(root: str | os.PathLike, strict: bool = False) -> ImageFolderIndex:
    """Index `root/<class>/**/<image>`.

    Files with other suffixes are ignored (one warning). Files that fail a header check are
    skipped with a warning naming them, or raise `ImageReadError` when `strict`; damage deeper
    in the pixel data is caught when the images are decoded (`load_arrays`, `prepare`).
    """
    root = Path(root)
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise EdgeXrayError(
            f"image folder {str(root)!r} {what}; expected a folder with one "
            "sub-folder per class, e.g. data/normal/*.png and data/abnormal/*.png"
        )
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_dirs) < 2:
        found = ", ".join(repr(p.name) for p in class_dirs) or "none"
        raise EdgeXrayError(
            f"image folder {str(root)!r} has {len(class_dirs)} class sub-folder(s) "
            f"({found}); at least 2 are needed, one per class, e.g. "
            f"{root}/normal/ and {root}/abnormal/"
        )
    items, skipped, ignored = [], [], []
    for label, class_dir in enumerate(class_dirs):
        n_class = 0
        for path in sorted(class_dir.rglob("*")):
            rel = path.relative_to(root).as_posix()
            if not path.is_file() or any(part.startswith(".") for part in path.relative_to(root).parts):
                continue
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                ignored.append(rel)
                continue
            try:
                probe(path)
            except ImageReadError as e:
                if strict:
                    raise
                log.warning("skipping %s", e)
                skipped.append((rel, str(e)))
                continue
            items.append((rel, label))
            n_class += 1
        if n_class == 0:
            raise EdgeXrayError(
                f"class folder {str(class_dir)!r} has no readable images "
                f"(allowed suffixes: {', '.join(IMAGE_SUFFIXES)}); add images or "
                "remove the folder"
            )
    if ignored:
        log.warning(
            "ignored %d non-image file(s) in %s, e.g. %s (allowed suffixes: %s)",
            len(ignored),
            root,
            ", ".join(ignored[:3]),
            ", ".join(IMAGE_SUFFIXES),
        )
    return ImageFolderIndex(
        root=root, class_names=tuple(p.name for p in class_dirs), items=tuple(items), skipped=tuple(skipped)
    )
