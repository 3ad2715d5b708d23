"""What a build ships is chosen on the validation split only, and every device profile's plain
build ships something that meets its budget (down to the unpruned model), saying which level.

Real builds of a tiny model (32 px, width 0.25) from one shared checkpoint; the host benchmark
skips its fresh-process memory probe (not what these tests are about)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgexray import pipeline
from edgexray.cli import main

TINY = ["--bench-seconds", "0.1", "--calib-count", "30", "--no-verify-arm"]


@pytest.fixture(scope="module")
def fast_bench():
    from edgexray.bench import compare

    real = compare.compare_models

    def latency_only(*args, **kwargs):
        return real(*args, **{**kwargs, "memory": False})

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(compare, "compare_models", latency_only)
        yield


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """3 classes x 60 synthetic images and a resnet18_cbam (32 px, width 0.25) trained 3 epochs."""
    from edgexray.synth import synthesize
    from edgexray.train import ModelConfig, TrainConfig, train_folder

    root = tmp_path_factory.mktemp("selection")
    data = synthesize(root / "xrays", classes=3, per_class=60, size=(48, 64), seed=2, progress=False)
    run = train_folder(
        data,
        root / "run",
        ModelConfig(arch="resnet18_cbam", size=32, width=0.25),
        TrainConfig(epochs=3, batch_size=32),
        progress=False,
    )
    return data, run.checkpoint


def _build(target, data, ckpt, out, *extra):
    r = CliRunner().invoke(
        main,
        [
            "build",
            "--target",
            target,
            "--checkpoint",
            str(ckpt),
            "--data",
            str(data),
            "--out",
            str(out),
            *TINY,
            *extra,
        ],
    )
    assert r.exit_code == 0, r.output
    folder = next(p for p in Path(out).glob(f"{target}-*") if p.is_dir())
    return json.loads((folder / "manifest.json").read_text()), r.output, folder


def _scramble_test_labels(monkeypatch):
    """Every test image gets a random (seeded) class: any use of the test labels for a choice
    would see different figures."""
    real = pipeline._trained_model

    def scrambled(*args, **kwargs):
        base, data = real(*args, **kwargs)
        y = data.labels["test"]
        labels = {
            **data.labels,
            "test": np.random.default_rng(0).integers(0, len(data.class_names), len(y)).astype(y.dtype),
        }
        return base, dataclasses.replace(data, labels=labels)

    monkeypatch.setattr(pipeline, "_trained_model", scrambled)


@pytest.fixture(scope="module")
def x86_builds(tiny_run, fast_bench, tmp_path_factory):
    """Two x86-64 builds, the second with scrambled test labels. The candidates' latency is
    measured (noise) by the first; the second sees the same figures, so that any difference
    between them comes from the test labels."""
    data, ckpt = tiny_run
    out = tmp_path_factory.mktemp("x86")
    timed, real = [], pipeline.measure_candidates

    def timed_once(state):
        if not timed:
            timed.append(real(state))
        return timed[0]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "measure_candidates", timed_once)
        plain = _build("x86-64", data, ckpt, out / "plain", "--finetune-epochs", "1")
        _scramble_test_labels(mp)
        scrambled = _build("x86-64", data, ckpt, out / "scrambled", "--finetune-epochs", "1")
    return out, plain, scrambled


def _pruned_state(out: Path):
    return torch.load(out / "build-x86-64" / "pruned.pt", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_scrambled_test_labels_do_not_change_what_is_shipped(x86_builds):
    out, (plain, _, _), (scrambled, _, _) = x86_builds
    sel = plain["selection"]
    assert sel["split"] == "val" and sel["n_images"] > 0
    splits = {d["what"]: d["split"] for d in sel["decisions"]}
    assert splits == {
        "pruning level": "val",
        "precision": "val",
        "INT8 calibration images": "train",
        "ONNX INT8 scheme": "val",
    }

    schemes = [
        next(d["chosen"] for d in m["selection"]["decisions"] if d["what"] == "ONNX INT8 scheme")
        for m in (plain, scrambled)
    ]

    def chosen_from(selection):
        """The ONNX INT8 scheme also weighs host latency (noise), so when the two runs picked
        different schemes the int8 file's val figures differ; everything else must match."""
        out = []
        for d in selection["decisions"]:
            if d["what"] == "ONNX INT8 scheme":
                d = {
                    **d,
                    "cpu_model": None,
                    "chosen": None,
                    "candidates": [{**c, "p50_ms": None} for c in d["candidates"]],
                }
            elif d["what"] == "precision" and schemes[0] != schemes[1]:
                d = {
                    **d,
                    "candidates": [
                        c if c["precision"] != "int8" else {"precision": "int8"} for c in d["candidates"]
                    ],
                }
            out.append(d)
        return out

    # the same choices, made from the same figures
    assert chosen_from(scrambled["selection"]) == chosen_from(sel)
    assert {k: v for k, v in scrambled["selection"].items() if k != "decisions"} == {
        k: v for k, v in sel.items() if k != "decisions"
    }
    assert scrambled["model"]["precision"] == plain["model"]["precision"]
    assert scrambled["channels_kept"] == plain["channels_kept"]
    a, b = _pruned_state(out / "plain"), _pruned_state(out / "scrambled")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # ... while the test split was read, scrambled, for the report
    cm = [m["models"][0]["metrics"]["confusion_matrix"] for m in (plain, scrambled)]
    assert cm[0] != cm[1]


@pytest.mark.slow
def test_manifest_and_summary_show_intervals_and_the_budget_rule(x86_builds):
    _, (plain, output, folder), _ = x86_builds
    for row in plain["models"]:
        lo, hi = row["accuracy_ci95"]
        assert lo <= row["accuracy"] <= hi
        assert set(row["per_class_ci95"]) == set(plain["class_names"])
    budget = plain["budgets"]["max_accuracy_drop_pp"]
    assert budget["split"] == "val" and budget["passed"] and budget["upper_95"] <= budget["limit"]
    assert "95% CI" in output and "chosen on" in output and "pruning level" in output
    assert "accuracy 95% CI" in (folder / "report.html").read_text()


@pytest.mark.slow
def test_x86_ships_the_fastest_candidate_within_the_budget_by_a_re_measurement(x86_builds, tmp_path):
    out, (plain, output, folder), _ = x86_builds
    choice = next(d for d in plain["selection"]["decisions"] if d["what"] == "precision")
    assert choice["latency_measured_on"].startswith("this host") and "avx2" in choice["latency_measured_on"]
    work = out / "plain" / "build-x86-64"
    doc = json.loads((work / "candidates" / "results.json").read_text())
    p50 = {e["model_file"]: e["latency_ms"]["p50"] for e in doc["results"]}
    assert {c["file"] for c in choice["candidates"]} == set(p50) and len(p50) == 2
    for c in choice["candidates"]:  # the manifest cites what was measured
        assert c["latency_ms"]["p50"] == p50[c["file"]] and c["latency_ms"]["runs"] > 0
        assert c["peak_rss_mb"] > 0
    passing = [c for c in choice["candidates"] if c["passed"] and c["parity_passed"]]
    fastest = min(passing, key=lambda c: c["latency_ms"]["p50"])
    assert choice["chosen"] == fastest["precision"] == plain["model"]["precision"]
    assert "fastest within the budget" in choice["by"] and "candidate fp32" in output
    # re-measured now by the artifact's own run.py, each file in a fresh process: the shipped file
    # is the fastest within measurement noise
    files = [str(work / "export" / c["file"]) for c in passing]
    proc = subprocess.run(
        [sys.executable, str(folder / "run.py"), "time", *files, "--rounds", "3", "--seconds", "0.5"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    again = {e["model_file"]: e["latency_ms"]["p50"] for e in json.loads(proc.stdout)["results"]}
    assert again[fastest["file"]] <= 1.5 * min(again.values()), (again, p50)


def _every_profile():
    from edgexray.devices import list_profiles

    return list_profiles()


@pytest.mark.slow
def test_every_profile_ships_and_says_which_level(tiny_run, fast_bench, x86_builds, tmp_path):
    data, ckpt = tiny_run
    _, (x86, _, _), _ = x86_builds
    manifests = {"x86-64": x86}
    for name in _every_profile():
        if name not in manifests:
            manifests[name] = _build(name, data, ckpt, tmp_path / name, "--finetune-epochs", "0")[0]
    for name, m in manifests.items():
        level = m["selection"]["decisions"][0]
        assert level["what"] == "pruning level" and level["chosen"], name
        assert m["prune"]["level"] == level["chosen"]
        assert m["budgets"]["max_accuracy_drop_pp"]["passed"], name
        if level["fallback"]:  # the lighter levels were tried first, each refused for a reason
            refused = [c for c in level["candidates"] if c["level"] != level["chosen"]]
            assert refused and all(c["failures"] or c["skipped"] for c in refused), name
            assert any("falling back" in f or "UNPRUNED" in f for f in m["fallbacks"]), name
        if level["chosen"].startswith("unpruned"):
            assert m["reduction"] == {"params": 0.0, "macs": 0.0}
    # GPU targets are timed on the GPU only where there is one; otherwise the build says so
    from edgexray.bench.runtimes import available_runtimes

    if "onnxruntime-cuda" not in available_runtimes():
        assert any("not measured on a GPU" in f for f in manifests["cuda-gpu"]["fallbacks"])


def test_a_precision_whose_minority_class_collapses_is_not_shipped():
    from edgexray.export.selection import choose_precision
    from edgexray.runtime.metrics import budget_check

    y = np.r_[np.zeros(950, int), np.ones(50, int)]
    ref = y.copy()
    ref[:50], ref[950:955] = 1, 0
    collapsed = ref.copy()
    collapsed[:25], collapsed[955:980] = 0, 0  # same accuracy, rare sensitivity 90% -> 40%
    names = ["common", "rare"]
    parity = {
        "int8": {"passed": True, "budget": budget_check(y, ref, collapsed, names, 1.0)},
        "fp32": {"passed": True, "budget": budget_check(y, ref, ref, names, 1.0)},
    }
    choice = choose_precision("int8", ("int8", "fp32"), parity, 1.0)
    shipped = choice.precision
    assert shipped == "fp32"
    assert "rare sensitivity drop 50.00 pp" in choice.fallbacks[0]


def test_measured_latency_orders_the_candidates_and_the_budget_still_gates():
    from edgexray.export.selection import choose_precision
    from edgexray.runtime.metrics import budget_check

    y = np.r_[np.zeros(500, int), np.ones(500, int)]
    wrong = y.copy()
    wrong[:100] = 1  # 10 points worse: outside a 1-point budget

    def parity(bad=()):
        return {
            p: {"passed": True, "budget": budget_check(y, y, wrong if p in bad else y, ["a", "b"], 1.0)}
            for p in ("int8", "fp16", "fp32")
        }

    order = ("int8", "fp16", "fp32")
    # an AVX2-only host: the float files are faster than INT8, so FP32 ships
    timed = {"int8": 4.69, "fp16": 2.94, "fp32": 2.93}
    choice = choose_precision("int8", order, parity(), 1.0, timed, "this host")
    assert choice.precision == "fp32" and choice.fallbacks == () and "timed on this host" in choice.by
    # the fastest breaks the budget: the next fastest ships, and the build says why
    choice = choose_precision("int8", order, parity(bad=("fp32",)), 1.0, timed, "this host")
    assert choice.precision == "fp16" and "fp32 breaks the budget" in choice.fallbacks[0]
    # nothing measured (a board without --remote): the profile's order decides
    choice = choose_precision("int8", order, parity(), 1.0, {}, None)
    assert choice.precision == "int8" and choice.by == "the profile's precision order"


def test_every_plain_pruning_plan_ends_with_the_unpruned_model():
    from edgexray.devices import load_profile
    from edgexray.prune.budget import pruning_attempts

    plain = pipeline.BuildConfig()
    for name in _every_profile():
        levels = pruning_attempts(load_profile(name).prune, plain.latency_budget_ms)
        assert levels[-1] == ("unpruned", None) and len(levels) >= 3, name
    # a latency search ships nothing rather than an unpruned model that misses the latency goal
    latency = pruning_attempts(
        load_profile("rpi4").prune, pipeline.BuildConfig(latency_budget_ms=5.0).latency_budget_ms
    )
    assert ("unpruned", None) not in latency


@pytest.fixture(scope="module")
def calibrated_build(tiny_run, fast_bench, tmp_path_factory):
    """A build with an operating point and an external folder (other synthetic images)."""
    from edgexray.synth import synthesize

    data, ckpt = tiny_run
    positive = sorted(d.name for d in Path(data).iterdir() if d.is_dir())[0]
    root = tmp_path_factory.mktemp("cal")
    external = synthesize(root / "external", classes=3, per_class=12, size=(48, 64), seed=9, progress=False)
    return _build(
        "x86-64",
        data,
        ckpt,
        root / "out",
        "--finetune-epochs",
        "0",
        "--positive-class",
        positive,
        "--target-sensitivity",
        "0.9",
        "--test-data",
        str(external),
    )


def _run_py(folder: Path):
    from edgexray.external import _import_run_py

    return _import_run_py(folder)


def test_run_py_probabilities_are_temperature_scaled(calibrated_build):
    from edgexray.runtime.metrics import softmax

    manifest, output, folder = calibrated_build
    cal = manifest["calibration"]
    assert cal["fitted_on"] == "val" and 0.05 <= cal["temperature"] <= 20
    # (T minimizes val NLL, not ECE: on 36 images ECE may go either way)
    assert 0 <= cal["ece_before"] <= 1 and 0 <= cal["ece_after"] <= 1 and "ece_after" in cal["test"]
    assert "calibration" in output and "ECE" in (folder / "report.html").read_text()
    run = _run_py(folder)
    checked = run.checked_manifest(folder)
    data = Path(manifest["config"]["data_dir"])
    paths = sorted(str(p) for p in data.rglob("*.png"))[:8]
    rows = run.predictions(folder, checked, paths, raw=True)["predictions"]
    runner = run.load_model(folder, checked)
    for row in rows:
        logits = run.dequantize(np.asarray([row["raw"]]), runner.output_spec)
        want = softmax(np.asarray(logits, np.float64) / cal["temperature"])[0]
        got = [row["probabilities"][c] for c in checked["class_names"]]
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_operating_point_is_chosen_on_val_and_applied_by_run_py(calibrated_build):
    manifest, output, folder = calibrated_build
    d = manifest["decision"]
    assert d["chosen_on"] == "val" and d["target_sensitivity"] == 0.9
    assert d["val"]["sensitivity"] >= 0.9
    assert set(d["test"]["ci95"]) == {"sensitivity", "specificity", "accuracy"}
    report = (folder / "report.html").read_text()
    assert "operating point" in output and "test sensitivity / specificity" in report
    assert "ROC with the operating point (test)" in report
    run = _run_py(folder)
    checked = run.checked_manifest(folder)
    names, pos = checked["class_names"], checked["class_names"].index(d["positive_class"])
    paths = sorted(str(p) for p in Path(manifest["config"]["data_dir"]).rglob("*.png"))[::6]
    rows = run.predictions(folder, checked, paths)["predictions"]
    for row in rows:  # the sealed artifact applies its own threshold
        p = row["probabilities"][d["positive_class"]]
        assert (row["label"] == d["positive_class"]) == (p >= d["threshold"])
        assert row["probability"] == row["probabilities"][row["label"]]
    # a lower threshold labels positive an image whose positive probability is not the largest
    below = [
        r
        for r in rows
        if r["label"] != d["positive_class"]
        and max(r["probabilities"].values()) > r["probabilities"][d["positive_class"]]
    ]
    assert below, "no image predicted as another class"
    r = below[0]
    t = r["probabilities"][d["positive_class"]]
    lowered = {**checked, "decision": {**d, "threshold": t}}
    again = run.predictions(folder, lowered, [r["image"]])["predictions"][0]
    assert again["label"] == d["positive_class"] and again["index"] == pos
    assert names[int(np.argmax([again["probabilities"][n] for n in names]))] != again["label"]


def test_external_shipped_row_is_run_py_predict_at_the_operating_point(calibrated_build, tmp_path):
    """Accuracy, sensitivity and specificity of the shipped row come from the labels run.py
    predict prints (its threshold), not from the argmax of its probabilities."""
    import csv
    import subprocess
    import sys

    manifest, output, folder = calibrated_build
    d, names = manifest["decision"], manifest["class_names"]
    shipped = next(row for row in manifest["models"] if row.get("shipped"))["external"]
    assert shipped["decision_rule"].startswith(f"operating point: {d['positive_class']} when p >= ")
    others = [
        m for label, m in manifest["external"]["models"].items() if label != "shipped artifact (run.py)"
    ]
    assert others and all(m["decision_rule"].startswith("argmax") for m in others)
    assert f"{d['positive_class']} at p >= {d['threshold']:.4f}" in output  # the summary says so
    assert "(argmax)" in output and "accuracy" in d["test"] and "run.py's labels" in output

    out = tmp_path / "pred.csv"
    r = subprocess.run(
        [
            sys.executable,
            "run.py",
            "predict",
            manifest["external"]["data"],
            "--format",
            "csv",
            "--out",
            str(out),
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == manifest["external"]["n"]
    truth = np.asarray([names.index(Path(row["image"]).parent.name) for row in rows])
    said = np.asarray([names.index(row["label"]) for row in rows])
    argmax = np.asarray([int(np.argmax([float(row[f"p_{n}"]) for n in names])) for row in rows])
    assert (said != argmax).any(), "the threshold changes no label here: the test would not tell"
    assert shipped["accuracy"] == pytest.approx(np.mean(said == truth))
    for i, cls in enumerate(names):
        sens = np.mean(said[truth == i] == i)
        spec = np.mean(said[truth != i] != i)
        assert shipped["per_class"][cls]["sensitivity"] == pytest.approx(sens), cls
        assert shipped["per_class"][cls]["specificity"] == pytest.approx(spec), cls
        lo, hi = shipped["per_class_ci95"][cls]["sensitivity"]
        assert lo <= sens <= hi

    # `edgexray bench --test-data` scores the artifact the same way, through run.py or a host runner
    runtime = {".tflite": "litert", ".onnx": "onnxruntime-cpu"}[Path(manifest["model"]["file"]).suffix]

    def bench(flag: str, extra: list) -> dict:
        args = ["bench", str(folder), flag, manifest["external"]["data"], "--runs", "2", "--no-memory"]
        r = CliRunner().invoke(main, [*args, *extra])
        assert r.exit_code == 0, r.output
        return json.loads(r.output)

    for extra in ([], ["--runtime", runtime]):
        ((label, b),) = bench("--test-data", extra)["external"]["models"].items()
        assert b["decision_rule"] == shipped["decision_rule"], label
        assert b["accuracy"] == pytest.approx(shipped["accuracy"], abs=1e-9), label
        assert b["per_class"][d["positive_class"]]["specificity"] == pytest.approx(
            shipped["per_class"][d["positive_class"]]["specificity"]
        ), label
        # and its --data figures are those of the labels run.py predict prints
        acc = bench("--data", extra)["results"][0]["accuracy"]["metrics"]
        assert acc["decision_rule"] == shipped["decision_rule"], extra
        assert acc["accuracy"] == pytest.approx(shipped["accuracy"], abs=1e-9), extra


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--positive-class", "nope", "--target-sensitivity", "0.9"], "is not a class of this model"),
        (["--positive-class", "x", "--target-sensitivity", "1.5"], "must be in (0, 1]"),
        (["--target-sensitivity", "0.9"], "go together"),
    ],
)
def test_operating_point_options_are_checked(tiny_run, tmp_path, extra, message):
    data, ckpt = tiny_run
    r = CliRunner().invoke(
        main,
        [
            "build",
            "--target",
            "x86-64",
            "--checkpoint",
            str(ckpt),
            "--data",
            str(data),
            "--out",
            str(tmp_path),
            *TINY,
            *extra,
        ],
    )
    assert r.exit_code == 2 and message in r.output, r.output


def test_warnings_are_in_manifest_summary_and_report(calibrated_build):
    import html

    from edgexray.review import models2warnings

    manifest, output, folder = calibrated_build
    assert manifest["warnings"] == models2warnings(manifest["models"])
    assert manifest["warnings"]  # the 3-epoch 32 px model misses classes: the banner shows
    report = (folder / "report.html").read_text()
    for w in manifest["warnings"]:
        assert any(line.startswith("WARNING") and line.endswith(w) for line in output.splitlines())
        assert html.escape(w) in report
