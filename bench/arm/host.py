"""Host checks: can this host verify (x86-64 Linux, QEMU, debootstrap, root, network), and the
tools it runs."""

from __future__ import annotations

import datetime
import logging
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from edgexray.runtime.errors import EdgeXrayError
from edgexray.runtime.registry import manifest_runtimes

if TYPE_CHECKING:
    from edgexray.bench.arm.cache import ArmCache

log = logging.getLogger(__name__)

DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


def check_host(runtime: str, version: str, cache: ArmCache) -> None:
    """Raise EdgeXrayError saying why this host cannot verify `runtime` with `cache`."""
    if runtime not in manifest_runtimes():
        raise EdgeXrayError(
            f"ARM verification supports the runtimes {', '.join(manifest_runtimes())}; "
            f"this artifact uses {runtime!r}"
        )
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise EdgeXrayError(
            f"ARM verification needs an x86-64 Linux host (user-mode QEMU); this is "
            f"{sys.platform}/{platform.machine()}; run the artifact's run.py on "
            "the device instead"
        )
    new_userland = not cache.rootfs_dir.is_dir()
    missing_tools = (
        which("qemu-aarch64-static") is None
        or new_userland
        and (which("debootstrap") is None or not Path(DEBIAN_KEYRING).is_file())
    )
    if (missing_tools or new_userland) and os.geteuid() != 0:
        what = (
            "install qemu-user-static and debootstrap"
            if missing_tools
            else "lay out the arm64 userland with debootstrap"
        )
        raise EdgeXrayError(
            f"ARM verification must {what}, which needs root; this is uid "
            f"{os.geteuid()}. Run it once as root (sudo edgexray verify ARTIFACT "
            f"--cache-dir {cache.root}); later runs need no root"
        )
    if missing_tools and shutil.which("apt-get") is None:
        raise EdgeXrayError(
            "ARM verification needs qemu-user-static and debootstrap, and this "
            "host has no apt-get to install them; install them with the system's "
            "package manager"
        )
    if new_userland:
        host = DEBIAN_MIRROR.split("/")[2]
        try:
            socket.create_connection((host, 80), timeout=5).close()
        except OSError as e:
            raise EdgeXrayError(
                f"ARM verification downloads an arm64 Debian userland from "
                f"{DEBIAN_MIRROR}, which is not reachable from here ({e}); connect "
                f"to the network once to fill the cache {cache.root}"
            ) from None


def which(exe: str) -> str | None:
    """shutil.which, also looking in /usr/sbin and /sbin (not on a normal user's PATH)."""
    return shutil.which(exe) or shutil.which(exe, path="/usr/sbin:/sbin")


def ensure_host_tools(for_userland: bool = True) -> None:
    """qemu-user-static (and, to lay out the userland, debootstrap and Debian's keyring),
    installed with apt-get when missing (needs root)."""
    wanted = {"qemu-user-static": which("qemu-aarch64-static")}
    if for_userland:  # the keyring: e.g. Ubuntu, where debootstrap checks Debian's signatures
        wanted.update(
            {
                "debootstrap": which("debootstrap"),
                "debian-archive-keyring": Path(DEBIAN_KEYRING).is_file() or None,
            }
        )
    missing = [package for package, found in wanted.items() if not found]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise EdgeXrayError(
            f"ARM verification needs {' and '.join(missing)}; they are not "
            f"installed and this process cannot apt-get install them (uid "
            f"{os.geteuid()}); run: sudo apt-get install {' '.join(missing)}"
        )
    log.info("installing %s with apt-get", " ".join(missing))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    wait = ["-o", "DPkg::Lock::Timeout=600"]  # another apt-get (a user's, a test's) may hold the lock
    install = ["apt-get", *wait, "install", "-y", "-q", "--no-install-recommends", *missing]
    what = "apt-get (installing " + " ".join(missing) + ")"
    t0 = time.monotonic()
    if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode != 0:
        run_command(["apt-get", *wait, "update", "-q"], env=env, what="apt-get update", timeout=900)
        run_command(install, env=env, what=what, timeout=900)  # package lists were missing or stale
    log.info("installed %s in %.0f s", " ".join(missing), time.monotonic() - t0)


def host_version(package: str) -> str | None:
    """The version of `package` installed on this host (None: not installed)."""
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def run_command(
    cmd: list[str], what: str, timeout: float, env: dict | None = None, cwd=None
) -> subprocess.CompletedProcess:
    """Run `cmd`; a timeout, a missing program or a non-zero exit raise EdgeXrayError naming `what`."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise EdgeXrayError(f"{what} did not finish within {timeout:.0f} s") from None
    except FileNotFoundError as e:
        raise EdgeXrayError(f"{what}: {e.filename} is not installed") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-2000:]
        raise EdgeXrayError(f"{what} failed with exit status {proc.returncode}:\n{tail}")
    return proc
