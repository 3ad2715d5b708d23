"""An artifact's integrity: the seal in run.py, checksums.sha256, manifest "files" and labels.txt.

What is checked and why is at the top of runtime/run_py.py (run.py's own docstring).
checked_manifest() is the manifest of an intact artifact, IntegrityError otherwise.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from pathlib import Path

from edgexray.runtime.errors import IntegrityError
from edgexray.runtime.manifest import MANIFEST_NAME, manifest_problems, read_manifest, safe_relpath

CHECKSUMS_NAME = "checksums.sha256"
LABELS_NAME = "labels.txt"
RUN_PY_NAME = "run.py"
# the seal is read from the artifact's run.py file, so run.py and the host check it alike
SEAL_PATTERN = re.compile(r"^MANIFEST_SHA256 = '([0-9a-f]{64})'$", re.M)
FIX_HINT = (
    "restore the changed files from the artifact's .zip or an untouched copy, or rebuild "
    "the artifact with `edgexray build`"
)


def sha256_of(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_files(folder, manifest) -> list:
    """Files of manifest "files" that are missing or differ from it."""
    folder = Path(folder)
    problems = []
    for name, info in sorted(manifest["files"].items()):
        path = folder / name
        if not path.is_file():
            problems.append(f"{name}: missing")
            continue
        size = path.stat().st_size
        if size != info["bytes"]:
            problems.append(f"{name}: {size} bytes, manifest says {info['bytes']}")
            continue
        digest = sha256_of(path)
        if digest != info["sha256"]:
            problems.append(f"{name}: sha256 {digest[:16]}..., manifest says {info['sha256'][:16]}...")
    return problems


def seal_problems(folder) -> list:
    """manifest.json against the sha256 sealed into the artifact's run.py ([] when equal)."""
    folder = Path(folder)
    run_py = folder / RUN_PY_NAME
    if not run_py.is_file():
        return [f"{RUN_PY_NAME}: missing"]
    found = SEAL_PATTERN.search(run_py.read_text(encoding="utf-8", errors="replace"))
    if not found:
        return [
            f"{RUN_PY_NAME} holds no MANIFEST_SHA256 seal (edited, or written by an edgexray "
            "older than the seal)"
        ]
    digest = sha256_of(folder / MANIFEST_NAME)
    if digest != found.group(1):
        return [
            f"{MANIFEST_NAME}: sha256 {digest[:16]}..., {RUN_PY_NAME} was sealed with "
            f"{found.group(1)[:16]}... (manifest.json was edited after the build"
            f"{_changed_fields(folder, found.group(1))})"
        ]
    return []


def _changed_fields(folder: Path, sealed: str) -> str:
    """', changed: a, b.c' against the sealed manifest in the artifact's .zip beside the folder,
    when that zip is there and holds it; '' otherwise."""
    try:
        with zipfile.ZipFile(folder.parent / f"{folder.name}.zip") as z:
            original = z.read(f"{folder.name}/{MANIFEST_NAME}")
        if hashlib.sha256(original).hexdigest() != sealed:
            return ""
        old = json.loads(original.decode("utf-8"))
        new = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return ""
    if not isinstance(new, dict):
        return ", changed: the whole file"
    changed = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            changed.append(key)
    return f", changed: {', '.join(changed)}" if changed else ", formatting only"


def checksum_problems(folder, skip=()) -> tuple:
    """-> (problems, listed names) of checksums.sha256 (sha256sum format). Files in `skip` are
    left to another check, so that each file is named once."""
    folder = Path(folder)
    path = folder / CHECKSUMS_NAME
    if not path.is_file():
        return [f"{CHECKSUMS_NAME}: missing"], set()
    problems, listed = [], set()
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        found = re.fullmatch(r"([0-9a-f]{64}) [ *](.+)", line)
        if not found or not safe_relpath(found.group(2)):
            problems.append(f"{CHECKSUMS_NAME} line {number} is not '<sha256>  <relative path>'")
            continue
        want, name = found.groups()
        listed.add(name)
        if name in skip:
            continue
        if not (folder / name).is_file():
            problems.append(f"{name}: missing")
            continue
        digest = sha256_of(folder / name)
        if digest != want:
            problems.append(f"{name}: sha256 {digest[:16]}..., {CHECKSUMS_NAME} says {want[:16]}...")
    problems += [
        f"{CHECKSUMS_NAME} does not list {name}"
        for name in (MANIFEST_NAME, RUN_PY_NAME)
        if name not in listed
    ]
    return problems, listed


def labels_problems(folder, manifest: dict) -> list:
    """labels.txt must equal class_names line by line (predictions use class_names)."""
    path = Path(folder) / LABELS_NAME
    if not path.is_file():
        return [f"{LABELS_NAME}: missing"]
    labels = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if labels != manifest["class_names"]:
        return [
            f"class_names {manifest['class_names']} in {MANIFEST_NAME} differ from "
            f"{LABELS_NAME} {labels} (predictions would carry the wrong labels)"
        ]
    return []


def integrity_problems(folder) -> tuple:
    """-> (problems, unlisted files, manifest or None): everything that breaks the artifact's
    integrity (see the top of this file) and the files nothing lists."""
    folder = Path(folder)
    if not (folder / MANIFEST_NAME).is_file():
        read_manifest(folder)  # raises: not an artifact folder
    problems = seal_problems(folder)
    if problems:  # still name what else differs, where the edited manifest can be read
        try:
            manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            return problems, [], None
        if manifest_problems(manifest):
            return problems, [], None
    else:
        manifest = read_manifest(folder)  # sealed but invalid: a bad build, exit 2 as before
    skip = set(manifest["files"]) | ({MANIFEST_NAME} if problems else set())
    sum_problems, listed = checksum_problems(folder, skip)
    problems += sum_problems + verify_files(folder, manifest) + labels_problems(folder, manifest)
    known = listed | set(manifest["files"]) | {CHECKSUMS_NAME, MANIFEST_NAME, RUN_PY_NAME}
    unlisted = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.relative_to(folder).as_posix() not in known
    )
    return problems, unlisted, manifest


def integrity_error(folder, problems: list) -> IntegrityError:
    return IntegrityError(
        f"artifact {str(folder)!r} failed its integrity check, refusing to run: "
        + "; ".join(problems)
        + f"; {FIX_HINT}"
    )


def checked_manifest(folder) -> dict:
    """The manifest of an artifact whose integrity holds; IntegrityError otherwise."""
    problems, _, manifest = integrity_problems(folder)
    if problems:
        raise integrity_error(folder, problems)
    return manifest
