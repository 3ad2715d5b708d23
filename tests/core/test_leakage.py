"""Patient grouping by default and the leakage guard (exact and near-duplicate images)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgexray.data import ImageFolderIndex, SplitConfig, grouping_of, make_splits, prepare, read_splits
from edgexray.leakage import cross_report, duplicate_clusters

KERMANY = re.compile(r"((?:person\d+)|(?:NORMAL2-)?IM-\d+)[-_]")


def _names_only_index(root: Path) -> ImageFolderIndex:
    """The folder's index from file names alone (no header probe, no decoding)."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    items = tuple(
        (f"{c}/{n}", k)
        for k, c in enumerate(classes)
        for n in sorted(os.listdir(root / c))
        if n.endswith(".jpeg")
    )
    return ImageFolderIndex(root=root, class_names=tuple(classes), items=items)


def test_chest_split_by_detected_patient_key(chest_dir):
    index = _names_only_index(chest_dir)
    grouping = grouping_of(index, SplitConfig())
    assert grouping.key == KERMANY.pattern and grouping.source.startswith("detected")
    assert grouping.summary()["groups"] == len({KERMANY.search(r).group(1) for r, _ in index.items})
    splits = make_splits(index, SplitConfig())  # no regex given
    patients = {s: {KERMANY.search(r.rsplit("/", 1)[-1]).group(1) for r in v} for s, v in splits.items()}
    assert patients["train"] and patients["val"] and patients["test"]
    assert not patients["train"] & patients["val"]
    assert not patients["train"] & patients["test"]
    assert not patients["val"] & patients["test"]
    # --no-group: images split independently, so some patient lands in two splits
    loose = make_splits(index, SplitConfig(auto_group=False))
    pid = {s: {KERMANY.search(r.rsplit("/", 1)[-1]).group(1) for r in v} for s, v in loose.items()}
    assert pid["train"] & pid["test"]


def test_patient_key_patterns_and_fallback():
    def index(names):
        return ImageFolderIndex(
            root=Path("."),
            class_names=("a", "b"),
            items=tuple((f"{'ab'[i % 2]}/{n}", i % 2) for i, n in enumerate(names)),
        )

    g = grouping_of(
        index(["Patient_07_view1.png", "patient-07_b.png", "patient12.png", "patient_3.png"]), SplitConfig()
    )
    assert g.key and g.summary()["groups"] == 4  # case-insensitive, '-' / '_' kept distinct
    g = grouping_of(index(["x1.png", "x2.png", "patient3.png", "y.png"]), SplitConfig())
    assert g.keys is None and g.source.startswith("none")


def _gray(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"), np.float32)


def _save(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def augmented_folder(chest_dir, tmp_path_factory):
    """24 real chest X-rays per class, one per patient, as PNG; x.png has augmented copies in
    the same folder, a sub-folder and the other class's folder."""
    root = tmp_path_factory.mktemp("aug") / "xrays"
    for cls in ("NORMAL", "PNEUMONIA"):
        seen, k = set(), 0
        for name in sorted(os.listdir(chest_dir / cls)):
            pid = KERMANY.search(name).group(1)
            if pid in seen:
                continue
            seen.add(pid)
            _save(_gray(chest_dir / cls / name), root / cls / f"img{k:02d}.png")
            k += 1
            if k == 24:
                break
    x = _gray(root / "NORMAL" / "img00.png")
    _save(x, root / "NORMAL" / "x.png")
    _save(x[:, ::-1], root / "NORMAL" / "x_aug1.png")  # mirror
    _save(np.roll(x, (6, -4), (0, 1)), root / "NORMAL" / "more" / "x_aug2.png")  # shift
    _save(x * 1.15, root / "PNEUMONIA" / "x_aug3.png")  # brighter, other label
    return root


def test_augmented_copies_across_folders_end_in_one_split(augmented_folder, tmp_path):
    data = prepare(augmented_folder, 64, SplitConfig(seed=3), out_dir=tmp_path, progress=False)
    copies = {
        "NORMAL/img00.png",
        "NORMAL/x.png",
        "NORMAL/x_aug1.png",
        "NORMAL/more/x_aug2.png",
        "PNEUMONIA/x_aug3.png",
    }
    leak = data.leakage
    assert leak["near_duplicate_clusters"] == 1 and leak["exact_duplicate_clusters"] == 1
    assert set(leak["examples"][0]["images"]) == copies  # and nothing else: no false positive
    assert leak["conflicting_labels"] == 1
    assert leak["conflicting_label_clusters"][0]["labels"] == ["NORMAL", "PNEUMONIA"]
    assert leak["across_splits"] == 0
    home = [s for s, paths in data.splits.items() if copies & set(paths)]
    assert len(home) == 1 and copies <= set(data.splits[home[0]])
    stored = json.loads((tmp_path / "splits.json").read_text())
    assert stored["leakage"]["near_duplicate_clusters"] == 1
    assert read_splits(tmp_path / "splits.json").grouping["source"].startswith("none")


def test_cross_folder_duplicates_reported(augmented_folder):
    from edgexray.data import load_arrays, scan_image_folder

    index = scan_image_folder(augmented_folder)
    rel = [r for r, _ in index.items]
    arrays = load_arrays(augmented_folder, rel, 64, progress=False)
    labels = index.labels_of(rel)
    originals = [i for i, r in enumerate(rel) if "x" not in r.rsplit("/", 1)[-1]]
    copies = [i for i, r in enumerate(rel) if "x_aug" in r]
    report = cross_report(
        arrays[originals],
        [rel[i] for i in originals],
        labels[originals],
        arrays[copies],
        [rel[i] for i in copies],
        labels[copies],
        index.class_names,
    )
    assert report["external_images_duplicating_training_folder"] == 3
    assert {m for row in report["examples"] for m in row["matches"]} == {"NORMAL/img00.png"}
    assert report["conflicting_labels"] == 1
    exact, near = duplicate_clusters(arrays[originals])
    assert exact == [] and near == []


def test_external_overlap_with_training_folder_is_loud(augmented_folder, chest_dir, tmp_path):
    import shutil

    from edgexray.external import block, load_external
    from edgexray.runtime.errors import EdgeXrayError

    ext_dir = tmp_path / "ext"
    for cls, name in (("NORMAL", "x_aug1.png"), ("PNEUMONIA", "x_aug3.png")):
        (ext_dir / cls).mkdir(parents=True)
        shutil.copy(augmented_folder / cls / name, ext_dir / cls / name)
    far = sorted(os.listdir(chest_dir / "PNEUMONIA"))[-1]  # a patient not in the folder
    (ext_dir / "PNEUMONIA" / far).symlink_to(chest_dir / "PNEUMONIA" / far)
    ext = load_external(ext_dir, ("NORMAL", "PNEUMONIA"), 64, train_dir=augmented_folder, progress=False)
    overlap = ext.overlap
    assert overlap["external_images"] == 3
    assert overlap["external_images_duplicating_training_folder"] == 2
    assert overlap["exact"] == 2  # and each also matches a copy labelled otherwise:
    assert overlap["conflicting_labels"] == 2
    doc = block(ext, {})
    assert doc["warnings"] and "2 of 3 external test images duplicate" in doc["warnings"][0]
    with pytest.raises(EdgeXrayError, match="is the training folder"):
        load_external(augmented_folder, ("NORMAL", "PNEUMONIA"), 64, train_dir=augmented_folder)


def test_dicom_patient_id_groups(tmp_path):
    import pydicom
    from test_data import write_dicom

    from edgexray.data import scan_image_folder

    rng = np.random.default_rng(0)
    for i, (cls, pid) in enumerate([("a", "P1"), ("a", "P1"), ("b", "P2"), ("b", "P3")]):
        path = write_dicom(
            tmp_path / "d" / cls / f"img{i}.dcm", rng.integers(0, 4000, (16, 16)).astype(np.uint16)
        )
        ds = pydicom.dcmread(path)
        ds.PatientID = pid
        ds.save_as(path)
    g = grouping_of(scan_image_folder(tmp_path / "d"), SplitConfig())
    assert g.key == "DICOM PatientID" and g.summary()["groups"] == 3
