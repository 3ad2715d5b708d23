"""Atomic writes and the rule that nothing the user has is overwritten without --force."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edgexray.runtime.errors import EdgeXrayError

# mkstemp/mkdtemp create private (0600/0700) entries; results get the user's usual permissions.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE, DIR_MODE = 0o666 & ~_UMASK, 0o777 & ~_UMASK


def refuse_existing(path: str | os.PathLike, force: bool, what: str = "output", folder: bool = False) -> None:
    """Raise unless `path` is absent, an empty directory, or `force` is set. A `folder` output
    is refused over a file even with `force`: --force replaces folders, never a user's file."""
    p = Path(path)
    if folder and (p.is_symlink() or p.exists()) and not p.is_dir():
        raise EdgeXrayError(
            f"{what} {str(p)!r} is a file, not a folder; choose another path "
            "(--force replaces an existing folder, never a file)"
        )
    if force or not p.exists():
        return
    if p.is_dir() and not any(p.iterdir()):
        return
    raise EdgeXrayError(
        f"{what} {str(p)!r} already exists and would be overwritten; choose another path or pass --force"
    )


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
    refuse_existing(final_dir, force, folder=True)  # --force replaces a folder, never a file
    os.chmod(tmp_dir, DIR_MODE)
    if final_dir.exists():
        trash = final_dir.with_name(f".{final_dir.name}.old-{os.getpid()}")
        os.replace(final_dir, trash)
        os.replace(tmp_dir, final_dir)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp_dir, final_dir)
    return final_dir


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_dead_entries(parent: str | os.PathLike, prefix: str) -> None:
    """Remove the entries `<prefix><pid>-*` of `parent` whose process is gone: work folders and
    files that a killed run (SIGKILL, power loss) could not clean up itself."""
    for p in Path(parent).glob(f"{glob.escape(prefix)}*"):
        pid = p.name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def partial_prefix(final: str | os.PathLike) -> str:
    """The name prefix of this process's work entries for `final` (see remove_stale_partials)."""
    return f".{Path(final).name}.partial-{os.getpid()}-"


def remove_stale_partials(final: str | os.PathLike) -> None:
    """Remove work entries of `final` left by killed runs (their pid is gone)."""
    final = Path(final)
    remove_dead_entries(final.parent, f".{final.name}.partial-")


def _merge_into(src: Path, dst: Path) -> None:
    """Move every entry of `src` into the existing folder `dst`, replacing same-named ones;
    other entries of `dst` (files the user keeps there) stay."""
    for entry in sorted(src.iterdir()):
        target = dst / entry.name
        if target.is_dir() and not target.is_symlink():
            trash = dst / f".{entry.name}.old-{os.getpid()}"
            os.replace(target, trash)
            os.replace(entry, target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(entry, target)


@contextlib.contextmanager
def staged_dir(
    final_dir: str | os.PathLike, force: bool, what: str = "output folder", merge: bool = False
) -> Iterator[Path]:
    """A hidden work folder next to `final_dir`, moved into place when the block succeeds and
    removed when it fails, so a failed or killed run leaves nothing that blocks the next one.

    `merge` (with `force`) moves the results into an existing folder entry by entry instead of
    replacing the whole folder. An unwritable location is an EdgeXrayError.
    """
    final_dir = Path(os.path.abspath(final_dir))  # "." has no name to derive the work folder from
    refuse_existing(final_dir, force, what, folder=True)
    try:
        final_dir.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(final_dir)
        tmp = Path(tempfile.mkdtemp(dir=final_dir.parent, prefix=partial_prefix(final_dir)))
    except OSError as e:
        raise EdgeXrayError(
            f"cannot write the {what} {str(final_dir)!r}: {e.strerror or e}; "
            "choose a writable location (e.g. --out under your home folder)"
        ) from None
    try:
        yield tmp
        if merge and final_dir.is_dir():
            refuse_existing(final_dir, force, what, folder=True)
            os.chmod(tmp, DIR_MODE)
            _merge_into(tmp, final_dir)
        else:
            replace_dir(tmp, final_dir, force)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
