"""One build's state: its progress on stderr, and what its stages have made so far."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class Progress:
    """Stage-by-stage progress with times, on stderr."""

    def __init__(self):
        self.start = time.perf_counter()
        self.times: dict[str, float] = {}
        self.fallbacks: list[str] = []  # what the build changed because a budget broke

    @contextlib.contextmanager
    def stage(self, name: str):
        t0 = time.perf_counter()
        print(f"[edgexray] {name} ...", file=sys.stderr, flush=True)
        state = "failed"
        try:
            yield
            state = "done"
        finally:
            dt = time.perf_counter() - t0
            self.times[name] = round(dt, 1)
            print(
                f"[edgexray] {name} {state} in {dt:.1f} s (total {time.perf_counter() - self.start:.0f} s)",
                file=sys.stderr,
                flush=True,
            )

    @staticmethod
    def say(text: str) -> None:
        print(f"[edgexray]   {text}", file=sys.stderr, flush=True)

    def fallback(self, text: str) -> None:
        self.fallbacks.append(text)
        self.say(text)


@dataclass(frozen=True, eq=False)
class Exported:
    """Every exported precision of the pruned model, checked on the validation split."""

    files: dict  # precision -> file, in the profile's order
    val_parity: dict  # precision -> parity with PyTorch + "budget" (metrics.budget_check)
    val_logits: dict  # precision -> the file's val logits


@dataclass(frozen=True, eq=False)
class BuildState:
    """What one build knows: its inputs, then each stage's result (build() adds them with
    dataclasses.replace). Choices are made on the val split; `test` is read once, after them."""

    cfg: object  # pipeline.BuildConfig, demo defaults applied
    profile: object  # devices.DeviceProfile
    precisions: tuple  # exported, in fallback order
    out: Path  # artifact folders go here
    work: Path  # <out>/build-<target>/: every stage's files
    steps: Progress
    external_set: object = None  # external.ExternalSet of --test-data: scored at the end only
    base: object = None  # the unpruned checkpoint
    data: object = None  # its prepared splits (edgexray.data)
    synthetic: bool = False  # the images are the embedded synthetic demo
    val_x: np.ndarray | None = None
    val_y: np.ndarray | None = None
    budget: object = None  # prune.budget.AccuracyBudget: val logits -> budget check
    pruned: object = None  # prune.budget.BudgetChoice: checkpoint, report, val_logits
    exported: Exported | None = None
    candidates: object = None  # candidates.Candidates: the exported files timed on the target
    shipped: str | None = None  # the precision that ships
    shipped_by: str | None = None  # what ordered the candidates (selection.PrecisionChoice.by)
    selection: dict | None = None  # what decided what (manifest "selection")
    test: object = None  # held_out.TestReport
    calibrated: object = None  # held_out.OperatingPoint
    bench: object = None  # host_bench.HostBench
    external_rows: dict | None = None  # label -> metrics on the external set

    @property
    def names(self) -> list:
        return list(self.base.class_names)

    @property
    def shipped_file(self) -> Path:
        return self.exported.files[self.shipped]


def logits_metrics(y, logits, names, intervals: bool = False, groups=None, seed: int = 0) -> dict:
    from edgexray.runtime.metrics import classification_metrics, softmax

    return classification_metrics(y, softmax(logits), names, intervals=intervals, groups=groups, seed=seed)


def jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))
