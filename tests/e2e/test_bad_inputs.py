"""Bad input to the core commands (issue 12): each case ends in one `error:` line with exit
status 2, no traceback, the user's files unchanged and nothing left that blocks the next run.

One tiny model (32 px, width 0.25, 1 epoch) is trained once for the whole module; its training
is itself the regression test for a last training batch of one image."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgexray.cli import main
from edgexray.runtime.errors import EdgeXrayError


@pytest.fixture(autouse=True, scope="module")
def _private_cache(tmp_path_factory):
    """The array cache of these runs stays out of the user's ~/.cache."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME")
    else:
        os.environ["XDG_CACHE_HOME"] = old


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_user_error(result, match: str = "", code: int = 2) -> str:
    """Exit `code`, exactly one `error:` line (returned), no traceback."""
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    assert not crashed, f"traceback instead of an error line: {result.exception!r}\n{result.output}"
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.lower().startswith("error:")]
    assert len(lines) == 1, result.output
    assert match in lines[0], lines[0]
    return lines[0]


def snapshot(root: Path) -> dict:
    """relative path -> sha256 of every file and folder under `root`, hidden ones included."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


TRAIN = ("--size", 32, "--epochs", 1, "--width", 0.25)


@pytest.fixture(scope="module")
def d18(tmp_path_factory) -> Path:
    """3 classes x 18 images at 48 px: 33 training images, one more than a batch of 32."""
    from edgexray.synth import synthesize

    return synthesize(
        tmp_path_factory.mktemp("d18") / "d18", classes=3, per_class=18, size=48, progress=False
    )


@pytest.fixture(scope="module")
def trained(d18, tmp_path_factory) -> dict:
    """Failed commands into `run/`, then the correct one, which must not need --force."""
    ws = tmp_path_factory.mktemp("ws")
    out = ws / "run"
    failures = {
        "width 0": cli("train", "--data", d18, "--out", out, *TRAIN[:4], "--width", 0),
        "lr nan": cli("train", "--data", d18, "--out", out, *TRAIN, "--lr", "nan"),
        # fails after splits.json was written: the staged work folder must vanish with it
        "empty val split": cli("train", "--data", d18, "--out", out, *TRAIN, "--split", "1,0,0"),
    }
    left = snapshot(ws)
    ok = cli("train", "--data", d18, "--out", out, *TRAIN)
    return {"failures": failures, "left": left, "ok": ok, "out": out, "ckpt": out / "model.pt"}


def test_last_training_batch_of_one_image_trains(trained):
    """33 training images at batch 32 (BatchNorm 'Expected more than 1 value per channel')."""
    assert trained["ok"].exit_code == 0, trained["ok"].output
    assert trained["ckpt"].is_file() and (trained["out"] / "splits.json").is_file()


def test_batch_size_8_on_33_images_drops_the_single_last_image():
    from edgexray.data import XrayDataset, make_loader
    from edgexray.runtime.preprocess import Preprocess

    ds = XrayDataset(
        np.zeros((33, 16, 16), np.float16),
        [0, 1, 2] * 11,
        Preprocess(size=16, channels=1, mean=(0.5,), std=(0.25,)),
    )
    sizes = [len(y) for _, y in make_loader(ds, 8, shuffle=True)]
    assert sizes == [8, 8, 8, 8]
    assert sum(len(y) for _, y in make_loader(ds, 8, shuffle=False)) == 33  # evaluation keeps all


def test_failed_runs_leave_nothing_that_blocks_the_next(trained):
    width, lr, empty_val = (trained["failures"][k] for k in ("width 0", "lr nan", "empty val split"))
    assert_user_error(width, "--width 0")
    assert_user_error(lr, "--lr nan")
    assert_user_error(empty_val, "validation split")
    assert trained["left"] == {}, "a failed train left files behind"
    assert trained["ok"].exit_code == 0  # without --force


def test_size_too_big_is_refused_before_any_work(d18, tmp_path):
    before = snapshot(tmp_path)
    assert_user_error(cli("train", "--data", d18, "--out", tmp_path / "o", "--size", 100000), "--size 100000")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "args, match",
    [
        (("--epochs", 0), "--epochs 0"),
        (("--batch-size", 0), "--batch-size 0"),
        (("--lr", "inf"), "--lr inf"),
        (("--lr", 0), "--lr 0"),
        (("--lr", -1), "--lr -1"),
        (("--width", -0.5), "--width -0.5"),
        (("--width", "nan"), "--width nan"),
        (("--seed", -1), "--seed -1"),
        (("--arch", "alexnet", "--size", 32), "too small for alexnet"),
    ],
)
def test_cheap_numeric_options_of_train(d18, tmp_path, args, match):
    assert_user_error(cli("train", "--data", d18, "--out", tmp_path / "o", *args), match)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "args",
    [
        ("--calib-count", 0),
        ("--width", "nan"),
        ("--size", 100000),
        ("--max-accuracy-drop", "nan"),
        ("--bench-seconds", "inf"),
        ("--seed", -1),
    ],
)
def test_build_numbers_are_refused_before_any_work(tmp_path, args):
    result = cli("build", "--out", tmp_path / "a", *args)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert sum(ln.lower().startswith("error:") for ln in result.output.splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_export_calib_count_0_is_refused(trained, d18, tmp_path):
    result = cli("export", trained["ckpt"], "--calib", d18, "--calib-count", 0, "--out", tmp_path / "e")
    assert_user_error(result, "--calib-count")
    assert not any(tmp_path.iterdir())


def test_evaluate_gradcam_negative_is_refused_before_work(trained, tmp_path):
    before = snapshot(trained["out"])
    assert_user_error(
        cli("evaluate", trained["ckpt"], "--gradcam", -1, "--out", tmp_path / "ev"), "--gradcam -1"
    )
    assert snapshot(trained["out"]) == before and not any(tmp_path.iterdir())


def test_evaluate_writes_metrics_into_a_fresh_folder(trained, tmp_path):
    result = cli("evaluate", trained["ckpt"], "--gradcam", 2, "--out", tmp_path / "ev")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ev" / "metrics.json").is_file()
    assert len(list((tmp_path / "ev" / "gradcam").glob("*.png"))) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["ev"]  # no work folder left


# --- checkpoints ------------------------------------------------------------------------------


def _tampered(trained, tmp_path, name, change) -> Path:
    payload = torch.load(trained["ckpt"], weights_only=True)
    change(payload)
    path = tmp_path / name
    torch.save(payload, path)
    return path


def _set_first_conv(payload):
    key = next(k for k, v in payload["state_dict"].items() if v.ndim == 4)
    payload["state_dict"][key] = torch.zeros(3, 3)


@pytest.mark.parametrize("command", ["evaluate", "prune"])
def test_empty_checkpoint(command, tmp_path):
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"")
    assert_user_error(cli(command, ckpt), "cannot be read")
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"] and ckpt.read_bytes() == b""


@pytest.mark.parametrize(
    "name, change, match",
    [
        ("no_state.pt", lambda p: p.pop("state_dict"), "'state_dict' should be a dict"),
        ("bad_shape.pt", _set_first_conv, "cannot be rebuilt"),
        ("bad_options.pt", lambda p: p["model_options"].update(pretrained=True), "unknown model options"),
    ],
)
def test_damaged_checkpoint(trained, tmp_path, name, change, match):
    ckpt = _tampered(trained, tmp_path, name, change)
    before = snapshot(tmp_path)
    for command in ("evaluate", "prune"):
        assert_user_error(cli(command, ckpt), match)
    assert snapshot(tmp_path) == before


class _Evil:
    """Unpickling this would create `marker`; weights-only loading must refuse it instead."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_weights_that_are_not_weights(d18, tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"conv1.weight": _Evil(marker)}, tmp_path / "evil.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    torch.save({"not": "tensors"}, tmp_path / "dict.pt")
    before = snapshot(tmp_path)
    for name in ("evil.pt", "empty.pt", "dict.pt"):
        result = cli(
            "train", "--data", d18, "--out", tmp_path / "o", "--weights", tmp_path / name, "--size", 32
        )
        assert_user_error(result, "weights file")
    assert not marker.exists()
    assert snapshot(tmp_path) == before


# --- data folder and output locations --------------------------------------------------------


def test_non_utf8_file_name_in_data_folder(d18, tmp_path):
    from edgexray.data import SplitConfig, prepare

    data = tmp_path / "data"
    shutil.copytree(d18, data)
    src = next((data / "normal").glob("*.png"))
    os.rename(src, os.path.join(os.fsencode(data / "normal"), b"bad-\xff-name.png"))
    prepared = prepare(
        data, 32, SplitConfig(), out_dir=tmp_path / "o", progress=False, cache_dir=tmp_path / "cache"
    )
    names = [r for s in prepared.splits.values() for r in s]
    assert len(names) == 54 and any("\udcff" in r for r in names)
    again = prepare(
        data,
        32,
        SplitConfig(),
        splits=tmp_path / "o" / "splits.json",
        progress=False,
        cache_dir=tmp_path / "cache",
    )
    assert np.array_equal(again.arrays["train"], prepared.arrays["train"])


def _read_only_dir(tmp_path: Path) -> Path:
    if os.geteuid() == 0:  # root writes through permissions; sysfs refuses new entries
        return Path("/sys/edgexray-not-writable")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    return ro


def test_read_only_output_location(d18, tmp_path):
    ro = _read_only_dir(tmp_path)
    try:
        assert_user_error(cli("train", "--data", d18, "--out", ro / "o", *TRAIN), "cannot write")
        assert_user_error(cli("data", "synth", ro / "d", "--per-class", 2, "--size", 32), "cannot write")
    finally:
        if ro.parent == tmp_path:
            ro.chmod(0o755)
    assert not ro.exists() or not any(ro.iterdir())


def test_out_is_a_file_even_with_force(trained, d18, tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    before = snapshot(tmp_path)
    assert_user_error(
        cli("train", "--data", d18, "--out", target, "--force", *TRAIN), "is a file, not a folder"
    )
    assert_user_error(cli("data", "synth", target, "--force", "--per-class", 2, "--size", 32), "is a file")
    assert_user_error(cli("evaluate", trained["ckpt"], "--out", target, "--force"), "is a file, not a folder")
    assert_user_error(cli("prune", trained["ckpt"], "--out", target, "--force"), "is a file, not a folder")
    assert_user_error(
        cli(
            "export", trained["ckpt"], "--formats", "onnx", "--precisions", "fp32", "--out", target, "--force"
        ),
        "is a file, not a folder",
    )
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "doc",
    [
        {"format": "edgexray-splits/1", "splits": ["normal/a.png"]},
        {"format": "edgexray-splits/1", "splits": {"train": 5, "val": [], "test": []}},
        {
            "format": "edgexray-splits/1",
            "splits": {"train": [1], "val": [], "test": []},
            "class_names": ["a"],
            "config": {},
        },
        {
            "format": "edgexray-splits/1",
            "splits": {"train": [], "val": [], "test": []},
            "class_names": "normal",
            "config": {},
        },
        {
            "format": "edgexray-splits/1",
            "splits": {"train": [], "val": [], "test": []},
            "class_names": ["normal"],
            "config": {"group_regex": 5},
        },
        {
            "format": "edgexray-splits/1",
            "splits": {"train": [], "val": [], "test": []},
            "class_names": ["normal"],
            "config": {"seed": "x"},
        },
    ],
)
def test_malformed_splits_file(d18, tmp_path, doc):
    import json

    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps(doc))
    before = snapshot(tmp_path)
    assert_user_error(
        cli("train", "--data", d18, "--out", tmp_path / "o", "--splits", splits, *TRAIN), "splits file"
    )
    assert snapshot(tmp_path) == before


def test_train_help_names_an_option_that_exists():
    help_text = cli("train", "--help").output
    assert "--list-archs" in help_text
    listed = cli("train", "--list-archs")
    assert listed.exit_code == 0 and "resnet18_cbam" in listed.output.split()


def test_work_folder_of_a_killed_run_is_removed(tmp_path):
    from edgexray.fsutil import staged_dir

    dead = tmp_path / ".out.partial-999999999-abc"  # no such pid
    (dead / "tensorboard").mkdir(parents=True)
    alive = tmp_path / f".out.partial-{os.getpid()}-abc"
    alive.mkdir()
    with staged_dir(tmp_path / "out", force=False) as work:
        (work / "x.txt").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", alive.name])
    assert (tmp_path / "out" / "x.txt").read_text() == "x"


def test_dead_runs_temp_entries_are_removed_live_ones_kept(tmp_path):
    from edgexray.fsutil import remove_dead_entries

    dead_dir = tmp_path / "edgexray-onnx2tf-999999999-abc"  # no such pid: a killed export
    (dead_dir / "saved_model").mkdir(parents=True)
    dead_file = tmp_path / "edgexray-onnx2tf-999999999-zip"
    dead_file.write_bytes(b"x")
    alive = tmp_path / f"edgexray-onnx2tf-{os.getpid()}-abc"
    alive.mkdir()
    other = tmp_path / "edgexray-onnx2tf-notapid"
    other.mkdir()
    remove_dead_entries(tmp_path, "edgexray-onnx2tf-")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, other.name])


# --- fuzz --------------------------------------------------------------------------------------

BAD_NUMBERS = [
    "nan",
    "inf",
    "-inf",
    "-1",
    "0",
    "1e9",
    "100000",
    "-0.0",
    "1e-320",
    "abc",
    "",
    "2**40",
    "3.5",
    "0x10",
    "18446744073709551617",
    "9" * 400,
]


def test_fuzz_random_bytes_and_option_values(trained, d18, tmp_path):
    """Seeded: random bytes as images and as checkpoints, random values for numeric options.
    Every command ends in exit 2 without a traceback and changes no existing file."""
    from edgexray.checkpoint import load_checkpoint
    from edgexray.data import SplitConfig, prepare

    rng = random.Random(12)
    real = trained["ckpt"].read_bytes()
    ws = tmp_path / "ws"
    (ws / "ckpts").mkdir(parents=True)
    blobs = [b"", bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4096)))]
    blobs += [real[: rng.randrange(len(real))] for _ in range(4)]  # truncated checkpoints
    for i, blob in enumerate(blobs):
        (ws / "ckpts" / f"c{i}.pt").write_bytes(blob)
    flipped = bytearray(real)  # may still load: flips in tensor data only change weights
    for _ in range(16):
        flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
    (ws / "flipped.pt").write_bytes(bytes(flipped))

    # random bytes (and truncated PNGs) among real images: skipped with a reason, never a crash
    data = ws / "data"
    shutil.copytree(d18, data)
    png = next((data / "normal").glob("*.png")).read_bytes()
    for cls in ("normal", "osteopenia", "osteoporosis"):
        for j, suffix in enumerate((".png", ".jpg", ".tif", ".dcm")):
            junk = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 2048)))
            cut = png[: rng.randrange(len(png) - 1)]
            (data / cls / f"junk{j}{suffix}").write_bytes(junk if j % 2 else cut)
    real_images = {p.relative_to(d18).as_posix() for p in d18.rglob("*.png")}
    before = snapshot(ws)

    for path in sorted((ws / "ckpts").iterdir()):
        with pytest.raises(EdgeXrayError):
            load_checkpoint(path)
        assert_user_error(cli("evaluate", path, "--out", ws / "ev"))
        assert_user_error(cli("prune", path, "--out", ws / "pr"))
    try:
        load_checkpoint(ws / "flipped.pt")
    except EdgeXrayError:
        pass
    prepared = prepare(data, 32, SplitConfig(), progress=False)
    assert real_images <= {r for v in prepared.splits.values() for r in v}

    options = (
        "--size",
        "--width",
        "--lr",
        "--epochs",
        "--batch-size",
        "--seed",
        "--patience",
        "--label-smoothing",
        "--mixup",
        "--noise",
        "--blur",
    )
    for _ in range(40):
        chosen = rng.sample(options, rng.randrange(1, 4))
        args = [a for opt in chosen for a in (opt, rng.choice(BAD_NUMBERS))]
        # a value that happens to be valid meets the existing, non-empty output folder
        result = cli("train", "--data", data, "--out", ws / "data", *args)
        assert result.exit_code == 2 and "Traceback" not in result.output, (args, result.output)
        assert not (result.exception and not isinstance(result.exception, SystemExit)), args
    for _ in range(15):
        args = [
            "--per-class",
            rng.choice(BAD_NUMBERS + ["2"]),
            "--seed",
            rng.choice(BAD_NUMBERS),
            "--size",
            rng.choice(BAD_NUMBERS + ["8-4", "32"]),
        ]
        result = cli("data", "synth", ws / "data", *args)
        assert result.exit_code == 2 and "Traceback" not in result.output, (args, result.output)
    for value in ("-1", "nan", "abc", "-99999999999"):
        result = cli("evaluate", trained["ckpt"], "--gradcam", value, "--out", ws / "ev")
        assert result.exit_code == 2 and "Traceback" not in result.output, (value, result.output)
    assert snapshot(ws) == before
