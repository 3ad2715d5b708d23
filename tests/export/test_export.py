"""Export: ONNX FP32/INT8 and TFLite FP32/FP16/INT8 of a tiny CBAM model trained on real chest
X-rays, converted with the network blocked, checked for parity; formats, calibration and the
`edgexray export` command's bad-input cases."""

from __future__ import annotations

import json
import logging
import platform
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from edgexray.export.calibration import CalibrationSet, stratified_sample
from edgexray.export.exporter import export_model
from edgexray.export.formats import export_plan, get_format
from edgexray.export.onnx import read_metadata
from edgexray.export.parity import parity
from edgexray.export.tflite import tflite_io_details, tflite_ops
from edgexray.models.attention import CBAM
from edgexray.runtime.errors import EdgeXrayError
from edgexray.runtime.preprocess import Preprocess

SIZE = 64
PRE = Preprocess(size=SIZE, channels=1, mean=(0.5,), std=(0.25,))
CLASSES = ("NORMAL", "PNEUMONIA")


def _unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


# A network namespace of its own: no interface but a down loopback, so no connection leaves.
# The conversion worker also refuses sockets itself; where unshare is unavailable, that
# in-process block is the one tested.
NO_NETWORK = ("unshare", "-rn") if _unshare_works() else ()


class TinyCBAMNet(nn.Module):
    """conv-bn-relu, padded max-pool (the case onnx2tf pads with -inf), conv, CBAM, linear."""

    def __init__(self, in_chans: int = 1, num_classes: int = 2):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
        )
        self.block = nn.Sequential(nn.Conv2d(8, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.cbam = CBAM(16)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.head(self.cbam(self.block(self.stem(x))).mean((2, 3)))


def _load(root: Path, n: int, seed: int, exclude=()):
    """n stratified real images (normalized NCHW) + labels, none of `exclude`."""
    from edgexray.data import load_arrays, scan_image_folder

    index = scan_image_folder(root)
    pool = [(p, label) for p, label in index.items if p not in set(exclude)]
    idx = stratified_sample([label for _, label in pool], n, seed)
    paths = [pool[i][0] for i in idx]
    gray = load_arrays(root, paths, SIZE, progress=False)
    return PRE.normalize(gray), np.asarray([pool[i][1] for i in idx]), paths


@pytest.fixture(scope="module")
def exported(chest_dir, tmp_path_factory):
    """One shared export of a briefly trained tiny CBAM model to every format under test."""
    torch.manual_seed(0)
    calib = CalibrationSet.from_folder(chest_dir, PRE, count=120, seed=0, progress=False)
    x_train, y_train, train_paths = _load(chest_dir, 600, 2, calib.paths)
    x_eval, y_eval, _ = _load(chest_dir, 300, 3, set(calib.paths) | set(train_paths))
    model = TinyCBAMNet()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    weights = torch.tensor(len(y_train) / (2 * np.bincount(y_train)), dtype=torch.float32)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    for _ in range(6):
        for i in torch.randperm(len(xt)).split(32):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[i]), yt[i], weight=weights).backward()
            opt.step()
    model.eval()
    out = tmp_path_factory.mktemp("export") / "out"
    result = export_model(
        model,
        out,
        class_names=CLASSES,
        preprocess=PRE,
        eval_inputs=x_eval,
        eval_labels=y_eval,
        formats="onnx,tflite",
        precisions="fp32,fp16,int8",
        calib=calib,
        onnx_scheme="auto",
        dynamic_batch=True,
        launcher=NO_NETWORK,
    )
    return {"result": result, "model": model, "x": x_eval, "y": y_eval, "calib": calib}


def _entry(exported, fmt, precision) -> dict:
    return next(
        e for e in exported["result"].report["files"] if e["format"] == fmt and e["precision"] == precision
    )


@pytest.mark.slow
def test_export_writes_exactly_the_requested_files(exported):
    result = exported["result"]
    names = sorted(p.name for p in result.out_dir.iterdir())
    assert names == [
        "model_fp16.tflite",
        "model_fp32.onnx",
        "model_fp32.tflite",
        "model_int8.onnx",
        "model_int8.tflite",
        "parity.json",
    ]
    on_disk = json.loads((result.out_dir / "parity.json").read_text())
    assert on_disk["passed"] is True and result.passed
    assert on_disk["eval"]["n_images"] == 300
    assert on_disk["calibration"]["n_images"] == 120


@pytest.mark.slow
def test_model_learned_something(exported):
    # parity on an untrained model would compare noise; the reference must be a real classifier
    acc = _entry(exported, "onnx", "fp32")["parity"]["reference"]["accuracy"]
    assert acc > 0.75


@pytest.mark.slow
def test_onnx_fp32_names_metadata_and_parity(exported):
    path = exported["result"].files[("onnx", "fp32")]
    graph = onnx.load(str(path))
    assert [i.name for i in graph.graph.input] == ["input"]
    assert [o.name for o in graph.graph.output] == ["logits"]
    dims = [d.dim_param or d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 1, SIZE, SIZE]  # the fixture exports with dynamic_batch=True
    meta = read_metadata(path)
    assert meta["class_names"] == list(CLASSES)
    assert Preprocess.from_dict(meta["preprocess"]) == PRE
    p = _entry(exported, "onnx", "fp32")["parity"]
    assert p["passed"] and p["top1_agreement"] >= 0.999 and p["max_abs_diff"] <= 1e-3


@pytest.mark.slow
def test_onnx_int8_is_quantized_and_within_budget(exported):
    path = exported["result"].files[("onnx", "int8")]
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    meta = read_metadata(path)
    assert meta["class_names"] == list(CLASSES)
    entry = _entry(exported, "onnx", "int8")
    # the scheme measured accurate and fastest on THIS CPU is the one in the file
    assert meta["quantization"]["scheme"] == entry["scheme_choice"]["chosen"]
    assert meta["quantization"]["per_channel"]
    p = entry["parity"]
    assert p["passed"] and p["accuracy_drop_pp"] <= 1.0
    assert p["max_abs_diff"] > 0  # really quantized, not a copy of the float model


@pytest.mark.slow
def test_tflite_fp32_and_fp16_agree(exported):
    p32 = _entry(exported, "tflite", "fp32")["parity"]
    assert p32["passed"] and p32["top1_agreement"] >= 0.999 and p32["max_abs_diff"] <= 1e-3
    p16 = _entry(exported, "tflite", "fp16")["parity"]
    assert p16["passed"] and p16["max_abs_diff"] < 0.05 and p16["top1_agreement"] >= 0.99


@pytest.mark.slow
def test_tflite_int8_has_int8_io_builtin_ops_and_keeps_accuracy(exported):
    path = exported["result"].files[("tflite", "int8")]
    io = tflite_io_details(path)
    assert io["input"]["dtype"] == "int8" and io["output"]["dtype"] == "int8"
    assert io["input"]["shape"] == [1, SIZE, SIZE, 1]  # NHWC
    # the input scale covers the normalized range ((0 - 0.5) / 0.25 .. (1 - 0.5) / 0.25)
    assert 4.0 / 256 * 0.5 < io["input"]["scale"] < 4.0 / 256 * 2
    ops = tflite_ops(path)
    assert not [op for op in ops if op.startswith("CUSTOM") or op.startswith("FLEX")]
    assert "PADV2" not in ops  # regression: the -inf max-pool padding as int8 broke LiteRT
    assert "CONCATENATION" not in ops  # CBAM's mean/max concat split: one int8 scale each
    entry = _entry(exported, "tflite", "int8")
    assert entry["io"] == io
    p = entry["parity"]
    assert p["passed"] and p["accuracy_drop_pp"] <= 1.0 and p["top1_agreement"] >= 0.95


def test_graph_fixes_are_exact(tmp_path):
    from edgexray.export.graph_fixes import split_concat_conv, zero_pad_maxpool
    from edgexray.export.onnx import torch2onnx
    from edgexray.runtime.runners import predict_file as run_onnx

    torch.manual_seed(0)
    path = torch2onnx(TinyCBAMNet().eval(), tmp_path / "m.onnx", input_shape=(1, 1, SIZE, SIZE))
    graph = onnx.load(str(path))
    assert zero_pad_maxpool(graph) == 1 and split_concat_conv(graph) == 1
    assert "Concat" not in {n.op_type for n in graph.graph.node}
    onnx.save(graph, str(tmp_path / "fixed.onnx"))
    x = np.random.default_rng(0).normal(size=(4, 1, SIZE, SIZE)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(tmp_path / "fixed.onnx", x), run_onnx(path, x), atol=1e-5)


@pytest.mark.slow
def test_parity_flags_a_wrong_model(exported):
    """Negative control: the checks fail when the outputs are not the reference's."""
    from edgexray.models.predict import predict_logits

    ref = predict_logits(exported["model"], exported["x"])
    path = exported["result"].files[("onnx", "fp32")]
    shifted = parity(ref + 0.01, exported["y"], path, exported["x"], CLASSES, precision="fp32")
    assert not shifted["passed"] and "max abs logit diff" in shifted["failures"][0]
    worse = parity(
        ref,
        exported["y"],
        path,
        exported["x"],
        CLASSES,
        precision="int8",
        candidate_logits=np.ascontiguousarray(ref[:, ::-1]),
    )
    assert not worse["passed"] and "accuracy drop" in worse["failures"][0]


def test_network_block_is_real(tmp_path):
    """The blocks used above really refuse connections that work without them."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=3)"
    try:
        assert subprocess.run([sys.executable, "-c", probe]).returncode == 0  # positive control
        blocked = textwrap.dedent(f"""
            from edgexray.export._tflite_worker import block_network
            block_network()
            {probe}
        """)
        run = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True)
        assert run.returncode != 0 and "network access is disabled" in run.stderr
        if NO_NETWORK:
            run = subprocess.run([*NO_NETWORK, sys.executable, "-c", probe], capture_output=True, text=True)
            assert run.returncode != 0 and "Error" in run.stderr
            public = "import socket; socket.create_connection(('1.1.1.1', 443), timeout=3)"
            run = subprocess.run([*NO_NETWORK, sys.executable, "-c", public], capture_output=True, text=True)
            assert run.returncode != 0 and "unreachable" in run.stderr.lower()
    finally:
        server.close()


# --------------------------------------------------------------------------------------------
# formats and calibration


def test_format_registry_and_suggestions():
    assert export_plan("onnx,tflite", "fp32,int8") == [
        ("onnx", "fp32"),
        ("onnx", "int8"),
        ("tflite", "fp32"),
        ("tflite", "int8"),
    ]
    assert export_plan("tflite", "int8,fp16") == [("tflite", "fp16"), ("tflite", "int8")]
    with pytest.raises(EdgeXrayError, match="did you mean 'tflite'"):
        get_format("tflit")
    with pytest.raises(EdgeXrayError, match="did you mean 'fp16'"):
        export_plan("tflite", "fp61")
    with pytest.raises(EdgeXrayError, match="not available for format"):
        export_plan("onnx", "fp16")


def test_stratified_sample_keeps_class_proportions():
    labels = np.array([0] * 300 + [1] * 900)
    idx = stratified_sample(labels, 200, seed=0)
    assert len(set(idx)) == 200 and np.bincount(labels[idx]).tolist() == [50, 150]
    assert (stratified_sample(labels, 200, seed=0) == idx).all()


def test_calibration_set_layouts_and_reader(synth_dir):
    pre = Preprocess(size=32, channels=3, mean=(0.4,), std=(0.2,))
    calib = CalibrationSet.from_folder(synth_dir, pre, count=120, progress=False)
    assert len(calib) == 120 and np.bincount(calib.labels).tolist() == [40, 40, 40]
    x = calib.arrays()
    assert x.shape == (120, 3, 32, 32) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], pre.normalize(calib.gray[0]), rtol=1e-6)
    np.testing.assert_allclose(calib.nhwc(), x.transpose(0, 2, 3, 1))
    mean, std = calib.mean_std_nhwc()
    np.testing.assert_allclose((calib.unit_nhwc() - mean) / std, calib.nhwc(), rtol=1e-5, atol=1e-6)
    reader = calib.reader("input")
    batches = iter(reader.get_next, None)
    assert sum(1 for b in batches if b["input"].shape == (1, 3, 32, 32)) == 120


def test_calibration_errors_and_warning(synth_dir, tmp_path, caplog):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EdgeXrayError, match="is empty"):
        CalibrationSet.from_folder(empty, PRE)
    with pytest.raises(EdgeXrayError, match="must be >= 1"):
        CalibrationSet.from_folder(synth_dir, PRE, count=0)
    with caplog.at_level(logging.WARNING):
        CalibrationSet.from_folder(synth_dir, Preprocess(size=16), count=30, progress=False)
    assert "only 30 images" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # more than there are: all of them, and a warning
        calib = CalibrationSet.from_folder(synth_dir, Preprocess(size=16), count=500, progress=False)
    assert len(calib) == 120 and "fewer than the 500 asked for: calibrating on all 120" in caplog.text


# --------------------------------------------------------------------------------------------
# the CLI


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from edgexray.checkpoint import save_checkpoint
    from edgexray.models import create_model

    torch.manual_seed(0)
    options = {"num_classes": 3, "in_chans": 1, "width": 0.25}
    model = create_model("resnet18_cbam", **options)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(
        path,
        model,
        arch="resnet18_cbam",
        model_options=options,
        class_names=("normal", "osteopenia", "osteoporosis"),
        preprocess=Preprocess(size=32),
    )
    return path


def _cli(*args):
    from edgexray.cli import main

    return CliRunner().invoke(main, ["export", *map(str, args)])


def test_cli_onnx_export_writes_parity_and_refuses_to_overwrite(checkpoint, synth_dir, tmp_path):
    out = tmp_path / "exp"
    args = [
        checkpoint,
        "--formats",
        "onnx",
        "--precisions",
        "fp32,int8",
        "--calib",
        synth_dir,
        "--calib-count",
        "30",
        "--n",
        "60",
        "--out",
        out,
        "--onnx-scheme",
        "u8u8",
        "--max-accuracy-drop",
        "100",
    ]
    run = _cli(*args)
    assert run.exit_code == 0, run.output
    report = json.loads((out / "parity.json").read_text())
    assert [e["file"] for e in report["files"]] == ["model_fp32.onnx", "model_int8.onnx"]
    assert report["eval"]["n_images"] == 60 and report["info"]["arch"] == "resnet18_cbam"
    assert report["info"]["parity_data"]["calibration_images_excluded"] is True
    assert report["files"][0]["parity"]["passed"]
    assert "model_fp32.onnx" in run.output
    graph = onnx.load(str(out / "model_fp32.onnx")).graph
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [1, 1, 32, 32]
    assert read_metadata(out / "model_fp32.onnx")["arch"] == "resnet18_cbam"
    before = (out / "parity.json").read_bytes()
    again = _cli(*args)
    assert again.exit_code == 2 and "already exists" in again.output and "--force" in again.output
    assert (out / "parity.json").read_bytes() == before
    assert _cli(*args, "--force").exit_code == 0


@pytest.mark.parametrize(
    "case",
    ["missing", "corrupt", "empty_calib", "zero_calib_count", "bad_format", "bad_precision", "no_calib"],
)
def test_cli_bad_input_exits_2(case, checkpoint, synth_dir, tmp_path):
    ckpt, calib, extra = checkpoint, synth_dir, []
    formats, precisions = "onnx", "fp32,int8"
    expect = {
        "missing": "not found",
        "corrupt": "cannot be read",
        "empty_calib": "is empty",
        "zero_calib_count": "0 is not in the range x>=1",
        "bad_format": "did you mean 'onnx'",
        "bad_precision": "did you mean 'int8'",
        "no_calib": "need --calib",
    }[case]
    if case == "missing":
        ckpt = tmp_path / "nope.pt"
    elif case == "corrupt":
        ckpt = tmp_path / "bad.pt"
        ckpt.write_bytes(b"not a checkpoint" * 10)
    elif case == "empty_calib":
        calib = tmp_path / "empty"
        calib.mkdir()
    elif case == "zero_calib_count":  # refused before the checkpoint is even read
        ckpt, extra = tmp_path / "nope.pt", ["--calib-count", "0"]
    elif case == "bad_format":
        formats = "onnxx"
    elif case == "bad_precision":
        precisions = "fp32,int9"
    args = [ckpt, "--formats", formats, "--precisions", precisions, "--out", tmp_path / "o", *extra]
    if case != "no_calib":
        args += ["--calib", calib]
    run = _cli(*args)
    assert run.exit_code == 2, run.output
    assert expect in run.output and "Traceback" not in run.output
    assert not (tmp_path / "o").exists()


def test_cli_defaults_to_the_checkpoints_data_and_splits(tiny_checkpoint, tmp_path, caplog):
    """No --data, no --calib: calibration from the train split, parity on the test split that
    the checkpoint records (as `evaluate` does); 72 training images < 200 asked: a warning."""
    out = tmp_path / "exp"
    with caplog.at_level(logging.WARNING):
        run = _cli(
            tiny_checkpoint,
            "--formats",
            "onnx",
            "--precisions",
            "fp32,int8",
            "--out",
            out,
            "--max-accuracy-drop",
            "100",
            "--onnx-scheme",
            "u8s8-rr",
        )
    assert run.exit_code == 0, run.output
    splits = json.loads((tiny_checkpoint.parent / "splits.json").read_text())
    report = json.loads((out / "parity.json").read_text())
    source = report["info"]["parity_data"]
    assert source["split"] == "test" and source["recorded_in_checkpoint"] is True
    assert report["eval"]["n_images"] == len(splits["splits"]["test"]) > 0
    n_train = len(splits["splits"]["train"])
    assert f"fewer than the 200 asked for with --calib-count: calibrating on all {n_train}" in caplog.text
    assert [e["file"] for e in report["files"]] == ["model_fp32.onnx", "model_int8.onnx"]


def test_cli_small_calib_folder_is_used_whole(checkpoint, tmp_path, caplog):
    """--calib with fewer images than --calib-count: all of them, a warning; a checkpoint that
    records no data folder then needs --data for the parity check, and says so."""
    from edgexray.synth import synthesize

    calib = synthesize(tmp_path / "calib", classes=3, per_class=8, size=(40, 40), seed=3, progress=False)
    with caplog.at_level(logging.WARNING):
        run = _cli(
            checkpoint, "--formats", "onnx", "--precisions", "fp32", "--calib", calib, "--out", tmp_path / "o"
        )
    assert "fewer than the 200 asked for: calibrating on all 24" in caplog.text
    assert run.exit_code == 2 and "no images left for the parity check" in run.output
    assert "--data" in run.output and not (tmp_path / "o").exists()
    # fewer calibration images leave the rest for parity (all of them: fewer than the default 200)
    run = _cli(
        checkpoint,
        "--formats",
        "onnx",
        "--precisions",
        "fp32",
        "--calib",
        calib,
        "--calib-count",
        "15",
        "--out",
        tmp_path / "o",
        "--max-accuracy-drop",
        "100",
    )
    assert run.exit_code == 0, run.output
    assert json.loads((tmp_path / "o/parity.json").read_text())["eval"]["n_images"] == 9


# --------------------------------------------------------------------------------------------
# offline conversion, converter failures, ONNX activation choice


def _worker(work: Path, onnx_path: Path) -> subprocess.CompletedProcess:
    """The conversion worker alone, in `work`, with whatever files `work` holds."""
    import os

    spec = {
        "onnx_path": str(onnx_path),
        "work_dir": str(work),
        "per_channel": True,
        "result_path": str(work / "result.json"),
        "outputs": {"fp32": str(work / "m.tflite")},
    }
    (work / "spec.json").write_text(json.dumps(spec))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(
        [*NO_NETWORK, sys.executable, "-m", "edgexray.export._tflite_worker", str(work / "spec.json")],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )


@pytest.mark.slow
def test_rgb_model_converts_offline_only_thanks_to_the_sample_file(chest_dir, tmp_path):
    """onnx2tf fetches sample images for 3-channel inputs; with the file made from the
    calibration images it converts offline, without it the offline conversion fails."""
    from edgexray.export.onnx import torch2onnx
    from edgexray.export.tflite import SAMPLE_NAME, onnx2tflite
    from edgexray.runtime.runners import predict_file as run_file

    torch.manual_seed(0)
    model = TinyCBAMNet(in_chans=3).eval()
    pre = Preprocess(size=SIZE, channels=3, mean=(0.5,), std=(0.25,))
    onnx_path = torch2onnx(model, tmp_path / "rgb.onnx", input_shape=(1, 3, SIZE, SIZE))
    bare = tmp_path / "bare"
    bare.mkdir()
    run = _worker(bare, onnx_path)  # negative control: no sample file in the working directory
    assert run.returncode != 0 and SAMPLE_NAME in run.stdout + run.stderr
    calib = CalibrationSet.from_folder(chest_dir, pre, count=20, progress=False)
    files = onnx2tflite(onnx_path, tmp_path / "out", precisions=["fp32"], calib=calib, launcher=NO_NETWORK)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model_fp32.tflite"]
    x = calib.arrays()
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.abs(run_file(files["fp32"], x) - ref).max() <= 1e-3


@pytest.mark.slow
def test_converter_failure_and_timeout_carry_the_log(chest_dir, tmp_path):
    from onnx import TensorProto, helper

    from edgexray.export.tflite import onnx2tflite

    calib = CalibrationSet.from_folder(chest_dir, PRE, count=4, progress=False)
    node = helper.make_node("NoSuchOperator", ["input"], ["logits"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2])],
    )
    bad = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), bad)
    with pytest.raises(EdgeXrayError, match="(?s)conversion failed.*Log tail.*NoSuchOperator"):
        onnx2tflite(bad, tmp_path / "o", precisions=["fp32"], calib=calib)
    with pytest.raises(EdgeXrayError, match="did not finish within 1 s"):
        onnx2tflite(bad, tmp_path / "o", precisions=["fp32"], calib=calib, timeout_s=1)
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(EdgeXrayError, match="not a readable ONNX file"):
        onnx2tflite(tmp_path / "junk.onnx", tmp_path / "o", precisions=["fp32"], calib=calib)
    assert not list((tmp_path / "o").glob("*.tflite"))


@pytest.mark.slow
def test_onnx_scheme_choice_follows_its_own_measurements(exported):
    from edgexray.export.quantize_onnx import SCHEMES, TIE_FRACTION

    choice = _entry(exported, "onnx", "int8")["scheme_choice"]
    schemes = choice["schemes"]
    assert set(schemes) == set(SCHEMES) and all(r["p50_ms"] > 0 for r in schemes.values())
    if platform.machine() == "x86_64":  # the features that decide INT8 speed are on record
        assert "avx2" in choice["cpu_isa"]
    floor = min(choice["fp32_accuracy"], max(r["accuracy"] for r in schemes.values()))
    eligible = [n for n, r in schemes.items() if r["accuracy"] >= floor - choice["accuracy_tolerance"]]
    assert sorted(choice["eligible"]) == sorted(eligible) and choice["chosen"] in eligible
    fastest = min(schemes[n]["p50_ms"] for n in eligible)
    assert schemes[choice["chosen"]]["p50_ms"] <= fastest * (1 + TIE_FRACTION)


def test_pick_scheme_drops_a_saturating_scheme_and_breaks_ties_towards_portable():
    from edgexray.export.quantize_onnx import pick_scheme

    # as measured on an AVX2-only CPU (emulated Haswell): u8s8 and s8s8 saturate
    avx2 = {
        "u8s8": {"accuracy": 0.76, "p50_ms": 1.0},
        "u8s8-rr": {"accuracy": 0.90, "p50_ms": 1.2},
        "u8u8": {"accuracy": 0.90, "p50_ms": 1.6},
        "s8s8": {"accuracy": 0.76, "p50_ms": 1.0},
    }
    assert pick_scheme(avx2, 0.90, 0.005) == ("u8s8-rr", ["u8s8-rr", "u8u8"])
    # with VNNI every scheme is exact; equal speed goes to the scheme exact on every CPU
    vnni = {n: {"accuracy": 0.97, "p50_ms": 1.0 + 0.01 * i} for i, n in enumerate(avx2)}
    assert pick_scheme(vnni, 0.97, 0.005)[0] == "u8s8-rr"
    # a clearly faster accurate scheme wins
    vnni["u8s8"]["p50_ms"] = 0.5
    assert pick_scheme(vnni, 0.97, 0.005)[0] == "u8s8"
