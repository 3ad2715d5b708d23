"""Shared fixtures: real chest X-rays from ../shared/data, a synthetic set, a tiny trained model."""

from __future__ import annotations

import os
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
