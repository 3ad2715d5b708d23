"""ARM verification: a real tiny INT8 artifact run under QEMU as Cortex-A72, against the host.

The slow tests prepare the arm64 userland and wheels in the user's cache on first use (needs
root and the package registries, about 2 minutes uncached; later runs reuse it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgexray.bench import arm
from edgexray.bench.arm import (
    ArmCache,
    arm_verification_available,
    compare_outputs,
    cpuinfo_text,
    synthetic_images,
    verify_artifact,
)
from edgexray.cli import main
from edgexray.devices import load_profile
from edgexray.export.bundle import model_io_spec, write_artifact, write_seal
from edgexray.fsutil import sha256_file
from edgexray.runtime.errors import EdgeXrayError
from edgexray.runtime.preprocess import Preprocess, decode_png, read_image_array

CHEST = Path(__file__).resolve().parents[3] / "shared/data/chest-xray-pneumonia/train"
CLASSES = ["normal", "pneumonia"]
PRE = Preprocess(size=32, channels=1, mean=(0.5,), std=(0.25,))


@pytest.fixture(scope="module")
def verified_artifact(tflite_pair, tmp_path_factory) -> Path:
    """The rpi4 artifact of model a, written by the bundle with verify_artifact as its check."""
    ok, why = arm_verification_available()
    if not ok:
        pytest.skip(f"this host cannot run ARM verification: {why}")
    out = tmp_path_factory.mktemp("artifacts")
    return write_artifact(
        out,
        target=load_profile("rpi4"),
        arch="aarch64",
        precision="int8",
        model_files={"int8": tflite_pair[0]},
        manifest_fields={},
        class_names=CLASSES,
        preprocess=PRE,
        images_are_synthetic=True,
        verify=lambda d: verify_artifact(d, real_images=REAL_IMAGES),
    )


# real chest X-rays (JPEG: the host decodes them for the guest, which has no Pillow) when present
REAL_IMAGES = [sorted((CHEST / c).glob("*.jpeg"))[0] for c in ("NORMAL", "PNEUMONIA") if (CHEST / c).is_dir()]


# ------------------------------------------------------------------------------ slow, real QEMU


@pytest.mark.slow
def test_tiny_int8_artifact_verifies_on_emulated_cortex_a72(verified_artifact):
    manifest = json.loads((verified_artifact / "manifest.json").read_text())
    result = manifest["arm_verification"]
    assert result["status"] == "passed", result["reason"]
    assert result["cpu"] == "cortex-a72" and result["midr_part"] == "0xd08"
    assert result["guest_machine"] == "aarch64"
    assert result["runtime"]["guest_version"] == result["runtime"]["host_version"] == "2.1.0"
    assert result["output_kind"] == "int" and result["real_images"] == len(REAL_IMAGES)
    # identical, or (another x86 CPU than the NEON kernels') at most kernel rounding, said so
    assert result["max_abs_diff"] <= arm.KERNEL_ROUNDING_STEPS
    assert result["kernel_rounding"] == (result["max_abs_diff"] > 0)
    assert ("within kernel rounding" in result["reason"]) == result["kernel_rounding"]
    assert set(result["checks"]) >= {
        "guest_is_aarch64",
        "same_ops",
        "xnnpack_applied",
        "outputs_match",
        "labels_match",
        "matches_reference",
        "same_inputs",
    }
    assert all(c["passed"] for c in result["checks"].values())
    assert result["emulated_seconds"]["note"] == "emulated, not device speed"
    reference = manifest["arm_reference"]
    assert reference["model_sha256"] == sha256_file(verified_artifact / "model.tflite")
    raws = [p["raw"] for p in reference["predictions"]]  # the synthetic inputs only
    assert len(raws) == arm.NUM_INPUTS and all(len(r) == 2 for r in raws)
    assert len({tuple(r) for r in raws}) > 1  # the inputs really differ
    assert "ARM verification" in (verified_artifact / "report.html").read_text()
    # the bundle's own integrity check still holds after the manifest was updated
    check = subprocess.run(
        [sys.executable, "run.py", "verify"], cwd=verified_artifact, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr


@pytest.mark.slow
def test_swapped_model_fails_verification(verified_artifact, tflite_pair, tmp_path):
    art = tmp_path / "swapped"
    shutil.copytree(verified_artifact, art)
    shutil.copyfile(tflite_pair[1], art / "model.tflite")
    # fix up the manifest (checksum, size, quantization) so that run.py accepts the new model:
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["files"]["model.tflite"] = {
        "sha256": sha256_file(art / "model.tflite"),
        "bytes": (art / "model.tflite").stat().st_size,
    }
    spec = model_io_spec(art / "model.tflite")
    manifest["input"], manifest["output"] = spec["input"], {**spec["output"], "kind": "logits"}
    (art / "manifest.json").write_text(json.dumps(manifest, indent=2))
    # the seal in run.py catches the edited manifest (integrity, exit 3) before anything runs
    refused = CliRunner().invoke(main, ["verify", str(art)])
    assert refused.exit_code == 3 and "manifest.json was edited" in refused.output
    # re-sealed as well (run.py and checksums.sha256 rewritten): only the comparison can catch it
    write_seal(art, manifest)
    check = subprocess.run([sys.executable, "run.py", "verify"], cwd=art, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr

    sealed = {p.name: p.read_bytes() for p in art.iterdir()}
    result = CliRunner().invoke(main, ["verify", str(art)])
    assert result.exit_code == 4, result.output  # CheckFailed
    assert {p.name: p.read_bytes() for p in art.iterdir() if p.name in sealed} == sealed
    stored = json.loads((art / "arm_verification.json").read_text())
    assert stored["status"] == "failed"
    checks = stored["checks"]
    assert not checks["matches_reference"]["passed"]
    assert "model file changed" in checks["matches_reference"]["detail"]
    assert checks["outputs_match"]["passed"] and checks["guest_is_aarch64"]["passed"]
    assert "matches_reference" in stored["reason"]


@pytest.mark.slow
def test_wrong_preprocessing_fails_verification(verified_artifact, tmp_path):
    """A sealed artifact whose pre-processing changed (another mean) runs the same on both
    sides, but its outputs leave the recorded reference by more than kernel rounding."""
    art = tmp_path / "wrong-pre"
    shutil.copytree(verified_artifact, art)
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["preprocess"]["mean"] = [0.2]
    write_seal(art, manifest)
    result = verify_artifact(art, write=False)
    assert result["status"] == "failed", result["reason"]
    checks = result["checks"]
    assert checks["same_inputs"]["passed"] and checks["outputs_match"]["passed"]
    assert not checks["matches_reference"]["passed"]
    assert "kernel rounding can explain" in checks["matches_reference"]["detail"]


# ------------------------------------------------------------------------------ fast


def test_cpuinfo_describes_the_core():
    text = cpuinfo_text("cortex-a76", cores=2)
    blocks = [b for b in text.split("\n\n") if b.strip()]
    assert len(blocks) == 2
    assert all("CPU implementer\t: 0x41" in b and "CPU part\t: 0xd0b" in b for b in blocks)
    assert "asimddp" in text and "asimddp" not in cpuinfo_text("cortex-a72")
    assert {k: v[0] for k, v in arm.CORES.items()} == {
        "cortex-a53": 0xD03,
        "cortex-a55": 0xD05,
        "cortex-a72": 0xD08,
        "cortex-a76": 0xD0B,
        "cortex-a78": 0xD41,
        "cortex-a78ae": 0xD42,
    }


def test_synthetic_images_are_deterministic_and_readable(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    first, second = synthetic_images(a), synthetic_images(b)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    assert {p.suffix for p in first} == {".png", ".npy"}
    arrays = [read_image_array(p) for p in first]
    native = [decode_png(p.read_bytes()) for p in first if p.suffix == ".png"]
    assert {str(x.dtype) for x in arrays} == {"uint8", "uint16"}
    assert any(x.ndim == 3 for x in arrays)  # an RGB one
    pil_png = [x for p, x in zip(first, arrays) if p.suffix == ".png"]
    assert all(np.array_equal(x, y) for x, y in zip(native, pil_png))  # our encoder is valid PNG
    assert len({x.shape[:2] for x in arrays}) > 1


def _preds(raws, labels):
    return [
        {"image": f"img{i}.png", "label": lab, "raw": raw} for i, (raw, lab) in enumerate(zip(raws, labels))
    ]


def test_compare_outputs_tells_kernel_rounding_from_a_fault():
    """Synthetic int8 outputs: XNNPACK's x86 and NEON kernels may differ by a quantization step."""
    rng = np.random.default_rng(0)
    host = rng.integers(-100, 100, size=(6, 2))
    labels = ["p" if r[1] > r[0] else "n" for r in host]
    a = _preds(host.tolist(), labels)
    same = compare_outputs(a, _preds(host.tolist(), labels))
    assert (same.passed, same.max_abs_diff, same.kind, same.rounding) == (True, 0.0, "int", False)
    assert same.detail.startswith("identical integer outputs over 6 images")

    off = host.copy()
    off[2, 0] += 1
    rounded = compare_outputs(a, _preds(off.tolist(), labels))
    assert (rounded.passed, rounded.max_abs_diff, rounded.rounding) == (True, 1.0, True)
    assert "within kernel rounding: max diff 1 step" in rounded.detail

    flipped = labels.copy()
    flipped[2] = "n" if labels[2] == "p" else "p"
    flip = compare_outputs(a, _preds(off.tolist(), flipped))
    assert (flip.passed, flip.max_abs_diff, flip.labels_match, flip.rounding) == (False, 1.0, False, False)
    assert "labels differ" in flip.detail

    far = host.copy()
    far[4, 1] -= 40  # a swapped model or wrong pre-processing moves outputs by far more
    fault = compare_outputs(a, _preds(far.tolist(), labels))
    assert (fault.passed, fault.max_abs_diff, fault.rounding) == (False, 40.0, False)
    assert "more than the 2 quantization steps" in fault.detail
    assert not compare_outputs(a, _preds((host + 3).tolist(), labels)).passed  # 3 steps: too many
    assert compare_outputs(a, _preds((host - 2).tolist(), labels)).rounding


def test_compare_outputs_float_tolerance_and_image_order():
    a = [{"image": "x.png", "label": "n", "raw": [3, -4]}]
    f = [{"image": "x.png", "label": "n", "raw": [0.25, 0.5]}]
    close = [{"image": "x.png", "label": "n", "raw": [0.25 + 5e-5, 0.5]}]
    far = [{"image": "x.png", "label": "n", "raw": [0.25 + 5e-3, 0.5]}]
    assert compare_outputs(f, close, 1e-4).passed and compare_outputs(f, close).kind == "float"
    assert not compare_outputs(f, far, 1e-4).passed
    other = compare_outputs(a, [{"image": "y.png", "label": "n", "raw": [3, -4]}], 1e-4)
    assert not other.passed and other.max_abs_diff == float("inf")


@pytest.mark.skipif(not REAL_IMAGES, reason="real chest X-rays not found")
def test_real_images_become_arrays_run_py_reads_without_pillow(tmp_path):
    bad = tmp_path / "broken.jpeg"
    bad.write_bytes(b"not an image")
    out = arm.inputs.real_inputs([*REAL_IMAGES, bad], tmp_path)
    assert [p.name for p in out] == [f"real_{i}.npy" for i in range(len(REAL_IMAGES))]
    for src, npy in zip(REAL_IMAGES, out):
        assert np.array_equal(np.load(npy, allow_pickle=False), read_image_array(src))


def test_cache_location_honours_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache = ArmCache()
    assert cache.rootfs_dir == tmp_path / "edgexray/arm64/bookworm-rootfs"
    assert cache.site_dir("litert", "2.1.0") == tmp_path / "edgexray/arm64/bookworm-ai-edge-litert-2.1.0"
    assert ArmCache(tmp_path / "mine").root == tmp_path / "mine"


def test_cache_build_is_atomic_and_runs_once_when_racing(tmp_path):
    final, calls, seen = tmp_path / "thing", [], []

    def build(tmp: Path):
        calls.append(tmp)
        (tmp / "half").write_text("1")
        threading.Event().wait(0.3)  # the other run arrives meanwhile
        assert not final.exists()  # nobody sees a half-built cache
        (tmp / "other").write_text("2")

    threads = [
        threading.Thread(target=lambda: seen.append(arm.cache.build_once(final, build))) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and seen == [final] * 3
    assert sorted(p.name for p in final.iterdir()) == ["edgexray-cache.json", "half", "other"]
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]

    def broken(tmp: Path):
        (tmp / "x").write_text("1")
        raise RuntimeError("download failed")

    with pytest.raises(RuntimeError):
        arm.cache.build_once(tmp_path / "broken", broken)
    assert not (tmp_path / "broken").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_availability_is_a_reason_not_an_exception():
    ok, why = arm_verification_available(runtime="torch")
    assert not ok and "torch" in why and "litert" in why
    ok, why = arm_verification_available()
    assert isinstance(ok, bool) and (ok or why)


def test_a_normal_user_is_told_why():
    """Without root, a missing userland cannot be laid out: a reason, never a crash."""
    with tempfile.TemporaryDirectory() as home:  # pytest's tmp_path is private to root
        os.chmod(home, 0o777)
        code = (
            "from edgexray.bench.arm import arm_verification_available as a; "
            f"print(repr(a(cache_dir={str(Path(home) / 'cache')!r})))"
        )
        cmd = [sys.executable, "-c", code]
        if os.geteuid() == 0:  # run it as a real unprivileged user
            if shutil.which("setpriv") is None:
                pytest.skip("setpriv (util-linux) is needed to drop root for this test")
            cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=home, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("(False, ") and "needs root" in out.stdout
    assert "sudo edgexray verify" in out.stdout


def test_cli_bad_input(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["verify", str(tmp_path)])
    assert result.exit_code == 2 and "no manifest.json" in result.output
    result = runner.invoke(main, ["verify", str(tmp_path), "--cpu", "cortex-a73"])
    assert result.exit_code == 2 and "cortex-a72" in result.output
    with pytest.raises(EdgeXrayError, match="unknown CPU core 'cortex-a7'.*cortex-a72"):
        arm.check_cpu("cortex-a7")


@pytest.mark.slow
def test_x86_target_is_skipped_not_passed(tflite_pair, tmp_path):
    art = write_artifact(
        tmp_path,
        target=load_profile("rpi4"),
        arch="aarch64",
        precision="int8",
        model_files={"int8": tflite_pair[0]},
        manifest_fields={},
        class_names=CLASSES,
        preprocess=PRE,
    )
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["profile"].update(arch="x86_64", cpu_core="x86-64-v3")
    (art / "manifest.json").write_text(json.dumps(manifest))
    result = verify_artifact(art)
    assert result["status"] == "skipped" and "x86_64" in result["reason"]
    assert json.loads((art / "manifest.json").read_text())["arm_verification"] == result
