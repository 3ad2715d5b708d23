"""Atomic writes and the rule that nothing the user has is overwritten without --force."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from edgexray.errors import EdgeXrayError

# mkstemp/mkdtemp create private (0600/0700) entries; results get the user's usual permissions.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE, DIR_MODE = 0o666 & ~_UMASK, 0o777 & ~_UMASK


def refuse_existing(path: str | os.PathLike, force: bool, what: str = "output") -> None:
    """Raise unless `path` is absent, an empty directory, or `force` is set."""
    p = Path(path)
    if force or not p.exists():
        return
    if p.is_dir() and not any(p.iterdir()):
        return
    raise EdgeXrayError(f"{what} {str(p)!r} already exists and would be overwritten; "
                        "choose another path or pass --force")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def replace_dir(tmp_dir: str | os.PathLike, final_dir: str | os.PathLike, force: bool) -> Path:
    """Move a finished directory into place; the final path appears complete or not at all."""
    tmp_dir, final_dir = Path(tmp_dir), Path(final_dir)
    refuse_existing(final_dir, force)
    os.chmod(tmp_dir, DIR_MODE)
    if final_dir.exists():
        trash = final_dir.with_name(f".{final_dir.name}.old-{os.getpid()}")
        os.replace(final_dir, trash)
        os.replace(tmp_dir, final_dir)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp_dir, final_dir)
    return final_dir


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_dir(*parts: str) -> Path:
    """The user's cache directory for edgexray ($XDG_CACHE_HOME/edgexray or ~/.cache/edgexray)."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgexray"
    return root.joinpath(*parts)
