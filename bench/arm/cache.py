"""The cache of the arm64 userland (one per Debian suite) and the aarch64 wheels (one per runtime
version), each built once in a temporary folder and renamed into place under a lock."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from edgexray.bench.arm.host import (
    DEBIAN_KEYRING,
    DEBIAN_MIRROR,
    ensure_host_tools,
    run_command,
    utc_now,
    which,
)
from edgexray.fsutil import atomic_write_json
from edgexray.runtime.errors import EdgeXrayError
from edgexray.runtime.registry import runtime_for_manifest

log = logging.getLogger(__name__)

SUITE = "bookworm"  # Debian release of the guest userland (Python 3.11, like Raspberry Pi OS 12)
CACHE_FORMAT = 1  # bump when the cache layout changes; older caches are rebuilt
NUMPY_VERSION = "1.26.4"


def default_cache_dir() -> Path:
    """~/.cache/edgexray/arm64, or under XDG_CACHE_HOME when set."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgexray" / "arm64"


@dataclass(frozen=True)
class ArmCache:
    """Where the userland (one per Debian suite) and the wheels (one per runtime version) live."""

    root: Path | None = None  # the cache folder; None: ~/.cache/edgexray/arm64 (XDG_CACHE_HOME)
    suite: str = SUITE  # Debian suite of the userland

    def __post_init__(self):
        root = Path(self.root).expanduser() if self.root else default_cache_dir()
        object.__setattr__(self, "root", root)

    @property
    def rootfs_dir(self) -> Path:
        return self.root / f"{self.suite}-rootfs"

    def site_dir(self, runtime: str, version: str) -> Path:
        return self.root / f"{self.suite}-{runtime_for_manifest(runtime).package}-{version}"

    def ensure_rootfs(self) -> Path:
        return build_once(self.rootfs_dir, lambda tmp: _build_rootfs(tmp, self.suite))

    def ensure_site(self, runtime: str, version: str) -> Path:
        rootfs = self.ensure_rootfs()
        py = guest_python_version(rootfs)
        return build_once(self.site_dir(runtime, version), lambda tmp: _build_site(tmp, runtime, version, py))


def build_once(final: Path, build) -> Path:
    """Build `final` with build(tmp_dir) unless present; atomic, and safe when runs race."""
    stamp = final / "edgexray-cache.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("format") == CACHE_FORMAT:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f".{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a racing run waits here, then finds the cache built
        if stamp.is_file() and json.loads(stamp.read_text()).get("format") == CACHE_FORMAT:
            return final
        for stale in final.parent.glob(f".{final.name}.tmp-*"):  # left by a killed run
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
        try:
            t0 = time.monotonic()
            tmp.chmod(0o755)  # mkdtemp makes it private; a shared --cache-dir serves every user
            build(tmp)
            atomic_write_json(
                tmp / stamp.name,
                {"format": CACHE_FORMAT, "built": utc_now(), "seconds": round(time.monotonic() - t0, 1)},
            )
            (tmp / stamp.name).chmod(0o644)
            if final.exists():  # an outdated format: moved aside, then dropped
                old = final.with_name(f".{final.name}.old-{os.getpid()}")
                os.replace(final, old)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(tmp, final)
            log.info("cached %s in %.0f s", final, time.monotonic() - t0)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _build_rootfs(dest: Path, suite: str) -> None:
    ensure_host_tools()
    log.info("laying out the arm64 %s userland in %s (about 250 MB)", suite, dest)
    cmd = [
        which("debootstrap") or "debootstrap",
        "--arch=arm64",
        "--variant=minbase",
        "--foreign",
        "--include=python3",
        f"--keyring={DEBIAN_KEYRING}",
        suite,
        str(dest),
        DEBIAN_MIRROR,
    ]
    run_command(cmd, what=f"debootstrap (downloading the arm64 userland from {DEBIAN_MIRROR})", timeout=1800)
    archives = dest / "var/cache/apt/archives"
    debs = sorted(archives.glob("*.deb"))
    if not debs:
        raise EdgeXrayError(f"debootstrap downloaded no packages into {archives}")
    from tqdm import tqdm  # host-only module: tqdm is there, the device never imports this

    for deb in tqdm(debs, desc="unpacking arm64 packages", unit="deb", file=sys.stderr):
        # no maintainer scripts, no emulation: just the files
        run_command(["dpkg", "-x", str(deb), str(dest)], what=f"dpkg -x {deb.name}", timeout=300)
        deb.unlink()
    shutil.rmtree(dest / "debootstrap", ignore_errors=True)
    version = guest_python_version(dest)
    _precompile(dest / "usr/lib" / f"python{version}", version)


def _build_site(dest: Path, runtime: str, version: str, py_version: str) -> None:
    package = runtime_for_manifest(runtime).package
    abi = "cp" + py_version.replace(".", "")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-input",
        "--target",
        str(dest),
        "--only-binary=:all:",
        "--python-version",
        py_version,
        "--implementation",
        "cp",
        "--abi",
        abi,
        "--platform",
        "manylinux_2_28_aarch64",
        "--platform",
        "manylinux_2_27_aarch64",
        "--platform",
        "manylinux2014_aarch64",
        f"numpy=={NUMPY_VERSION}",
        f"{package}=={version}",
    ]
    log.info("downloading aarch64 wheels: numpy==%s %s==%s", NUMPY_VERSION, package, version)
    run_command(
        cmd,
        what=f"pip (aarch64 wheels of numpy=={NUMPY_VERSION} and {package}=={version}; "
        "is the package index reachable and does that version exist for aarch64?)",
        timeout=1800,
    )
    _precompile(dest, py_version)


def _precompile(folder: Path, py_version: str) -> None:
    """Byte-compile with the host's Python when it is the guest's version: the guest would
    otherwise recompile every import under emulation on every run (pyc files are portable)."""
    if f"{sys.version_info[0]}.{sys.version_info[1]}" != py_version:
        return
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-j", "0", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )


def guest_python_version(rootfs: Path) -> str:
    """ "3.11" from the userland's /usr/bin/python3.X."""
    found = sorted(
        p.name for p in (rootfs / "usr/bin").glob("python3.*") if re.fullmatch(r"python3\.\d+", p.name)
    )
    if not found:
        raise EdgeXrayError(f"the arm64 userland {rootfs} has no python3; delete it so it is rebuilt")
    return found[-1][len("python") :]
