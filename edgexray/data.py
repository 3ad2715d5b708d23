"""Image folders -> splits -> arrays -> torch datasets and loaders.

Layout: `root/<class>/**/<image>` (torchvision ImageFolder). Images are decoded and resized
once (`load_arrays`, float16 in [0, 1]); datasets augment and normalize those arrays exactly as
`Preprocess.normalize` does on the device.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler
from tqdm import tqdm

from edgexray import leakage as leak_guard
from edgexray.config import config_from_dict
from edgexray.runtime.errors import EdgeXrayError
from edgexray.fsutil import atomic_write_bytes, atomic_write_json, refuse_existing
from edgexray.imageio import IMAGE_SUFFIXES, ImageReadError, probe, read_gray
from edgexray.runtime.preprocess import LUMA, Preprocess, resize_square

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
SPLITS_FORMAT = "edgexray-splits/1"
# ImageNet statistics for pretrained 3-channel backbones fed gray repeated to RGB.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The same statistics through the BT.601 luma weights (std: channels taken as fully correlated),
# for a 1-channel stem whose pretrained conv1 was summed over RGB: (0.4590,), (0.2256,).
IMAGENET_GRAY_MEAN = (round(sum(w * m for w, m in zip(LUMA, IMAGENET_MEAN)), 4),)
IMAGENET_GRAY_STD = (round(sum(w * s for w, s in zip(LUMA, IMAGENET_STD)), 4),)


# ---------------------------------------------------------------------------------------------
# Scanning an image folder

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
            raise EdgeXrayError(f"image {e.args[0]!r} is not among the {len(self.items)} images "
                                f"found in {str(self.root)!r}; was the folder changed since the "
                                "splits were written? Re-create the splits") from None

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
        raise EdgeXrayError(f"image folder {str(root)!r} {what}; expected a folder with one "
                            "sub-folder per class, e.g. data/normal/*.png and data/abnormal/*.png")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_dirs) < 2:
        found = ", ".join(repr(p.name) for p in class_dirs) or "none"
        raise EdgeXrayError(f"image folder {str(root)!r} has {len(class_dirs)} class sub-folder(s) "
                            f"({found}); at least 2 are needed, one per class, e.g. "
                            f"{root}/normal/ and {root}/abnormal/")
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
            raise EdgeXrayError(f"class folder {str(class_dir)!r} has no readable images "
                                f"(allowed suffixes: {', '.join(IMAGE_SUFFIXES)}); add images or "
                                "remove the folder")
    if ignored:
        log.warning("ignored %d non-image file(s) in %s, e.g. %s (allowed suffixes: %s)",
                    len(ignored), root, ", ".join(ignored[:3]), ", ".join(IMAGE_SUFFIXES))
    return ImageFolderIndex(root=root, class_names=tuple(p.name for p in class_dirs),
                            items=tuple(items), skipped=tuple(skipped))


# ---------------------------------------------------------------------------------------------
# Splits

@dataclass(frozen=True)
class SplitConfig:
    """How images are divided into train / val / test."""

    train: float = 0.6  # fraction of each class used for training
    val: float = 0.2  # fraction for model selection (early stopping, pruning fine-tune)
    test: float = 0.2  # fraction held out for the final report; may be 0
    seed: int = 0  # shuffling seed; same seed + same files -> same splits
    group_regex: str | None = None  # e.g. r"(person\d+)_": images sharing the first capture group
    #                                 of this regex (searched in the file name) stay in one split
    auto_group: bool = True  # without group_regex: detect a patient key (KNOWN_GROUP_KEYS)

    def __post_init__(self):
        fractions = {"train": self.train, "val": self.val, "test": self.test}
        bad = {k: v for k, v in fractions.items() if not (isinstance(v, (int, float)) and 0 <= v <= 1)}
        if bad or self.train <= 0 or not math.isclose(sum(fractions.values()), 1.0, abs_tol=1e-6):
            raise EdgeXrayError(f"split fractions train={self.train}, val={self.val}, "
                                f"test={self.test}; each must be in [0, 1], train > 0, and they "
                                "must sum to 1, e.g. 0.6/0.2/0.2")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise EdgeXrayError(f"split seed {self.seed!r}; must be an integer from 0 to "
                                f"{2**32 - 1}, e.g. 0")
        if self.group_regex is not None:
            if not isinstance(self.group_regex, str):
                raise EdgeXrayError(f"group_regex {self.group_regex!r}; must be a regular "
                                    r"expression string, e.g. '(person\d+)_'")
            try:
                re.compile(self.group_regex)
            except re.error as e:
                raise EdgeXrayError(f"group_regex {self.group_regex!r} is not a valid regular "
                                    rf"expression ({e}); e.g. '(person\d+)_'") from None

    def fractions(self) -> dict[str, float]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SplitConfig":
        return config_from_dict(cls, d, "split config")


def _allocate(n: int, fractions: Sequence[float]) -> list[int]:
    """Split n items by fractions (largest remainder); every non-zero split gets one if it can."""
    raw = [n * f for f in fractions]
    counts = [int(math.floor(r)) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: raw[i] - counts[i], reverse=True)[: n - sum(counts)]:
        counts[i] += 1
    wanted = [i for i, f in enumerate(fractions) if f > 0]
    if n >= len(wanted):
        for i in wanted:
            if counts[i] == 0:
                counts[max(range(len(counts)), key=lambda j: counts[j])] -= 1
                counts[i] = 1
    return counts


# Patient/study keys in common file-name layouts, tried in order when no group_regex is given;
# one is used only when it matches every file name.
KNOWN_GROUP_KEYS = (
    # Kermany chest X-rays: person1000_bacteria_2931.jpeg, IM-0115-0001.jpeg, NORMAL2-IM-0386-0001.jpeg
    ("Kermany personN_ / IM-NNNN- / NORMAL2-IM-NNNN-", r"((?:person\d+)|(?:NORMAL2-)?IM-\d+)[-_]"),
    ("patientN", r"(?i)(patient[-_]?\d+)"),
)
DICOM_SUFFIXES = (".dcm", ".dicom")


@dataclass(frozen=True)
class Grouping:
    """How images were grouped for splitting: `keys` maps relpath -> group (None: ungrouped)."""

    key: str | None  # the regex, "DICOM PatientID", or None
    source: str  # "given", "detected: <layout>", "off (--no-group)", "none found"
    keys: dict | None = field(default=None, repr=False)

    def summary(self) -> dict:
        out = {"key": self.key, "source": self.source}
        if self.keys is not None:
            sizes = np.bincount(np.unique(list(self.keys.values()), return_inverse=True)[1])
            out.update(groups=int(len(sizes)), images=int(sizes.sum()),
                       groups_with_several_images=int((sizes > 1).sum()),
                       images_in_such_groups=int(sizes[sizes > 1].sum()))
        return out


def _dicom_patient_ids(root: Path, relpaths: Sequence[str]) -> dict | None:
    """PatientID of every file when all are DICOM and all carry one (header only), else None."""
    if not relpaths or not all(r.lower().endswith(DICOM_SUFFIXES) for r in relpaths):
        return None
    import pydicom
    out = {}
    for rel in relpaths:
        try:
            pid = pydicom.dcmread(root / rel, stop_before_pixels=True,
                                  specific_tags=["PatientID"]).get("PatientID")
        except Exception:  # noqa: BLE001 - unreadable headers are caught when decoding
            return None
        if not pid:
            return None
        out[rel] = f"PatientID:{pid}"
    return out


def grouping_of(index: ImageFolderIndex, cfg: SplitConfig) -> Grouping:
    """The group (patient/study) of every image: from cfg.group_regex, else detected from the
    file names (KNOWN_GROUP_KEYS) or DICOM PatientID when cfg.auto_group, else none."""
    relpaths = [rel for rel, _ in index.items]
    if cfg.group_regex is not None:
        pattern = re.compile(cfg.group_regex)
        keys = {rel: _group_of(rel, pattern) for rel in relpaths}
        unmatched = [rel for rel, g in keys.items() if g is None]
        if unmatched:
            raise EdgeXrayError(f"group_regex {cfg.group_regex!r} matches no group in "
                                f"{len(unmatched)} file name(s), e.g. {unmatched[:3]}; every file "
                                "name must contain the group (e.g. patient id); fix the regex or "
                                "the file names, or split without group_regex")
        return Grouping(cfg.group_regex, "given", keys)
    if not cfg.auto_group:
        return Grouping(None, "off (--no-group)")
    for layout, regex in KNOWN_GROUP_KEYS:
        pattern = re.compile(regex)
        keys = {rel: _group_of(rel, pattern) for rel in relpaths}
        if relpaths and all(g is not None for g in keys.values()):
            return Grouping(regex, f"detected: {layout}", keys)
    keys = _dicom_patient_ids(Path(index.root), relpaths)
    if keys is not None:
        return Grouping("DICOM PatientID", "detected: DICOM PatientID tag", keys)
    return Grouping(None, "none found (no known patient key in the file names)")


def _group_of(relpath: str, pattern: re.Pattern) -> str | None:
    m = pattern.search(relpath.rsplit("/", 1)[-1])
    if m is None:
        return None
    return m.group(1) if m.groups() else m.group(0)


def split_group_ids(data, split: str) -> np.ndarray | None:
    """Group (patient) id of every image of `split` of a HeldOutData-like `data` when the splits
    were grouped, else None: intervals are then drawn over groups, as the splits were."""
    key = (getattr(data, "grouping", None) or {}).get("key") or data.split_config.group_regex
    rels = list(data.splits.get(split) or [])
    if not key or len(rels) != len(data.labels[split]):
        return None
    if key == "DICOM PatientID":
        ids = _dicom_patient_ids(Path(data.index.root), rels) or {}
        return np.asarray([ids.get(rel, rel) for rel in rels])
    pattern = re.compile(key)
    return np.asarray([_group_of(rel, pattern) or rel for rel in rels])


def make_splits(index: ImageFolderIndex, cfg: SplitConfig = SplitConfig(),
                links: Sequence[Sequence[str]] = (), grouping: Grouping | None = None
                ) -> dict[str, list[str]]:
    """Stratified, seeded train/val/test split of `index`: {"train": [relpath, ...], ...}.

    Images are grouped by `grouping_of(index, cfg)` (a patient key, given or detected) and
    whole groups are assigned to a split, balancing each split's share of images per class
    (groups stratified by their majority class). `links` (e.g. near-duplicate clusters) join
    the groups of their members, so each link ends in one split.
    """
    rng = np.random.default_rng(cfg.seed)
    fractions = [cfg.fractions()[s] for s in SPLIT_NAMES]
    out: dict[str, list[str]] = {s: [] for s in SPLIT_NAMES}
    grouping = grouping or grouping_of(index, cfg)
    links = [list(c) for c in links if len(c) > 1]

    if grouping.keys is None and not links:
        by_class: dict[int, list[str]] = {}
        for rel, label in index.items:
            by_class.setdefault(label, []).append(rel)
        for label in sorted(by_class):
            paths = sorted(by_class[label])
            paths = [paths[i] for i in rng.permutation(len(paths))]
            start = 0
            for split, count in zip(SPLIT_NAMES, _allocate(len(paths), fractions)):
                out[split].extend(paths[start:start + count])
                start += count
        return {s: sorted(v) for s, v in out.items()}

    key_of = dict(grouping.keys) if grouping.keys is not None else {rel: rel for rel, _ in index.items}
    parent: dict[str, str] = {}

    def find(k: str) -> str:
        while parent.get(k, k) != k:
            k = parent[k]
        return k
    for members in links:
        roots = sorted({find(key_of[m]) for m in members if m in key_of})
        for r in roots[1:]:
            parent[r] = roots[0]
    groups: dict[str, list[tuple[str, int]]] = {}
    for rel, label in index.items:
        groups.setdefault(find(key_of[rel]), []).append((rel, label))
    strata: dict[int, list[str]] = {}
    for g, members in groups.items():
        majority = int(np.bincount([lab for _, lab in members]).argmax())
        strata.setdefault(majority, []).append(g)
    for label in sorted(strata):
        names = sorted(strata[label])
        names = [names[i] for i in rng.permutation(len(names))]
        # Each group goes to the split furthest below its target share of images; with
        # nothing assigned yet that visits train, val, test in turn, so all get a group.
        total = sum(len(groups[g]) for g in names)
        target = np.array(fractions) * total
        have = np.zeros(len(SPLIT_NAMES))
        for g in names:
            deficit = np.where(target > 0, (target - have) / np.maximum(target, 1e-12), -np.inf)
            i = int(np.argmax(deficit))
            have[i] += len(groups[g])
            out[SPLIT_NAMES[i]].extend(rel for rel, _ in groups[g])
    return {s: sorted(v) for s, v in out.items()}


def split_counts(splits: dict[str, list[str]], index: ImageFolderIndex) -> dict[str, dict[str, int]]:
    """{split: {class name: number of images}}."""
    out = {}
    for split, paths in splits.items():
        n = np.bincount(index.labels_of(paths), minlength=len(index.class_names))
        out[split] = {c: int(k) for c, k in zip(index.class_names, n)}
    return out


def write_splits(path: str | os.PathLike, splits: dict[str, list[str]], index: ImageFolderIndex,
                 cfg: SplitConfig, force: bool = False, grouping: dict | None = None,
                 leakage: dict | None = None) -> Path:
    """Write splits.json atomically: the lists, class names, counts per class, the config, the
    grouping (key and group counts) and the leakage guard's findings."""
    refuse_existing(path, force, "splits file")
    doc = {
        "format": SPLITS_FORMAT,
        "root": str(Path(index.root).resolve()),
        "class_names": list(index.class_names),
        "config": cfg.to_dict(),
        "counts": split_counts(splits, index),
        "skipped": [list(s) for s in index.skipped],
        "grouping": grouping,
        "leakage": leakage,
        "splits": {s: list(splits.get(s, [])) for s in SPLIT_NAMES},
    }
    return atomic_write_json(path, doc)


@dataclass(frozen=True)
class StoredSplits:
    """The content of a splits.json."""

    class_names: tuple[str, ...]
    splits: dict
    config: SplitConfig
    root: str = ""
    grouping: dict | None = None
    leakage: dict | None = None


def read_splits(path: str | os.PathLike) -> StoredSplits:
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise EdgeXrayError(f"splits file {str(path)!r} does not exist; create one with "
                            "write_splits or let `prepare` write it") from None
    except (OSError, ValueError) as e:
        raise EdgeXrayError(f"splits file {str(path)!r} is not valid JSON ({e}); "
                            "delete it to create new splits") from None
    if not isinstance(doc, dict) or doc.get("format") != SPLITS_FORMAT:
        raise EdgeXrayError(f"{str(path)!r} is not an edgexray splits file (format "
                            f"{doc.get('format') if isinstance(doc, dict) else None!r}, "
                            f"expected {SPLITS_FORMAT!r})")
    splits, names, config = doc.get("splits"), doc.get("class_names"), doc.get("config")
    malformed = None
    if not isinstance(splits, dict) or set(splits) != set(SPLIT_NAMES):
        malformed = f"'splits' must map {', '.join(SPLIT_NAMES)} to lists of image paths"
    elif not all(isinstance(v, list) and all(isinstance(p, str) for p in v)
                 for v in splits.values()):
        malformed = "every split must be a list of image paths (strings)"
    elif not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        malformed = "'class_names' must be a list of strings"
    elif not isinstance(config, dict) or not isinstance(config.get("group_regex"), (str, type(None))) \
            or not isinstance(config.get("seed", 0), int):
        malformed = "'config' must be a dict of split fractions, an integer seed and a group_regex"
    elif not isinstance(doc.get("root", ""), str):
        malformed = "'root' must be a folder path"
    if malformed:
        raise EdgeXrayError(f"splits file {str(path)!r} is malformed: {malformed}; pass a "
                            "splits.json written by `edgexray train`, or drop --splits to make new splits")
    return StoredSplits(class_names=tuple(doc["class_names"]),
                        splits={s: list(splits[s]) for s in SPLIT_NAMES},
                        config=SplitConfig.from_dict(doc["config"]), root=doc.get("root", ""),
                        grouping=doc.get("grouping"), leakage=doc.get("leakage"))


# ---------------------------------------------------------------------------------------------
# Decoding

def _cache_key(root: Path, relpaths: Sequence[str], size: int) -> str:
    # os.fsencode: a file name need not be valid UTF-8 (its bytes come back surrogate-escaped)
    h = hashlib.sha256(os.fsencode(f"{root.resolve()}\0{size}"))
    for rel in relpaths:
        st = (root / rel).stat()
        h.update(os.fsencode(f"\0{rel}\0{st.st_size}\0{st.st_mtime_ns}"))
    return h.hexdigest()[:32]


def _decode(root: Path, relpaths: Sequence[str], size: int, progress: bool,
            skip_errors: bool) -> tuple[np.ndarray, list[tuple[str, str]]]:
    need = len(relpaths) * size * size * np.dtype(np.float16).itemsize
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 0
    if total and need > total // 2:
        raise EdgeXrayError(f"{len(relpaths)} images at {size}x{size} px need {need / 2**30:.1f} GiB "
                            f"as arrays, more than half of this machine's {total / 2**30:.1f} GiB "
                            "memory; use a smaller --size (e.g. 224) or fewer images")
    arrays = np.empty((len(relpaths), size, size), np.float16)
    failed: list[tuple[str, str]] = []
    kept = 0
    bar = tqdm(relpaths, desc=f"decode {size}px", unit="img", disable=None if progress else True,
               leave=False)
    for rel in bar:
        try:
            arrays[kept] = resize_square(read_gray(root / rel), size)
        except ImageReadError as e:
            if not skip_errors:
                raise
            log.warning("skipping %s", e)
            failed.append((rel, str(e)))
            continue
        kept += 1
    return arrays[:kept], failed


def load_arrays(root: str | os.PathLike, relpaths: Sequence[str], size: int, progress: bool = True,
                cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """Decode and resize images -> float16 (N, size, size) in [0, 1], in the order given.

    A file that cannot be decoded raises `ImageReadError` naming it. With `cache_dir`, the
    result is stored as .npy keyed by root, size, the paths and their sizes and mtimes.
    """
    root = Path(root)
    if int(size) < 8:
        raise EdgeXrayError(f"image size {size}; must be an integer >= 8, e.g. 224")
    size = int(size)
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"arrays-{_cache_key(root, relpaths, size)}.npy"
        if cache.is_file():
            try:
                arrays = np.load(cache, allow_pickle=False)
                if arrays.shape == (len(relpaths), size, size):
                    log.info("loaded %d decoded images from cache %s", len(relpaths), cache)
                    return arrays
            except (OSError, ValueError):
                log.warning("ignoring unreadable array cache %s", cache)
    arrays, _ = _decode(root, relpaths, size, progress, skip_errors=False)
    if cache is not None:
        buf = io.BytesIO()
        np.save(buf, arrays, allow_pickle=False)
        atomic_write_bytes(cache, buf.getvalue())
    return arrays


def norm_stats(arrays: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of all pixels (the training split's z-score statistics)."""
    arrays = np.asarray(arrays)
    if arrays.size == 0:
        raise EdgeXrayError("cannot compute normalization statistics of zero images")
    total = total_sq = 0.0
    flat = arrays.reshape(len(arrays), -1) if arrays.ndim > 1 else arrays[None]
    for chunk in np.array_split(flat, max(1, len(flat) // 256)):
        c = chunk.astype(np.float64)
        total += float(c.sum())
        total_sq += float(np.square(c).sum())
    n = flat.size
    mean = total / n
    std = math.sqrt(max(total_sq / n - mean * mean, 0.0))
    return mean, max(std, 1e-6)


# ---------------------------------------------------------------------------------------------
# Augmentation

@dataclass(frozen=True)
class AugmentConfig:
    """Random training-time changes to the (1, S, S) image in [0, 1], before normalization."""

    hflip: bool = True  # mirror left-right with probability 0.5
    rotate_deg: float = 10.0  # uniform rotation in [-r, r] degrees
    shift: float = 0.05  # translation, as a fraction of the side, in [-s, s] on each axis
    scale: float = 0.1  # zoom factor in [1 - s, 1 + s]
    brightness: float = 0.2  # multiply by a factor in [1 - b, 1 + b]
    contrast: float = 0.2  # blend with the mean by a factor in [1 - c, 1 + c]
    noise: float = 0.0  # std of added Gaussian noise on the [0, 1] scale (0 = off)
    blur: float = 0.0  # max Gaussian blur sigma in pixels, sigma uniform in [0, blur] (0 = off)
    mixup_alpha: float = 0.0  # MixUp Beta(alpha, alpha) in the trainer (0 = off; 0.2 typical)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name != "hflip" and (not isinstance(v, (int, float)) or not 0 <= v < math.inf):
                raise EdgeXrayError(f"augment {f.name}={v!r}; must be a number >= 0, and finite")
        if self.scale >= 1 or self.brightness >= 1:
            raise EdgeXrayError(f"augment scale={self.scale}, brightness={self.brightness}; "
                                "each must be < 1, e.g. 0.1 and 0.2")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AugmentConfig":
        return config_from_dict(cls, d, "augment")


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def augment_image(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """One random augmentation of a (1, S, S) float tensor in [0, 1]; result clipped to [0, 1]."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    size = x.shape[-1]
    if cfg.hflip and float(torch.rand((), generator=g)) < 0.5:
        x = F.horizontal_flip(x)
    if cfg.rotate_deg or cfg.shift or cfg.scale:
        angle = _uniform(g, -cfg.rotate_deg, cfg.rotate_deg)
        tx = round(_uniform(g, -cfg.shift, cfg.shift) * size)
        ty = round(_uniform(g, -cfg.shift, cfg.shift) * size)
        zoom = _uniform(g, 1 - cfg.scale, 1 + cfg.scale)
        # fill with the image's edge brightness rather than black, which would be a fake border
        fill = float(torch.cat([x[..., 0, :], x[..., -1, :]], -1).mean())
        x = F.affine(x, angle=angle, translate=[tx, ty], scale=zoom, shear=[0.0, 0.0],
                     interpolation=InterpolationMode.BILINEAR, fill=fill)
    if cfg.brightness:
        x = x * _uniform(g, 1 - cfg.brightness, 1 + cfg.brightness)
    if cfg.contrast:
        mean = x.mean()
        x = (x - mean) * _uniform(g, 1 - cfg.contrast, 1 + cfg.contrast) + mean
    if cfg.blur:
        sigma = _uniform(g, 0.0, cfg.blur)
        if sigma > 0.1:
            k = 2 * math.ceil(3 * sigma) + 1
            x = F.gaussian_blur(x, kernel_size=[k, k], sigma=[sigma, sigma])
    if cfg.noise:
        x = x + cfg.noise * torch.randn(x.shape, generator=g)
    return x.clamp_(0.0, 1.0)


def mixup(x: torch.Tensor, y_onehot: torch.Tensor, alpha: float,
          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp (Zhang et al. 2018): blend each sample with a shuffled partner by lam ~ Beta(a, a)."""
    if alpha <= 0 or len(x) < 2:
        return x, y_onehot
    seed = int(torch.randint(0, 2**31 - 1, (), generator=generator))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    perm = torch.randperm(len(x), generator=generator).to(x.device)
    return lam * x + (1 - lam) * x[perm], lam * y_onehot + (1 - lam) * y_onehot[perm]


# ---------------------------------------------------------------------------------------------
# Datasets and loaders

class XrayDataset(Dataset):
    """(arrays (N, S, S) in [0, 1], labels) -> (float32 (C, S, S) normalized, int label).

    Without `augment` an item equals `preprocess.normalize(arrays[i].astype(float32))`.
    """

    def __init__(self, arrays: np.ndarray, labels: Sequence[int], preprocess: Preprocess,
                 augment: AugmentConfig | None = None, seed: int = 0):
        if len(arrays) != len(labels):
            raise EdgeXrayError(f"{len(arrays)} images but {len(labels)} labels; they must match")
        if len(arrays) and tuple(arrays.shape[1:]) != (preprocess.size, preprocess.size):
            raise EdgeXrayError(f"images of shape {tuple(arrays.shape[1:])} but the preprocess "
                                f"size is {preprocess.size}; load the arrays at that size")
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
        x = x.expand(self.preprocess.channels, -1, -1)
        return ((x - self._mean) / self._std).contiguous(), int(self.labels[i])


def class_weights(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights n / (k * count) for a weighted loss; absent classes get 0."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    if (counts == 0).any():
        log.warning("class(es) %s have no training images", np.flatnonzero(counts == 0).tolist())
    w = np.where(counts > 0, counts.sum() / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def make_loader(dataset: XrayDataset, batch_size: int, shuffle: bool, oversample: bool = False,
                seed: int = 0, num_workers: int = 0, drop_last: bool = False) -> DataLoader:
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
        sampler = WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double),
                                        num_samples=len(labels), replacement=True, generator=g)
        shuffle = False
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler,
                      generator=g, num_workers=num_workers, drop_last=drop_last,
                      persistent_workers=num_workers > 0)


# ---------------------------------------------------------------------------------------------
# Everything at once

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


def prepare(data_dir: str | os.PathLike, size: int, split_cfg: SplitConfig = SplitConfig(),
            out_dir: str | os.PathLike | None = None, strict: bool = False,
            splits: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
            progress: bool = True, force: bool = False) -> PreparedData:
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
            raise EdgeXrayError(f"splits file {str(splits)!r} has classes {list(stored.class_names)} "
                                f"but {str(root)!r} has {list(index.class_names)}; use the data "
                                "folder the splits were made from, or make new splits")
        chosen, split_cfg = stored.splits, stored.config
        arrays = {s: load_arrays(root, chosen[s], size, progress, cache_dir) for s in SPLIT_NAMES}
        grouping = stored.grouping
        relpaths = [rel for s in SPLIT_NAMES for rel in chosen[s]]
        leak = _leakage_report(index, relpaths, np.concatenate([arrays[s] for s in SPLIT_NAMES]),
                               chosen, moved=False)
    else:
        relpaths = [rel for rel, _ in index.items]
        all_arrays, failed = _decode_all(root, relpaths, size, progress, strict, cache_dir)
        if failed:
            bad = {rel for rel, _ in failed}
            index = dataclasses.replace(
                index, items=tuple(it for it in index.items if it[0] not in bad),
                skipped=index.skipped + tuple(failed))
            relpaths = [rel for rel in relpaths if rel not in bad]
        row = {rel: i for i, rel in enumerate(relpaths)}
        found = grouping_of(index, split_cfg)
        grouping = found.summary()
        if found.keys is not None:
            log.warning("splitting by patient: %s groups of images (key %r, %s); pass "
                        "--no-group to split images independently", grouping["groups"],
                        found.key, found.source)
        exact, near = leak_guard.duplicate_clusters(all_arrays)
        # a cluster larger than half the smallest split is no copy but a folder of look-alikes
        # (e.g. uniform test patterns): kept together, it would distort or empty a split
        limit = 0.5 * min(f for f in split_cfg.fractions().values() if f > 0) * len(relpaths)
        too_big = [c for c in near if len(c) > limit]
        if too_big:
            log.warning("leakage guard: %d near-duplicate cluster(s) of up to %d images are too "
                        "large to keep in one split (limit: half the smallest split, %d); split "
                        "as usual", len(too_big), max(map(len, too_big)), limit)
        chosen = make_splits(index, split_cfg, grouping=found,
                             links=[[relpaths[i] for i in c] for c in near if c not in too_big])
        arrays = {s: all_arrays[[row[rel] for rel in chosen[s]]] for s in SPLIT_NAMES}
        leak = _leakage_report(index, relpaths, all_arrays, chosen, moved=True, found=(exact, near))
    labels = {s: index.labels_of(chosen[s]) for s in SPLIT_NAMES}
    splits_path = Path(splits) if splits is not None else None
    if out_dir is not None:
        target = Path(out_dir) / "splits.json"
        if splits_path is None or target.resolve() != splits_path.resolve():
            splits_path = write_splits(target, chosen, index, split_cfg, force=force,
                                       grouping=grouping, leakage=leak)
    counts = {s: len(chosen[s]) for s in SPLIT_NAMES}
    log.info("%s: %d classes %s, images per split %s, %d skipped", root, len(index.class_names),
             list(index.class_names), counts, len(index.skipped))
    return PreparedData(index=index, splits=chosen, split_config=split_cfg, arrays=arrays,
                        labels=labels, size=int(size), splits_path=splits_path,
                        grouping=grouping, leakage=leak)


def _leakage_report(index: ImageFolderIndex, relpaths: list[str], arrays: np.ndarray,
                    splits: dict, moved: bool, found=None) -> dict:
    """Run the leakage guard (unless `found` = its clusters) and say what it found on stderr."""
    exact, near = found or leak_guard.duplicate_clusters(arrays)
    split_of = {rel: s for s in SPLIT_NAMES for rel in splits[s]}
    report = leak_guard.folder_report(relpaths, index.labels_of(relpaths), index.class_names,
                                      exact, near, split_of)
    report["near_duplicates_kept_in_one_split"] = moved
    if near:
        log.warning("leakage guard: %d exact and %d near-duplicate cluster(s) (%d images)%s",
                    len(exact), len(near), report["images_in_near_clusters"],
                    "; each kept in one split" if moved else "")
    if report["conflicting_labels"]:
        log.warning("leakage guard: %d duplicate cluster(s) carry different labels, e.g. %s",
                    report["conflicting_labels"], report["conflicting_label_clusters"][0]["images"])
    if report["across_splits"]:
        log.warning("leakage guard: %d duplicate cluster(s) span splits, e.g. %s",
                    report["across_splits"],
                    report["across_split_clusters"][0]["images"])
    return report


def _decode_all(root: Path, relpaths: list[str], size: int, progress: bool, strict: bool,
                cache_dir) -> tuple[np.ndarray, list[tuple[str, str]]]:
    if strict or cache_dir is not None:
        # strict: the first unreadable file raises; a cache only holds complete, readable sets
        try:
            return load_arrays(root, relpaths, size, progress, cache_dir), []
        except ImageReadError:
            if strict:
                raise
    return _decode(root, relpaths, size, progress, skip_errors=True)
