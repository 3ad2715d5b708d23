"""A sealed artifact refuses to run when anything in it changed: every tamper case through all
five entry points (run.py verify / predict / bench, edgexray bench, edgexray verify), exit 3.

One tiny sealed artifact per module (model_factories.make_artifact, the bundle's seal); each
case changes a copy. run.py is the rendered file of that artifact, loaded once and called
in-process with --dir (the seal is read from the copy's own run.py file).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner
from model_factories import CLASSES

from edgexray.bench.local import parse_run_py_output
from edgexray.cli import main as edgexray_main
from edgexray.runtime.errors import IntegrityError


def _png(path: Path, width: int, height: int, pixels: bytes | None = None) -> Path:
    """A grayscale 8-bit PNG; with pixels=None only a tiny IDAT (enough for a header-only bomb)."""

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    raw = pixels if pixels is not None else b"\0" * (width + 1)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture(scope="module")
def run_py(int8_artifact):
    """The artifact's rendered run.py as a module: main(argv) -> exit status."""
    spec = importlib.util.spec_from_file_location("sealed_run_py", int8_artifact / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    size = 40
    return _png(
        tmp_path_factory.mktemp("img") / "x.png",
        size,
        size,
        b"".join(b"\0" + bytes((i * 7 + j) % 256 for j in range(size)) for i in range(size)),
    )


def _edit_manifest(change):
    def tamper(art: Path):
        path = art / "manifest.json"
        manifest = json.loads(path.read_text())
        change(manifest)
        path.write_text(json.dumps(manifest, indent=2) + "\n")

    return tamper


def _flip_byte(name: str):
    def tamper(art: Path):
        data = bytearray((art / name).read_bytes())
        data[len(data) // 2] ^= 0x01
        (art / name).write_bytes(bytes(data))

    return tamper


def _append(name: str, text: str):
    def tamper(art: Path):
        with open(art / name, "a", encoding="utf-8") as f:
            f.write(text)

    return tamper


def _swap_labels_everywhere(art: Path):
    """Labels and class_names both reversed, the manifest's hash of labels.txt fixed up: only the
    seal in run.py can tell."""
    (art / "labels.txt").write_text("".join(f"{c}\n" for c in reversed(CLASSES)))
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["class_names"] = list(reversed(CLASSES))
    data = (art / "labels.txt").read_bytes()
    manifest["files"]["labels.txt"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (art / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def _model_name(art: Path) -> str:
    return json.loads((art / "manifest.json").read_text())["model"]["file"]


# case -> (tamper, what the error line must name)
CASES = {
    "swapped_class_names": (
        _edit_manifest(lambda m: m["class_names"].reverse()),
        ["manifest.json was edited", "differ from labels.txt"],
    ),
    "threads": (_edit_manifest(lambda m: m.update(threads=8)), ["manifest.json was edited"]),
    "preprocess_mean": (
        _edit_manifest(lambda m: m["preprocess"].update(mean=[0.4])),
        ["manifest.json was edited"],
    ),
    "output_scale": (
        _edit_manifest(
            lambda m: m["output"]["quantization"].update(scale=m["output"]["quantization"]["scale"] * 2)
        ),
        ["manifest.json was edited"],
    ),
    "whitespace_only": (_append("manifest.json", " "), ["manifest.json was edited"]),
    "replaced_labels": (
        lambda art: (art / "labels.txt").write_text("A\nB\n"),
        ["labels.txt: ", "differ from labels.txt"],
    ),
    "labels_and_class_names_swapped": (_swap_labels_everywhere, ["manifest.json was edited"]),
    "model_byte": (lambda art: _flip_byte(_model_name(art))(art), ["tiny_int8.tflite: sha256"]),
    "run_py_edited": (_append("run.py", "\n# edited\n"), ["run.py: sha256"]),
    "run_py_seal_removed": (
        lambda art: (art / "run.py").write_text(
            (art / "run.py").read_text().replace("MANIFEST_SHA256 = '", "MANIFEST_SHA256 = None  # '")
        ),
        ["holds no MANIFEST_SHA256 seal"],
    ),
    "checksums_missing": (lambda art: (art / "checksums.sha256").unlink(), ["checksums.sha256: missing"]),
    "labels_missing": (lambda art: (art / "labels.txt").unlink(), ["labels.txt: missing"]),
}


@pytest.fixture(scope="module")
def tampered(int8_artifact, tmp_path_factory):
    """{case: a tampered copy of the artifact}, made once."""
    root = tmp_path_factory.mktemp("tampered")
    copies = {}
    for name, (tamper, _) in CASES.items():
        copies[name] = root / name
        shutil.copytree(int8_artifact, copies[name])
        tamper(copies[name])
    return copies


def _assert_refused(code: int, err: str, case: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 3, (case, err)
    assert len(lines) == 1 and "Traceback" not in err, (case, err)
    for part in CASES[case][1]:
        assert part in lines[0], (case, part, lines[0])
    assert "rebuild the artifact" in lines[0] and "restore" in lines[0]


def test_the_untouched_artifact_verifies(int8_artifact, run_py, capsys):
    assert run_py.main(["--dir", str(int8_artifact), "verify"]) == 0
    out = capsys.readouterr().out
    assert "OK: 2 files match manifest.json" in out and "labels.txt equals class_names" in out
    check = subprocess.run(
        ["sha256sum", "-c", "--strict", "checksums.sha256"], cwd=int8_artifact, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("case", sorted(CASES))
def test_run_py_refuses_a_tampered_artifact(case, tampered, run_py, image, tmp_path, capsys):
    art = tampered[case]
    out = tmp_path / "r.json"
    for args in (
        ["verify"],
        ["predict", str(image)],
        ["bench", "--runs", "1", "--no-memory", "--out", str(out)],
    ):
        capsys.readouterr()
        code = run_py.main(["--dir", str(art), *args])
        captured = capsys.readouterr()
        _assert_refused(code, captured.err, case)
        assert captured.out == "", (case, args)
    assert not out.exists()


@pytest.mark.parametrize("command", ["bench", "verify"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_edgexray_refuses_a_tampered_artifact(case, command, tampered):
    art = tampered[case]
    before = {p.name: p.read_bytes() for p in art.iterdir()}
    args = [command, str(art)] + (["--runs", "1", "--no-memory"] if command == "bench" else [])
    result = CliRunner().invoke(edgexray_main, args)
    _assert_refused(result.exit_code, result.output, case)
    assert {p.name: p.read_bytes() for p in art.iterdir()} == before  # nothing written, re-sealed


def test_sha256sum_catches_a_manifest_edit(tampered):
    check = subprocess.run(
        ["sha256sum", "-c", "--quiet", "checksums.sha256"],
        cwd=tampered["swapped_class_names"],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 1 and "manifest.json: FAILED" in check.stdout


def test_run_py_refusal_on_the_device_is_an_integrity_error():
    proc = subprocess.CompletedProcess(
        ["run.py"],
        3,
        "",
        "error: artifact 'a' failed its integrity check, refusing to run: manifest.json: sha256 ...",
    )
    with pytest.raises(IntegrityError, match="run.py on pi@host: artifact 'a' failed its integrity"):
        parse_run_py_output(proc, "pi@host", None)


def test_predict_refuses_a_decompression_bomb(int8_artifact, run_py, tmp_path, capsys):
    pytest.importorskip("PIL")
    bomb = _png(tmp_path / "bomb.png", 20000, 20000)  # 4e8 pixels: over twice Pillow's limit
    code = run_py.main(["--dir", str(int8_artifact), "predict", str(bomb)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: could not read image")
    assert "bomb.png" in lines[0] and "exceeds limit" in lines[0]


def _zip_beside(folder: Path, dest_dir: Path) -> Path:
    """FOLDER.zip in dest_dir holding FOLDER/..., as the bundle writes it."""
    archive = dest_dir / f"{folder.name}.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted(folder.iterdir()):
            z.write(p, f"{folder.name}/{p.name}")
    return archive


def test_the_error_names_the_edited_fields_when_the_zip_is_beside(int8_artifact, run_py, tmp_path, capsys):
    art = tmp_path / int8_artifact.name
    shutil.copytree(int8_artifact, art)
    _zip_beside(art, tmp_path)
    _edit_manifest(lambda m: (m["class_names"].reverse(), m["preprocess"].update(std=[0.3])))(art)
    assert run_py.main(["--dir", str(art), "verify"]) == 3
    assert "changed: class_names, preprocess.std)" in capsys.readouterr().err
    _edit_manifest(lambda m: (m["class_names"].reverse(), m["preprocess"].update(std=[0.25])))(art)
    (art / "manifest.json").write_text(json.dumps(json.loads((art / "manifest.json").read_text())))
    assert run_py.main(["--dir", str(art), "verify"]) == 3
    assert "formatting only" in capsys.readouterr().err


def test_bench_takes_an_artifact_zip_and_explains_other_files(int8_artifact, tmp_path):
    archive = _zip_beside(int8_artifact, tmp_path)
    result = CliRunner().invoke(edgexray_main, ["bench", str(archive), "--runs", "2", "--no-memory"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["results"][0]["latency_ms"]["runs"] == 2

    not_zip = tmp_path / "x.zip"
    not_zip.write_bytes(b"not a zip")
    result = CliRunner().invoke(edgexray_main, ["bench", str(not_zip)])
    assert result.exit_code == 2 and "cannot tell how to run" in result.output
    assert "unknown runtime" not in result.output and "Traceback" not in result.output
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("a/readme.txt", "hi")
    result = CliRunner().invoke(edgexray_main, ["bench", str(empty)])
    assert result.exit_code == 2 and "holds 0 artifacts" in result.output
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../escape/manifest.json", "{}")
    result = CliRunner().invoke(edgexray_main, ["bench", str(evil)])
    assert result.exit_code == 2 and "outside its folder" in result.output
    assert not (tmp_path.parent / "escape").exists()


def test_bench_timeout_is_an_option(int8_artifact):
    result = CliRunner().invoke(
        edgexray_main, ["bench", str(int8_artifact), "--timeout", "0.01", "--runs", "1", "--no-memory"]
    )
    assert result.exit_code == 2 and "did not finish within" in result.output
    assert "raise --timeout" in result.output and "Traceback" not in result.output
