"""The emulated machine: the target core's /proc/cpuinfo, QEMU's model of it, and a Guest that
runs the userland's python3 under qemu-aarch64-static."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgexray.bench.arm.cache import ArmCache, build_once, guest_python_version
from edgexray.bench.arm.host import check_host, ensure_host_tools, run_command, which
from edgexray.runtime.errors import EdgeXrayError, unknown_name

log = logging.getLogger(__name__)

DEFAULT_CPU = "cortex-a72"  # Raspberry Pi 4, the reference target
GUEST_TIMEOUT_S = 1800  # one emulated run.py call; emulation is 100-500x slower than native

# Core -> (MIDR part number, /proc/cpuinfo features as the Linux kernel prints them).
# Features follow what QEMU's model of the core advertises (AT_HWCAP); v8.2 cores add dotprod.
_V80 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"
_V82 = _V80 + " atomics fphp asimdhp asimdrdm lrcpc dcpop asimddp"
CORES = {
    "cortex-a53": (0xD03, _V80),
    "cortex-a55": (0xD05, _V82),
    "cortex-a72": (0xD08, _V80),
    "cortex-a76": (0xD0B, _V82),
    "cortex-a78": (0xD41, _V82),
    "cortex-a78ae": (0xD42, _V82),  # Jetson Orin
}
# QEMU 7.2 (Debian 12) has no model of these cores: emulate a core with the same instruction
# set extensions (ARMv8.2 + dot product) while /proc/cpuinfo still names the real core.
QEMU_STAND_IN = {"cortex-a55": "cortex-a76", "cortex-a78": "cortex-a76", "cortex-a78ae": "cortex-a76"}


def cpuinfo_text(cpu: str, cores: int = 4) -> str:
    """An arm64 /proc/cpuinfo as Linux prints it for `cores` cores of type `cpu`."""
    part, features = CORES[cpu]
    block = (
        "processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: {f}\nCPU implementer\t: 0x41\n"
        "CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0x{p:03x}\nCPU revision\t: 3\n\n"
    )
    return "".join(block.format(n=n, f=features, p=part) for n in range(cores))


@dataclass(frozen=True)
class Guest:
    """One emulated aarch64 machine: the cached userland and wheels, a per-run prefix."""

    qemu: str  # path of qemu-aarch64-static
    prefix: Path  # per-run library prefix: links to the userland plus an ARM /proc/cpuinfo
    python: Path  # the userland's python3.X (a host path)
    site: Path  # the aarch64 wheels (PYTHONPATH)
    cpu: str  # QEMU core model (the target core, or its stand-in)

    def command(self, args: list[str]) -> list[str]:
        return [self.qemu, "-L", str(self.prefix), "-cpu", self.cpu, str(self.python), *args]

    def env(self) -> dict:
        return {
            "PATH": "/usr/bin:/bin",
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(self.site),
            "PYTHONNOUSERSITE": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "QEMU_CPU": self.cpu,
            "QEMU_LD_PREFIX": str(self.prefix),
        }


@contextlib.contextmanager
def guest_machine(runtime: str, version: str, cpu: str, cache_dir=None, cores: int = 4):
    """Prepare (or reuse) the cache, then yield a Guest emulating `cpu`."""
    check_cpu(cpu)
    cache = ArmCache(cache_dir)
    check_host(runtime, version, cache)
    ensure_host_tools(for_userland=not cache.rootfs_dir.is_dir())  # one apt-get for all
    site = cache.ensure_site(runtime, version)
    rootfs = cache.rootfs_dir
    qemu = which("qemu-aarch64-static")
    model = qemu_model(qemu, cpu)
    python = rootfs / "usr/bin" / f"python{guest_python_version(rootfs)}"
    with _guest_prefix(cache, cpu, cores) as prefix:
        yield Guest(qemu=qemu, prefix=prefix, python=python, site=site, cpu=model)


@contextlib.contextmanager
def _guest_prefix(cache: ArmCache, cpu: str, cores: int):
    """The userland plus an ARM /proc/cpuinfo for `cpu` (QEMU reads the prefix's copy first).

    Cached once per core as a hard-link copy (no extra disk). A user who cannot write to the
    cache (one that root filled) gets a temporary copy made of symbolic links instead.
    """

    def hard_link_copy(tmp: Path) -> None:
        run_command(
            ["cp", "-al", f"{cache.rootfs_dir}/.", str(tmp)], what="linking the arm64 userland", timeout=600
        )
        (tmp / "edgexray-cache.json").unlink()
        _write_cpuinfo(tmp, cpu, cores)

    try:
        view = build_once(cache.root / f"{cache.suite}-rootfs-{cpu}-x{cores}", hard_link_copy)
    except (OSError, EdgeXrayError) as e:
        log.info("cannot cache a userland for %s (%s); using a temporary one", cpu, e)
        view = None
    if view is not None:
        yield view
        return
    with tempfile.TemporaryDirectory(prefix="edgexray-arm-") as tmp:
        prefix = Path(tmp) / "root"
        _link_tree(cache.rootfs_dir, prefix)
        (prefix / "edgexray-cache.json").unlink()
        _write_cpuinfo(prefix, cpu, cores)
        yield prefix


def _write_cpuinfo(root: Path, cpu: str, cores: int) -> None:
    (root / "proc").mkdir(exist_ok=True)
    (root / "proc/cpuinfo").unlink(missing_ok=True)  # never write through a link into the cache
    (root / "proc/cpuinfo").write_text(cpuinfo_text(cpu, cores))


def _link_tree(src: Path, dst: Path) -> None:
    """A copy of src: its folders as real folders, its files as symbolic links into src.

    Real folders matter: QEMU looks every guest path up in the prefix first, so a linked
    folder (/tmp, /root) would send the guest's realpath() of paths under it into the cache.
    Symbolic links, not hard links: a user may use a cache that root filled.
    """
    for folder, dirs, files in os.walk(src):
        rel = Path(folder).relative_to(src)
        (dst / rel).mkdir()
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            source = Path(folder) / name
            target = os.readlink(source) if source.is_symlink() else source  # keep links as links
            (dst / rel / name).symlink_to(target)


def check_cpu(cpu: str) -> None:
    if cpu not in CORES:
        raise unknown_name("CPU core", cpu, CORES)


def qemu_model(qemu: str, cpu: str) -> str:
    """The QEMU core model that emulates `cpu`: itself, or its stand-in on an older QEMU."""
    supported = qemu_cpus(qemu)
    for model in (cpu, QEMU_STAND_IN.get(cpu)):
        if model and model in supported:
            return model
    raise EdgeXrayError(
        f"this host's QEMU ({qemu_version(qemu)}) cannot emulate {cpu!r}; it knows "
        f"{', '.join(c for c in supported if c in CORES)}; pass --cpu with one of "
        "them or install a newer qemu-user-static"
    )


def qemu_cpus(qemu: str) -> list[str]:
    out = subprocess.run([qemu, "-cpu", "help"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines()[1:] if line.strip()]


def qemu_version(qemu: str) -> str:
    out = subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0].strip() if out else "unknown"


# What the guest says about itself: machine, versions, and the core its /proc/cpuinfo names.
GUEST_PROBE = """
import json, platform, sys, importlib.metadata as m
part = [l.split(':')[1].strip() for l in open('/proc/cpuinfo') if l.startswith('CPU part')]
print(json.dumps({'machine': platform.machine(), 'python': platform.python_version(),
                  'numpy': m.version('numpy'), 'runtime': m.version(sys.argv[1]),
                  'cpu_part': part[0] if part else None}))
"""
