"""Shared fixtures: real chest X-rays from ../shared/data, a synthetic set, a tiny trained model, and the
tiny models and artifacts of model_factories.py (one name per fixture)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHEST = REPO.parent / "shared" / "data" / "chest-xray-pneumonia" / "train"

# Tests share 2 cores with each other's subprocesses; oversubscribed threads crawl.
os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_configure(config):
    """The same thread count on every machine (float sums depend on how work is split) and
    deterministic algorithms where PyTorch has them (warn where it has none)."""
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    torch.use_deterministic_algorithms(True, warn_only=True)


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same random state, whatever ran before it."""
    import random

    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none is visible on this machine")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def chest_dir() -> Path:
    if not CHEST.is_dir():
        pytest.skip(f"real chest X-rays not found at {CHEST}")
    return CHEST


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """3 classes x 40 synthetic bone radiographs (SYNTHETIC.txt marks them)."""
    from edgexray.synth import synthesize

    return synthesize(
        tmp_path_factory.mktemp("synth") / "xrays",
        classes=3,
        per_class=40,
        size=(64, 96),
        seed=1,
        progress=False,
    )


@pytest.fixture(scope="session")
def tiny_checkpoint(synth_dir, tmp_path_factory) -> Path:
    """A resnet18_cbam at width 0.25 and 64 px, trained for 2 epochs on `synth_dir`."""
    from edgexray.train import ModelConfig, TrainConfig, train_folder

    out = tmp_path_factory.mktemp("tiny") / "run"
    run = train_folder(
        synth_dir,
        out,
        ModelConfig(arch="resnet18_cbam", size=64, width=0.25),
        TrainConfig(epochs=2, batch_size=32),
        progress=False,
    )
    return run.checkpoint


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory, synth_dir):
    """(artifact folder, summary, data folder) of one `edgexray build --target rpi4` on
    `synth_dir` (48 px, width 0.25), shared by every test of the run: copy it before changing it.
    The build's unpruned checkpoint is `artifact.parent / "build-rpi4/train/model.pt"`."""
    from edgexray.pipeline import BuildConfig, build

    out = tmp_path_factory.mktemp("build")
    summary = build(
        BuildConfig(
            target="rpi4",
            data_dir=str(synth_dir),
            out=str(out),
            size=48,
            width=0.25,
            epochs=3,
            finetune_epochs=1,
            calib_count=60,
            max_accuracy_drop=100.0,
            bench_seconds=0.5,
            verify_arm=False,
        )
    )
    return Path(summary["artifact"]), summary, synth_dir


# ---------------------------------------------------------------- tiny models (model_factories.py)


@pytest.fixture(scope="session")
def tiny_models(pytestconfig) -> dict:
    """model_factories.make_tiny_models, built once and kept in pytest's cache (keyed by the
    factories' source): {"onnx", "onnx_wide", "big_onnx", "tflite_int8", "tflite_fp32",
    "tflite_int8_seed1"} -> paths."""
    from model_factories import factories_key, make_tiny_models, tiny_model_paths

    root = Path(pytestconfig.cache.mkdir("edgexray-bench-models")) / factories_key()
    done = root / "DONE"
    if not done.exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        make_tiny_models(root)
        done.write_text("ok")
    return tiny_model_paths(root)


@pytest.fixture(scope="module")
def tflite_twins(tiny_models) -> dict:
    """{"int8": a full-INT8 TFLite (int8 in/out), "fp32": its float twin}, both 32x32x1 -> 2."""
    return {"int8": tiny_models["tflite_int8"], "fp32": tiny_models["tflite_fp32"]}


@pytest.fixture(scope="module")
def tflite_pair(tiny_models) -> tuple[Path, Path]:
    """Two full-INT8 TFLite models with the same shape and different weights (seeds 0 and 1)."""
    return tiny_models["tflite_int8"], tiny_models["tflite_int8_seed1"]


@pytest.fixture(scope="module")
def untrained_checkpoint(tmp_path_factory) -> Path:
    """model_factories.untrained_cbam() saved as a checkpoint (CLASSES, PRE of model_factories)."""
    from model_factories import CLASSES, PRE, UNTRAINED_OPTIONS, untrained_cbam

    from edgexray.checkpoint import save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(
        path,
        untrained_cbam(),
        arch="resnet18_cbam",
        model_options=UNTRAINED_OPTIONS,
        class_names=CLASSES,
        preprocess=PRE,
    )
    return path


@pytest.fixture(scope="module")
def int8_artifact(tiny_models, tmp_path_factory) -> Path:
    """A sealed artifact of tiny_models["tflite_int8"], one per test module: a module may change it."""
    from model_factories import make_artifact

    return make_artifact(
        tmp_path_factory.mktemp("sealed") / "int8", tiny_models["tflite_int8"], precision="int8"
    )


@pytest.fixture(scope="module")
def xray_eval_set(tmp_path_factory) -> Path:
    """3 real chest X-rays per class, symlinked (model_factories.make_eval_set)."""
    from model_factories import make_eval_set

    return make_eval_set(tmp_path_factory.mktemp("eval"), per_class=3)


@pytest.fixture(scope="session")
def clean_venv(pytestconfig):
    """A venv with nothing but numpy and ai-edge-litert, built once and cached."""
    root = Path(pytestconfig.cache.mkdir("edgexray-bench-venv"))
    python = root / "bin" / "python"
    if not (root / "READY").exists():
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=300)
        proc = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "numpy==1.26.4", "ai-edge-litert==2.1.0"],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if proc.returncode != 0:
            pytest.fail(f"cannot install numpy + ai-edge-litert into a clean venv: {proc.stderr[-2000:]}")
        (root / "READY").write_text("ok")
    return python


@pytest.fixture(scope="session")
def chest_build(chest_dir, tmp_path_factory):
    """A real-data rpi4 build (32 px) on whole patients, with a patient-disjoint --test-data folder:
    (summary, base folder with train/, external/, out/)."""
    from model_factories import carve_patients

    from edgexray.pipeline import BuildConfig, build

    base = tmp_path_factory.mktemp("ext")
    train_patients = carve_patients(chest_dir, base / "train", {"NORMAL": 70, "PNEUMONIA": 70})
    test_patients = carve_patients(
        chest_dir, base / "external", {"NORMAL": 30, "PNEUMONIA": 30}, skip_patients=train_patients
    )
    assert train_patients and test_patients and not train_patients & test_patients
    summary = build(
        BuildConfig(
            target="rpi4",
            data_dir=str(base / "train"),
            out=str(base / "out"),
            size=32,
            width=0.25,
            epochs=2,
            finetune_epochs=1,
            calib_count=30,
            max_accuracy_drop=100.0,
            bench_seconds=0.2,
            verify_arm=False,
            test_data=str(base / "external"),
        )
    )
    return summary, base
