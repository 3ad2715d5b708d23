"""Train/val/test splits: config, patient grouping, the split itself, splits.json I/O."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgexray.config import config_from_dict
from edgexray.data.scan import ImageFolderIndex
from edgexray.fsutil import atomic_write_json, refuse_existing
from edgexray.imageio import DICOM_SUFFIXES
from edgexray.runtime.errors import EdgeXrayError

SPLIT_NAMES = ("train", "val", "test")
SPLITS_FORMAT = "edgexray-splits/1"


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
            raise EdgeXrayError(
                f"split fractions train={self.train}, val={self.val}, "
                f"test={self.test}; each must be in [0, 1], train > 0, and they "
                "must sum to 1, e.g. 0.6/0.2/0.2"
            )
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise EdgeXrayError(f"split seed {self.seed!r}; must be an integer from 0 to {2**32 - 1}, e.g. 0")
        if self.group_regex is not None:
            if not isinstance(self.group_regex, str):
                raise EdgeXrayError(
                    f"group_regex {self.group_regex!r}; must be a regular "
                    r"expression string, e.g. '(person\d+)_'"
                )
            try:
                re.compile(self.group_regex)
            except re.error as e:
                raise EdgeXrayError(
                    f"group_regex {self.group_regex!r} is not a valid regular "
                    rf"expression ({e}); e.g. '(person\d+)_'"
                ) from None

    def fractions(self) -> dict[str, float]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SplitConfig:
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
            out.update(
                groups=int(len(sizes)),
                images=int(sizes.sum()),
                groups_with_several_images=int((sizes > 1).sum()),
                images_in_such_groups=int(sizes[sizes > 1].sum()),
            )
        return out


def _dicom_patient_ids(root: Path, relpaths: Sequence[str]) -> dict | None:
    """PatientID of every file when all are DICOM and all carry one (header only), else None."""
    if not relpaths or not all(r.lower().endswith(DICOM_SUFFIXES) for r in relpaths):
        return None
    import pydicom

    out = {}
    for rel in relpaths:
        try:
            pid = pydicom.dcmread(root / rel, stop_before_pixels=True, specific_tags=["PatientID"]).get(
                "PatientID"
            )
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
            raise EdgeXrayError(
                f"group_regex {cfg.group_regex!r} matches no group in "
                f"{len(unmatched)} file name(s), e.g. {unmatched[:3]}; every file "
                "name must contain the group (e.g. patient id); fix the regex or "
                "the file names, or split without group_regex"
            )
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


def make_splits(
    index: ImageFolderIndex,
    cfg: SplitConfig = SplitConfig(),
    links: Sequence[Sequence[str]] = (),
    grouping: Grouping | None = None,
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
                out[split].extend(paths[start : start + count])
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


def write_splits(
    path: str | os.PathLike,
    splits: dict[str, list[str]],
    index: ImageFolderIndex,
    cfg: SplitConfig,
    force: bool = False,
    grouping: dict | None = None,
    leakage: dict | None = None,
) -> Path:
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
        raise EdgeXrayError(
            f"splits file {str(path)!r} does not exist; create one with "
            "write_splits or let `prepare` write it"
        ) from None
    except (OSError, ValueError) as e:
        raise EdgeXrayError(
            f"splits file {str(path)!r} is not valid JSON ({e}); delete it to create new splits"
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != SPLITS_FORMAT:
        raise EdgeXrayError(
            f"{str(path)!r} is not an edgexray splits file (format "
            f"{doc.get('format') if isinstance(doc, dict) else None!r}, "
            f"expected {SPLITS_FORMAT!r})"
        )
    splits, names, config = doc.get("splits"), doc.get("class_names"), doc.get("config")
    malformed = None
    if not isinstance(splits, dict) or set(splits) != set(SPLIT_NAMES):
        malformed = f"'splits' must map {', '.join(SPLIT_NAMES)} to lists of image paths"
    elif not all(isinstance(v, list) and all(isinstance(p, str) for p in v) for v in splits.values()):
        malformed = "every split must be a list of image paths (strings)"
    elif not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        malformed = "'class_names' must be a list of strings"
    elif (
        not isinstance(config, dict)
        or not isinstance(config.get("group_regex"), (str, type(None)))
        or not isinstance(config.get("seed", 0), int)
    ):
        malformed = "'config' must be a dict of split fractions, an integer seed and a group_regex"
    elif not isinstance(doc.get("root", ""), str):
        malformed = "'root' must be a folder path"
    if malformed:
        raise EdgeXrayError(
            f"splits file {str(path)!r} is malformed: {malformed}; pass a "
            "splits.json written by `edgexray train`, or drop --splits to make new splits"
        )
    return StoredSplits(
        class_names=tuple(doc["class_names"]),
        splits={s: list(splits[s]) for s in SPLIT_NAMES},
        config=SplitConfig.from_dict(doc["config"]),
        root=doc.get("root", ""),
        grouping=doc.get("grouping"),
        leakage=doc.get("leakage"),
    )
