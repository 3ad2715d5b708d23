"""`edgexray train` under `torchrun --nproc-per-node 2` (DDP, gloo on the CPU).

One tiny run (32 px, width 0.25, 1 epoch, 60 synthetic images renamed so that every patient has
two films): the checkpoint rank 0 writes loads like a single-process one and its validation
metrics are those of the whole val split (gathered over the ranks); the ranks drew disjoint
training images (EDGEXRAY_DIST_DEBUG records them), all from the train split, and both ranks used
the same patient-grouped splits.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgexray.synth import synthesize

BIN = Path(sys.executable).parent
TRAIN_ARGS = [
    "train",
    "--arch",
    "resnet18_cbam",
    "--size",
    "32",
    "--width",
    "0.25",
    "--epochs",
    "1",
    "--batch-size",
    "8",
    "--device",
    "cpu",
    "--seed",
    "3",
]


@pytest.fixture(scope="module")
def patient_set(tmp_path_factory) -> Path:
    """60 synthetic images, two per patient (person<K>_...), so the splits are grouped."""
    root = synthesize(
        tmp_path_factory.mktemp("ddp") / "xrays",
        classes=2,
        per_class=30,
        size=(48, 48),
        seed=1,
        progress=False,
    )
    for k, path in enumerate(sorted(root.glob("*/*.png"))):
        path.rename(path.with_name(f"person{k // 2}_{path.name}"))
    return root


def _patients(relpaths) -> set:
    return {re.search(r"(person\d+)_", p).group(1) for p in relpaths}


@pytest.mark.slow
def test_torchrun_two_ranks_train_disjoint_shards_and_rank0_checkpoint(patient_set, tmp_path):
    from edgexray.checkpoint import load_checkpoint
    from edgexray.data import XrayDataset, make_loader, prepare
    from edgexray.train import loader_logits

    debug = tmp_path / "ranks"
    env = dict(os.environ, OMP_NUM_THREADS="1", EDGEXRAY_DIST_DEBUG=str(debug))
    proc = subprocess.run(
        [
            str(BIN / "torchrun"),
            "--standalone",
            "--nproc-per-node",
            "2",
            str(BIN / "edgexray"),
            *TRAIN_ARGS,
            "--data",
            str(patient_set),
            "--out",
            str(tmp_path / "ddp"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert proc.stdout.count("checkpoint:") == 1  # rank 0 speaks, rank 0 writes

    # the ranks: disjoint shards of the train split, the same grouped splits
    ranks = [json.loads((debug / f"rank{r}.json").read_text()) for r in (0, 1)]
    splits = json.loads((tmp_path / "ddp" / "splits.json").read_text())
    assert splits["grouping"]["key"], splits["grouping"]
    assert ranks[0]["splits"] == ranks[1]["splits"] == splits["splits"]
    train, val, test = (splits["splits"][s] for s in ("train", "val", "test"))
    assert (
        not (_patients(train) & _patients(val))
        and not (_patients(train) & _patients(test))
        and not (_patients(val) & _patients(test))
    )
    seen = [ranks[r]["train_indices"]["1"] for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == len(train) // 2
    assert not set(seen[0]) & set(seen[1])
    assert set(seen[0]) | set(seen[1]) <= set(range(len(train)))

    # the checkpoint loads like a single-process one: same keys, same weight names and shapes
    single = subprocess.run(
        [str(BIN / "edgexray"), *TRAIN_ARGS, "--data", str(patient_set), "--out", str(tmp_path / "single")],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert single.returncode == 0, single.stderr[-3000:]
    raw_ddp = torch.load(tmp_path / "ddp" / "model.pt", map_location="cpu", weights_only=False)
    raw_one = torch.load(tmp_path / "single" / "model.pt", map_location="cpu", weights_only=False)
    assert set(raw_ddp) == set(raw_one)
    ckpt, one = (load_checkpoint(tmp_path / d / "model.pt") for d in ("ddp", "single"))
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(ckpt.model) == shapes(one.model)  # no "module." prefix from DDP
    assert ckpt.class_names == one.class_names and ckpt.arch == one.arch

    # its val metrics are those of the whole val split (both ranks' shards gathered)
    data = prepare(patient_set, 32, splits=tmp_path / "ddp" / "splits.json", progress=False)
    loader = make_loader(
        XrayDataset(data.arrays["val"], data.labels["val"], ckpt.preprocess), 64, shuffle=False
    )
    logits, labels = loader_logits(ckpt.model, loader)
    assert len(labels) == len(val)
    accuracy = float((logits.argmax(1) == labels).mean())
    loss = float(torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels).long()))
    assert ckpt.metrics["val_accuracy"] == pytest.approx(accuracy, abs=1e-9)
    assert ckpt.metrics["val_loss"] == pytest.approx(loss, rel=1e-4)
    assert np.isfinite(ckpt.metrics["train_loss"])


def test_single_process_is_untouched():
    from edgexray import distributed

    assert os.environ.get("WORLD_SIZE") in (None, "1")
    ctx = distributed.init("cpu")
    assert not ctx.active and ctx.is_main and distributed.context() == ctx


def test_distributed_weighted_sampler_is_balanced_and_sharded():
    from edgexray.distributed import DistributedWeightedSampler

    labels = np.array([0] * 90 + [1] * 10)
    weights = 1.0 / np.bincount(labels)[labels]
    shards = [DistributedWeightedSampler(weights, 2, r, seed=5) for r in (0, 1)]
    for s in shards:
        s.set_epoch(2)
    drawn = [list(s) for s in shards]
    assert len(drawn[0]) == len(drawn[1]) == 50
    minority = np.mean(labels[drawn[0] + drawn[1]])
    assert 0.35 < minority < 0.65  # balanced, where the data has 10% class 1
    again = DistributedWeightedSampler(weights, 2, 0, seed=5)
    again.set_epoch(2)
    assert list(again) == drawn[0]  # every rank can recompute the same global draw
    again.set_epoch(3)
    assert list(again) != drawn[0]
