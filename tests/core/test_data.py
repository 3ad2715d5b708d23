"""Image reading (PNG/JPEG/16-bit/RGB(A)/DICOM), folder scanning, splits, arrays, datasets."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from edgexray.data import (
    AugmentConfig,
    SplitConfig,
    XrayDataset,
    class_weights,
    load_arrays,
    make_loader,
    make_splits,
    mixup,
    norm_stats,
    prepare,
    read_splits,
    scan_image_folder,
    write_splits,
)
from edgexray.imageio import ImageReadError, read_gray
from edgexray.runtime.errors import EdgeXrayError
from edgexray.runtime.preprocess import LUMA, Preprocess, resize_square

Image = pytest.importorskip("PIL.Image")
CHEST = Path(__file__).resolve().parents[3] / "shared" / "data" / "chest-xray-pneumonia" / "train"


def gradient(h=24, w=32, hi=255, dtype=np.uint8):
    y, x = np.mgrid[0:h, 0:w]
    return ((x * 7 + y * 3) % (hi + 1)).astype(dtype)


def save(path: Path, arr: np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)
    return path


def write_dicom(
    path: Path, arr: np.ndarray, photometric="MONOCHROME2", window=None, slope=None, intercept=None, bits=12
) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits, bits - 1
    ds.PixelRepresentation = 0
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = arr.astype("<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def dicom_linear_window(x, center, width):
    """DICOM PS3.3 C.11.2.1.2.1 LINEAR window, output on [0, 1]."""
    x = np.asarray(x, np.float64)
    c, w = center - 0.5, width - 1
    return np.clip((x - c) / w + 0.5, 0, 1)


# ------------------------------------------------------------------------------------------
# read_gray


def test_png_8_and_16_bit(tmp_path):
    a8 = gradient()
    np.testing.assert_array_equal(read_gray(save(tmp_path / "a.png", a8)), a8 / np.float32(255))
    a16 = gradient(hi=65535, dtype=np.uint16) * 251
    g = read_gray(save(tmp_path / "b.png", a16))
    assert g.dtype == np.float32
    np.testing.assert_allclose(g, a16 / 65535.0, atol=1e-6)


def test_rgb_rgba_jpeg(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    luma = (rgb / np.float32(255)) @ np.asarray(LUMA, np.float32)
    np.testing.assert_allclose(read_gray(save(tmp_path / "rgb.png", rgb)), luma, atol=1e-6)
    rgba = np.dstack([rgb, rng.integers(0, 256, (20, 30), dtype=np.uint8)])
    np.testing.assert_allclose(read_gray(save(tmp_path / "rgba.png", rgba)), luma, atol=1e-6)
    smooth = np.kron(gradient(8, 8), np.ones((8, 8), np.uint8))
    g = read_gray(save(tmp_path / "x.jpg", smooth, quality=95))
    assert g.shape == smooth.shape
    assert np.abs(g - smooth / 255.0).mean() < 0.02  # lossy, but the same picture


def test_dicom_window_monochrome2_and_1(tmp_path):
    stored = (np.arange(16 * 16).reshape(16, 16) * 16).astype(np.uint16)  # 0..4080, 12 bit
    center, width = 2000.0, 1000.0
    expected = dicom_linear_window(stored, center, width)
    g2 = read_gray(write_dicom(tmp_path / "m2.dcm", stored, window=(center, width)))
    np.testing.assert_allclose(g2, expected, atol=1e-5)
    assert g2.min() == 0 and g2.max() == 1 and 0 < np.median(g2) < 1
    g1 = read_gray(write_dicom(tmp_path / "m1.dcm", stored, "MONOCHROME1", window=(center, width)))
    np.testing.assert_allclose(g1, 1 - expected, atol=1e-5)


def test_dicom_rescale_then_window_and_no_window(tmp_path):
    stored = (np.arange(12 * 10).reshape(12, 10) * 30).astype(np.uint16)
    hu = stored * 1.0 - 1024.0
    g = read_gray(write_dicom(tmp_path / "ct.dcm", stored, window=(40, 400), slope=1, intercept=-1024))
    np.testing.assert_allclose(g, dicom_linear_window(hu, 40, 400), atol=1e-5)
    plain = read_gray(write_dicom(tmp_path / "plain.dcm", stored))  # no VOI: own range
    np.testing.assert_allclose(plain, (stored - stored.min()) / np.ptp(stored), atol=1e-6)


def test_unreadable_files_are_named(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(ImageReadError, match="broken.png"):
        read_gray(bad)
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ImageReadError, match="not supported"):
        read_gray(tmp_path / "notes.txt")
    with pytest.raises(ImageReadError, match="does not exist"):
        read_gray(tmp_path / "missing.png")
    fake = tmp_path / "fake.dcm"
    fake.write_bytes(b"\0" * 200)
    with pytest.raises(ImageReadError, match="fake.dcm"):
        read_gray(fake)


# ------------------------------------------------------------------------------------------
# scanning


def make_folder(root: Path, counts: dict, size=20, prefix=None) -> Path:
    for label, (name, n) in enumerate(counts.items()):
        for i in range(n):
            arr = np.full((size, size + 4), 40 + 60 * label, np.uint8)
            arr[:, : (i % size) + 1] = 200  # every image a little different
            stem = prefix(name, i) if prefix else f"{name}_{i:03d}"
            save(root / name / f"{stem}.png", arr)
    return root


def test_scan_classes_items_and_ignored_files(tmp_path, caplog):
    root = make_folder(tmp_path / "d", {"b": 3, "a": 2})
    (root / "a" / "README.md").write_text("notes")
    (root / "a" / ".hidden.png").write_bytes(b"x")
    (root / "loose.png").write_bytes(b"x")  # not inside a class folder
    save(root / "b" / "sub" / "deep.png", gradient())
    with caplog.at_level(logging.WARNING, logger="edgexray.data"):
        index = scan_image_folder(root)
    assert index.class_names == ("a", "b")
    assert index.counts() == {"a": 2, "b": 4}
    assert ("b/sub/deep.png", 1) in index.items
    assert index.skipped == ()
    assert "ignored 1 non-image" in caplog.text and "a/README.md" in caplog.text


def test_scan_errors(tmp_path):
    with pytest.raises(EdgeXrayError, match="does not exist"):
        scan_image_folder(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(EdgeXrayError, match="is a file"):
        scan_image_folder(tmp_path / "file")
    one = make_folder(tmp_path / "one", {"only": 2})
    with pytest.raises(EdgeXrayError, match="1 class sub-folder.*'only'.*at least 2"):
        scan_image_folder(one)
    empty = make_folder(tmp_path / "empty", {"a": 2})
    (empty / "b").mkdir()
    (empty / "b" / "x.txt").write_text("not an image")
    with pytest.raises(EdgeXrayError, match="b' has no readable images"):
        scan_image_folder(empty)


def test_corrupt_images_skipped_named_or_strict(tmp_path, caplog):
    root = make_folder(tmp_path / "d", {"a": 3, "b": 3})
    (root / "a" / "zero.png").write_bytes(b"")
    (root / "b" / "junk.jpg").write_bytes(b"this is not a jpeg")
    with caplog.at_level(logging.WARNING):
        index = scan_image_folder(root)
    assert sorted(p for p, _ in index.skipped) == ["a/zero.png", "b/junk.jpg"]
    assert "zero.png" in caplog.text and "junk.jpg" in caplog.text
    assert len(index.items) == 6
    with pytest.raises(ImageReadError, match="zero.png|junk.jpg"):
        scan_image_folder(root, strict=True)


def test_truncated_pixels_caught_when_decoding(tmp_path, caplog):
    """A PNG with a valid header but cut-off pixel data passes the scan and is named later."""
    root = make_folder(tmp_path / "d", {"a": 4, "b": 4})
    noisy = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    full = save(tmp_path / "tmp.png", noisy).read_bytes()
    (root / "b" / "cut.png").write_bytes(full[: len(full) // 2])
    assert "b/cut.png" in dict(scan_image_folder(root).items)  # the header looks fine
    with caplog.at_level(logging.WARNING):
        data = prepare(root, 16, SplitConfig(0.5, 0.25, 0.25), progress=False)
    assert ("b/cut.png" in dict(data.index.skipped)) and "cut.png" in caplog.text
    assert all("b/cut.png" not in v for v in data.splits.values())
    assert sum(len(v) for v in data.splits.values()) == 8
    with pytest.raises(ImageReadError, match="cut.png"):
        prepare(root, 16, strict=True, progress=False)


# ------------------------------------------------------------------------------------------
# splits


def test_splits_stratified_deterministic_complete(tmp_path):
    index = scan_image_folder(make_folder(tmp_path / "d", {"x": 50, "y": 20, "z": 7}))
    cfg = SplitConfig(0.6, 0.2, 0.2, seed=3)
    s1, s2 = make_splits(index, cfg), make_splits(index, cfg)
    assert s1 == s2
    assert make_splits(index, SplitConfig(seed=4)) != s1
    everything = s1["train"] + s1["val"] + s1["test"]
    assert sorted(everything) == sorted(p for p, _ in index.items)  # each image exactly once
    for cls, n in {"x": 50, "y": 20, "z": 7}.items():
        for split, frac in cfg.fractions().items():
            k = sum(p.startswith(cls + "/") for p in s1[split])
            assert abs(k - n * frac) <= 1, (cls, split, k)
            assert k >= 1  # even the 7-image class reaches every split


def test_group_regex_never_leaks(tmp_path):
    # 30 patients, 1-5 images each, classes by patient
    def name(cls, i):
        return f"person{(i * 7) % 30 + (100 if cls == 'sick' else 0)}_{cls}_{i}"

    index = scan_image_folder(make_folder(tmp_path / "d", {"ok": 60, "sick": 45}, prefix=name))
    cfg = SplitConfig(0.6, 0.2, 0.2, seed=1, group_regex=r"(person\d+)_")
    splits = make_splits(index, cfg)
    owner = {}
    for split, paths in splits.items():
        for p in paths:
            person = p.split("/")[-1].split("_")[0]
            assert owner.setdefault(person, split) == split, f"{person} in two splits"
    assert all(len(splits[s]) > 0 for s in splits)
    assert abs(len(splits["train"]) / 105 - 0.6) < 0.12
    assert make_splits(index, cfg) == splits
    with pytest.raises(EdgeXrayError, match="matches no group"):
        make_splits(index, SplitConfig(group_regex=r"(patient\d+)"))


def test_split_config_validation():
    with pytest.raises(EdgeXrayError, match="sum to 1"):
        SplitConfig(0.5, 0.2, 0.2)
    with pytest.raises(EdgeXrayError, match="train > 0"):
        SplitConfig(0.0, 0.5, 0.5)
    with pytest.raises(EdgeXrayError, match="not a valid regular"):
        SplitConfig(group_regex="(unclosed")
    with pytest.raises(EdgeXrayError, match="unknown split config key"):
        SplitConfig.from_dict({"train": 0.8, "vall": 0.2})
    assert SplitConfig.from_dict(SplitConfig(0.8, 0.2, 0.0).to_dict()) == SplitConfig(0.8, 0.2, 0.0)


def test_write_read_splits(tmp_path):
    index = scan_image_folder(make_folder(tmp_path / "d", {"a": 6, "b": 4}))
    cfg = SplitConfig(seed=2)
    splits = make_splits(index, cfg)
    path = write_splits(tmp_path / "out" / "splits.json", splits, index, cfg)
    doc = json.loads(path.read_text())
    assert doc["class_names"] == ["a", "b"]
    assert sum(doc["counts"]["train"].values()) == len(splits["train"])
    stored = read_splits(path)
    assert stored.splits == splits and stored.config == cfg and stored.class_names == ("a", "b")
    with pytest.raises(EdgeXrayError, match="already exists"):
        write_splits(path, splits, index, cfg)
    write_splits(path, splits, index, cfg, force=True)
    with pytest.raises(EdgeXrayError, match="does not exist"):
        read_splits(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(EdgeXrayError, match="not valid JSON"):
        read_splits(tmp_path / "bad.json")


# ------------------------------------------------------------------------------------------
# arrays, datasets, loaders


def test_load_arrays_and_cache(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 3, "b": 3}, size=30)
    save(root / "a" / "big16.png", gradient(50, 70, hi=65535, dtype=np.uint16))
    rel = ["a/big16.png", "b/b_001.png", "a/a_002.png"]
    arr = load_arrays(root, rel, 16, progress=False)
    assert arr.shape == (3, 16, 16) and arr.dtype == np.float16
    for i, r in enumerate(rel):
        np.testing.assert_allclose(arr[i], resize_square(read_gray(root / r), 16), atol=1e-3)
    cached = load_arrays(root, rel, 16, progress=False, cache_dir=tmp_path / "cache")
    files = list((tmp_path / "cache").glob("*.npy"))
    assert len(files) == 1
    np.testing.assert_array_equal(cached, arr)
    np.testing.assert_array_equal(load_arrays(root, rel, 16, False, tmp_path / "cache"), arr)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1  # reused, not rewritten
    load_arrays(root, rel[:2], 16, False, tmp_path / "cache")  # other paths -> other key
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2
    with pytest.raises(ImageReadError, match="nope.png"):
        load_arrays(root, ["a/nope.png"], 16, progress=False)


def test_norm_stats_matches_numpy():
    x = np.random.default_rng(0).random((700, 8, 8)).astype(np.float16)
    mean, std = norm_stats(x)
    assert mean == pytest.approx(x.astype(np.float64).mean(), abs=1e-9)
    assert std == pytest.approx(x.astype(np.float64).std(), rel=1e-6)


@pytest.mark.parametrize("channels", [1, 3])
def test_dataset_without_augment_equals_preprocess_normalize(channels):
    x = np.random.default_rng(1).random((5, 24, 24)).astype(np.float16)
    pre = Preprocess(size=24, channels=channels, mean=(0.45,) * channels, std=(0.21,) * channels)
    ds = XrayDataset(x, [0, 1, 0, 1, 1], pre)
    for i in range(5):
        item, label = ds[i]
        assert item.dtype == torch.float32 and item.shape == (channels, 24, 24)
        np.testing.assert_array_equal(item.numpy(), pre.normalize(x[i].astype(np.float32)))
        assert label == [0, 1, 0, 1, 1][i]
    with pytest.raises(EdgeXrayError, match="labels"):
        XrayDataset(x, [0, 1], pre)
    with pytest.raises(EdgeXrayError, match="preprocess size is 32"):
        XrayDataset(x, [0] * 5, Preprocess(size=32))


def test_augmentation_is_random_seeded_and_bounded():
    gray = np.zeros((1, 32, 32), np.float16)
    gray[0, 8:24, 12:20] = 0.8
    pre = Preprocess(size=32, mean=(0.0,), std=(1.0,))
    cfg = AugmentConfig(noise=0.02, blur=1.0)
    a = XrayDataset(gray, [0], pre, cfg, seed=5)
    b = XrayDataset(gray, [0], pre, cfg, seed=5)
    draws_a = [a[0][0] for _ in range(6)]
    draws_b = [b[0][0] for _ in range(6)]
    for u, v in zip(draws_a, draws_b):
        torch.testing.assert_close(u, v)  # same seed, same stream
    assert any(not torch.equal(draws_a[0], d) for d in draws_a[1:])  # the stream varies
    plain = torch.from_numpy(pre.normalize(gray[0].astype(np.float32)))
    assert all(not torch.equal(d, plain) for d in draws_a)
    assert all(float(d.min()) >= 0 and float(d.max()) <= 1 for d in draws_a)
    with pytest.raises(EdgeXrayError, match="must be a number >= 0"):
        AugmentConfig(rotate_deg=-1)
    with pytest.raises(EdgeXrayError, match="unknown augment key"):
        AugmentConfig.from_dict({"flip": True})


def test_mixup():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 1, 4, 4)
    y = torch.nn.functional.one_hot(torch.arange(8) % 3, 3).float()
    assert mixup(x, y, 0.0, g)[0] is x
    xm, ym = mixup(x, y, 0.4, torch.Generator().manual_seed(1))
    xm2, ym2 = mixup(x, y, 0.4, torch.Generator().manual_seed(1))
    torch.testing.assert_close(xm, xm2)
    torch.testing.assert_close(ym.sum(1), torch.ones(8))
    assert not torch.equal(xm, x)


def test_loader_oversampling_and_class_weights():
    labels = np.array([0] * 90 + [1] * 10)
    ds = XrayDataset(np.zeros((100, 8, 8), np.float16), labels, Preprocess(size=8))
    drawn = torch.cat([y for _, y in make_loader(ds, 25, shuffle=True, oversample=True, seed=0)])
    assert len(drawn) == 100 and 30 <= int((drawn == 1).sum()) <= 70  # ~50/50, not 90/10
    plain = torch.cat([y for _, y in make_loader(ds, 25, shuffle=True, seed=0)])
    assert int((plain == 1).sum()) == 10
    w = class_weights(labels, 3)
    torch.testing.assert_close(w, torch.tensor([100 / (3 * 90), 100 / (3 * 10), 0.0]))
    with pytest.raises(EdgeXrayError, match="batch size"):
        make_loader(ds, 0, shuffle=False)


def test_prepare_writes_and_reuses_splits(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 10, "b": 5})
    data = prepare(root, 16, SplitConfig(seed=1), out_dir=tmp_path / "run", progress=False)
    assert data.splits_path == tmp_path / "run" / "splits.json"
    assert {s: len(v) for s, v in data.labels.items()} == {"train": 9, "val": 3, "test": 3}
    for s in ("train", "val", "test"):
        assert data.arrays[s].shape == (len(data.splits[s]), 16, 16)
        np.testing.assert_array_equal(data.labels[s], data.index.labels_of(data.splits[s]))
    i = data.splits["val"].index(data.splits["val"][1])
    np.testing.assert_allclose(
        data.arrays["val"][i], resize_square(read_gray(root / data.splits["val"][1]), 16), atol=1e-3
    )
    again = prepare(root, 16, SplitConfig(seed=99), splits=data.splits_path, progress=False)
    assert again.splits == data.splits and again.split_config == SplitConfig(seed=1)
    with pytest.raises(EdgeXrayError, match="already exists"):
        prepare(root, 16, out_dir=tmp_path / "run", progress=False)
    other = make_folder(tmp_path / "o", {"a": 3, "c": 3})
    with pytest.raises(EdgeXrayError, match="has classes"):
        prepare(other, 16, splits=data.splits_path, progress=False)


@pytest.mark.slow
def test_real_chest_xrays(tmp_path):
    if not CHEST.is_dir():
        pytest.skip(f"real chest X-rays not found at {CHEST}")
    names = {c: sorted(p.name for p in (CHEST / c).iterdir())[:4] for c in ("NORMAL", "PNEUMONIA")}
    rel = [f"{c}/{n}" for c, ns in names.items() for n in ns]
    arr = load_arrays(CHEST, rel, 64, progress=False)
    assert arr.shape == (8, 64, 64) and 0 <= float(arr.min()) and float(arr.max()) <= 1
    with Image.open(CHEST / rel[0]) as im:  # JPEG decoded by Pillow, then luma if RGB
        ref = np.asarray(im.convert("L") if im.mode not in ("L", "RGB") else im)
    from edgexray.runtime.preprocess import to_unit_gray

    np.testing.assert_array_equal(read_gray(CHEST / rel[0]), to_unit_gray(ref))
    assert float(arr.std()) > 0.05  # real contrast, not a blank decode
