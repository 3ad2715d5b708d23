"""ARM verification without a board: run an artifact's run.py on the aarch64 instruction set
under user-mode QEMU, emulating the target's core, and compare it with the host.

How (checked on these machines, see issue 7):
- an arm64 Debian userland with python3 is laid out without emulating anything:
  `debootstrap --foreign` downloads the .deb files, `dpkg -x` unpacks them;
- the aarch64 wheels of numpy and the runtime come from the host's pip with `--platform`;
- `qemu-aarch64-static` runs the userland's python3 with the userland as its library prefix
  (QEMU_LD_PREFIX) and the profile's core (QEMU_CPU; `max` changes int8 results);
- QEMU hands the host's x86 /proc/cpuinfo to the guest and LiteRT's CPU detection crashes on
  it, so every run gets its own prefix holding an ARM cpuinfo of the target's core (QEMU looks
  the file up in the prefix first).

The userland (bookworm-rootfs, ~260 MB) and the wheels (bookworm-<package>-<version>) are cached
under ~/.cache/edgexray/arm64 (XDG_CACHE_HOME honoured), each built in a temporary folder and
renamed into place under a lock, so two runs never see half a cache.

Host and guest cannot disagree when both run a swapped model, so the first passing verification
(at build time) records the host's outputs in the manifest ("arm_reference") and later ones
compare with them. Emulated timings are 100-500x slower than the device and never reported as
speed. Standard library only at module level (edgexray.bench also runs on devices).
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import platform
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from edgexray.runtime.errors import EdgeXrayError, unknown_name
from edgexray.fsutil import atomic_write_json, sha256_file

log = logging.getLogger(__name__)

SUITE = "bookworm"  # Debian release of the guest userland (Python 3.11, like Raspberry Pi OS 12)
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DEFAULT_CPU = "cortex-a72"  # Raspberry Pi 4, the reference target
FLOAT_TOLERANCE = 1e-4  # max abs output difference allowed for float models
# Quantized outputs may differ by this many steps between hosts (XNNPACK's x86 and NEON int8
# kernels round differently: 1 step seen between AVX2 and AVX-512 VNNI hosts and Cortex-A72)
KERNEL_ROUNDING_STEPS = 2
NUM_INPUTS = 6  # synthetic images per verification
INPUT_SEED = 0
GUEST_TIMEOUT_S = 1800  # one emulated run.py call; emulation is 100-500x slower than native
CACHE_FORMAT = 1  # bump when the cache layout changes; older caches are rebuilt

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
QEMU_STAND_IN = {"cortex-a55": "cortex-a76", "cortex-a78": "cortex-a76",
                 "cortex-a78ae": "cortex-a76"}

# runtime -> (pip package, version installed when the profile's install line names none)
RUNTIME_PACKAGES = {"litert": ("ai-edge-litert", "2.1.0"), "onnxruntime": ("onnxruntime", "1.23.0")}
NUMPY_VERSION = "1.26.4"
EMULATED_NOTE = "emulated, not device speed"


# --------------------------------------------------------------------------- host capability

def arm_verification_available(runtime: str = "litert", version: str | None = None,
                               cache_dir: str | os.PathLike | None = None) -> tuple[bool, str]:
    """(True, "") when this host can verify, else (False, why). Cheap: starts no emulation."""
    try:
        _check_host(runtime, version or RUNTIME_PACKAGES.get(runtime, ("", ""))[1], cache_dir)
    except EdgeXrayError as e:
        return False, str(e)
    except OSError as e:  # e.g. a cache folder this user may not read
        return False, f"ARM verification cannot use its cache: {e}"
    return True, ""


def _check_host(runtime: str, version: str, cache_dir) -> None:
    if runtime not in RUNTIME_PACKAGES:
        raise EdgeXrayError(f"ARM verification supports the runtimes {', '.join(RUNTIME_PACKAGES)}; "
                            f"this artifact uses {runtime!r}")
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise EdgeXrayError(f"ARM verification needs an x86-64 Linux host (user-mode QEMU); this is "
                            f"{sys.platform}/{platform.machine()}; run the artifact's run.py on "
                            "the device instead")
    cache = ArmCache(cache_dir)
    new_userland = not cache.rootfs_dir.is_dir()
    missing_tools = _which("qemu-aarch64-static") is None or new_userland and (
        _which("debootstrap") is None or not Path(DEBIAN_KEYRING).is_file())
    if (missing_tools or new_userland) and os.geteuid() != 0:
        what = "install qemu-user-static and debootstrap" if missing_tools else \
            "lay out the arm64 userland with debootstrap"
        raise EdgeXrayError(f"ARM verification must {what}, which needs root; this is uid "
                            f"{os.geteuid()}. Run it once as root (sudo edgexray verify ARTIFACT "
                            f"--cache-dir {cache.root}); later runs need no root")
    if missing_tools and shutil.which("apt-get") is None:
        raise EdgeXrayError("ARM verification needs qemu-user-static and debootstrap, and this "
                            "host has no apt-get to install them; install them with the system's "
                            "package manager")
    if new_userland:
        host = DEBIAN_MIRROR.split("/")[2]
        try:
            socket.create_connection((host, 80), timeout=5).close()
        except OSError as e:
            raise EdgeXrayError(f"ARM verification downloads an arm64 Debian userland from "
                                f"{DEBIAN_MIRROR}, which is not reachable from here ({e}); connect "
                                f"to the network once to fill the cache {cache.root}") from None


def _which(exe: str) -> str | None:
    """shutil.which, also looking in /usr/sbin and /sbin (not on a normal user's PATH)."""
    return shutil.which(exe) or shutil.which(exe, path="/usr/sbin:/sbin")


def ensure_host_tools(for_userland: bool = True) -> None:
    """qemu-user-static (and, to lay out the userland, debootstrap and Debian's keyring),
    installed with apt-get when missing (needs root)."""
    wanted = {"qemu-user-static": _which("qemu-aarch64-static")}
    if for_userland:  # the keyring: e.g. Ubuntu, where debootstrap checks Debian's signatures
        wanted.update({"debootstrap": _which("debootstrap"),
                       "debian-archive-keyring": Path(DEBIAN_KEYRING).is_file() or None})
    missing = [package for package, found in wanted.items() if not found]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise EdgeXrayError(f"ARM verification needs {' and '.join(missing)}; they are not "
                            f"installed and this process cannot apt-get install them (uid "
                            f"{os.geteuid()}); run: sudo apt-get install {' '.join(missing)}")
    log.info("installing %s with apt-get", " ".join(missing))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    wait = ["-o", "DPkg::Lock::Timeout=600"]  # another apt-get (a user's, a test's) may hold the lock
    install = ["apt-get", *wait, "install", "-y", "-q", "--no-install-recommends", *missing]
    what = "apt-get (installing " + " ".join(missing) + ")"
    t0 = time.monotonic()
    if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode != 0:
        _run(["apt-get", *wait, "update", "-q"], env=env, what="apt-get update", timeout=900)
        _run(install, env=env, what=what, timeout=900)  # package lists were missing or stale
    log.info("installed %s in %.0f s", " ".join(missing), time.monotonic() - t0)


# --------------------------------------------------------------------------- the cache

def default_cache_dir() -> Path:
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
        return self.root / f"{self.suite}-{RUNTIME_PACKAGES[runtime][0]}-{version}"

    def ensure_rootfs(self) -> Path:
        return _build_once(self.rootfs_dir, lambda tmp: _build_rootfs(tmp, self.suite))

    def ensure_site(self, runtime: str, version: str) -> Path:
        rootfs = self.ensure_rootfs()
        py = guest_python_version(rootfs)
        return _build_once(self.site_dir(runtime, version),
                           lambda tmp: _build_site(tmp, runtime, version, py))


def _build_once(final: Path, build) -> Path:
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
            atomic_write_json(tmp / stamp.name, {
                "format": CACHE_FORMAT, "built": _now(), "seconds": round(time.monotonic() - t0, 1)})
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
    cmd = [_which("debootstrap") or "debootstrap", "--arch=arm64", "--variant=minbase",
           "--foreign", "--include=python3", f"--keyring={DEBIAN_KEYRING}",
           suite, str(dest), DEBIAN_MIRROR]
    _run(cmd, what=f"debootstrap (downloading the arm64 userland from {DEBIAN_MIRROR})",
         timeout=1800)
    archives = dest / "var/cache/apt/archives"
    debs = sorted(archives.glob("*.deb"))
    if not debs:
        raise EdgeXrayError(f"debootstrap downloaded no packages into {archives}")
    from tqdm import tqdm  # host-only module: tqdm is there, the device never imports this

    for deb in tqdm(debs, desc="unpacking arm64 packages", unit="deb", file=sys.stderr):
        # no maintainer scripts, no emulation: just the files
        _run(["dpkg", "-x", str(deb), str(dest)], what=f"dpkg -x {deb.name}", timeout=300)
        deb.unlink()
    shutil.rmtree(dest / "debootstrap", ignore_errors=True)
    version = guest_python_version(dest)
    _precompile(dest / "usr/lib" / f"python{version}", version)


def _build_site(dest: Path, runtime: str, version: str, py_version: str) -> None:
    package = RUNTIME_PACKAGES[runtime][0]
    abi = "cp" + py_version.replace(".", "")
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-input", "--target", str(dest),
           "--only-binary=:all:", "--python-version", py_version, "--implementation", "cp",
           "--abi", abi, "--platform", "manylinux_2_28_aarch64",
           "--platform", "manylinux_2_27_aarch64", "--platform", "manylinux2014_aarch64",
           f"numpy=={NUMPY_VERSION}", f"{package}=={version}"]
    log.info("downloading aarch64 wheels: numpy==%s %s==%s", NUMPY_VERSION, package, version)
    _run(cmd, what=f"pip (aarch64 wheels of numpy=={NUMPY_VERSION} and {package}=={version}; is "
         "the package index reachable and does that version exist for aarch64?)", timeout=1800)
    _precompile(dest, py_version)


def _precompile(folder: Path, py_version: str) -> None:
    """Byte-compile with the host's Python when it is the guest's version: the guest would
    otherwise recompile every import under emulation on every run (pyc files are portable)."""
    if f"{sys.version_info[0]}.{sys.version_info[1]}" != py_version:
        return
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", str(folder)],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def guest_python_version(rootfs: Path) -> str:
    """"3.11" from the userland's /usr/bin/python3.X."""
    found = sorted(p.name for p in (rootfs / "usr/bin").glob("python3.*")
                   if re.fullmatch(r"python3\.\d+", p.name))
    if not found:
        raise EdgeXrayError(f"the arm64 userland {rootfs} has no python3; delete it so it is rebuilt")
    return found[-1][len("python"):]


# --------------------------------------------------------------------------- the guest

def cpuinfo_text(cpu: str, cores: int = 4) -> str:
    """An arm64 /proc/cpuinfo as Linux prints it for `cores` cores of type `cpu`."""
    part, features = CORES[cpu]
    block = ("processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: {f}\nCPU implementer\t: 0x41\n"
             "CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0x{p:03x}\nCPU revision\t: 3\n\n")
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
        return {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"),
                "LANG": "C.UTF-8", "PYTHONPATH": str(self.site), "PYTHONNOUSERSITE": "1",
                "PYTHONDONTWRITEBYTECODE": "1", "QEMU_CPU": self.cpu,
                "QEMU_LD_PREFIX": str(self.prefix)}


@contextlib.contextmanager
def guest_machine(runtime: str, version: str, cpu: str, cache_dir=None, cores: int = 4):
    """Prepare (or reuse) the cache, then yield a Guest emulating `cpu`."""
    check_cpu(cpu)
    _check_host(runtime, version, cache_dir)
    cache = ArmCache(cache_dir)
    ensure_host_tools(for_userland=not cache.rootfs_dir.is_dir())  # one apt-get for all
    site = cache.ensure_site(runtime, version)
    rootfs = cache.rootfs_dir
    qemu = _which("qemu-aarch64-static")
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
        _run(["cp", "-al", f"{cache.rootfs_dir}/.", str(tmp)], what="linking the arm64 userland",
             timeout=600)
        (tmp / "edgexray-cache.json").unlink()
        _write_cpuinfo(tmp, cpu, cores)

    try:
        view = _build_once(cache.root / f"{cache.suite}-rootfs-{cpu}-x{cores}", hard_link_copy)
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
    raise EdgeXrayError(f"this host's QEMU ({qemu_version(qemu)}) cannot emulate {cpu!r}; it knows "
                        f"{', '.join(c for c in supported if c in CORES)}; pass --cpu with one of "
                        "them or install a newer qemu-user-static")


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


# --------------------------------------------------------------------------- inputs

def synthetic_images(out_dir: str | os.PathLike, n: int = NUM_INPUTS,
                     seed: int = INPUT_SEED) -> list[Path]:
    """Deterministic X-ray-like test images (never patient data) in the formats users have:
    8-bit gray, 16-bit gray and RGB PNG, and a .npy array, of different sizes."""
    import numpy as np  # lazily: the module itself stays importable without numpy

    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    paths = []
    for i in range(n):
        h, w = 48 + 16 * (i % 3), 40 + 24 * (i % 4)
        y, x = np.mgrid[0:h, 0:w] / np.array([h, w], dtype=np.float64)[:, None, None]
        img = 0.3 + 0.4 * np.sin(np.pi * x) * np.sin(np.pi * y) * rng.uniform(0.5, 1.0)
        for _ in range(3):  # bright blobs ("bones", "opacities") at random places
            cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.25)
            img += rng.uniform(-0.3, 0.5) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * r * r))
        img = np.clip(img + rng.normal(0, 0.05, img.shape), 0, 1)
        kind = i % 4
        if kind == 3:
            path = out_dir / f"synthetic_{i}.npy"
            np.save(path, (img * 255).round().astype(np.uint8))
        else:
            path = out_dir / f"synthetic_{i}.png"
            if kind == 0:
                data = _png((img * 255).round().astype(np.uint8), 0)
            elif kind == 1:
                data = _png((img * 65535).round().astype(">u2"), 0)
            else:
                tint = np.stack([img, img * 0.9, img * 0.8], axis=-1)
                data = _png((tint * 255).round().astype(np.uint8), 2)
            path.write_bytes(data)
        paths.append(path)
    return paths


def _real_inputs(paths, out_dir: Path) -> list[Path]:
    """Real images decoded on the host and saved as .npy, which run.py reads with numpy alone
    (the guest has no Pillow for JPEG); an image the host cannot decode is left out."""
    import numpy as np

    from edgexray.runtime.preprocess import read_image_array  # host only, like tqdm above

    out = []
    for src in map(Path, paths):
        try:
            arr = read_image_array(src)
        except (OSError, ValueError) as e:
            log.info("ARM verification leaves out %s: %s", src, e)
            continue
        out.append(out_dir / f"real_{len(out)}.npy")
        np.save(out[-1], arr)
    return out


def _png(arr, color_type: int) -> bytes:
    """Minimal PNG encoder (filter 0): gray (color 0, 8/16 bit) or RGB (color 2, 8 bit)."""
    h, w = arr.shape[:2]
    depth = arr.dtype.itemsize * 8
    rows = arr.reshape(h, -1).view("u1").reshape(h, -1)
    raw = b"".join(b"\x00" + rows[r].tobytes() for r in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))


# --------------------------------------------------------------------------- the artifact

def read_manifest(artifact_dir: Path) -> dict:
    path = artifact_dir / "manifest.json"
    if not path.is_file():
        raise EdgeXrayError(f"{artifact_dir} is not an edgexray artifact: it has no manifest.json; "
                            "pass the folder that `edgexray build` wrote")
    if not (artifact_dir / "run.py").is_file():
        raise EdgeXrayError(f"artifact {artifact_dir} has no run.py; rebuild it with edgexray build")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise EdgeXrayError(f"{path} is not valid JSON ({e}); rebuild the artifact") from None


def artifact_target(manifest: dict) -> dict:
    """{"arch", "cpu", "cores", "runtime", "version", "model"} of the artifact's target device."""
    profile = manifest.get("profile") or {}
    model = manifest.get("model") or {}
    runtime = model.get("runtime") or profile.get("runtime")
    package, pinned = RUNTIME_PACKAGES.get(runtime, (None, None))
    # the version the device gets is the one in the profile's install line
    match = re.search(rf"{re.escape(package)}==([\w.]+)", str(profile.get("install", ""))) \
        if package else None
    return {"arch": profile.get("arch") or manifest.get("arch") or "aarch64",
            "cpu": profile.get("cpu_core") or DEFAULT_CPU, "cores": int(profile.get("cores") or 4),
            "runtime": runtime, "device_runtime": profile.get("runtime") or runtime,
            "version": match.group(1) if match else pinned,
            "model": model.get("file")}


def _model_sha(artifact_dir: Path, target: dict) -> str | None:
    path = artifact_dir / str(target["model"])
    return sha256_file(path) if target["model"] and path.is_file() else None


def run_artifact(cmd_prefix: list[str], artifact_dir: Path, images: list[Path], work: Path,
                 env: dict | None, side: str) -> tuple[dict, list, float]:
    """run.py ops, then run.py predict on `images`: (ops JSON, predictions, predict seconds)."""
    run_py = str(artifact_dir / "run.py")
    try:
        return _run_artifact(run_py, cmd_prefix, artifact_dir, images, work, env, side)
    except EdgeXrayError as e:
        raise _RunFailed(str(e)) from None


def _run_artifact(run_py, cmd_prefix, artifact_dir, images, work, env, side):
    ops = _run([*cmd_prefix, run_py, "ops"], env=env, cwd=artifact_dir, timeout=GUEST_TIMEOUT_S,
               what=f"run.py ops on the {side}")
    out = work / f"predict-{side}.json"
    t0 = time.monotonic()
    _run([*cmd_prefix, run_py, "predict", *map(str, images), "--format", "json", "--raw",
          "--out", str(out)], env=env, cwd=artifact_dir, timeout=GUEST_TIMEOUT_S,
         what=f"run.py predict on the {side}")
    seconds = time.monotonic() - t0
    try:
        return json.loads(ops.stdout), _predictions(json.loads(out.read_text())), seconds
    except (ValueError, OSError, KeyError, TypeError) as e:
        raise EdgeXrayError(f"run.py on the {side} did not write the JSON its contract promises "
                            f"({e}); docs/ARCHITECTURE.md 'Artifact run.py command line'") from None


# The model input run.py makes of each image (decoded, pre-processed, quantized), as sha256 per
# file name: equal on both sides means any output difference comes from the kernels alone.
INPUT_PROBE = """
import hashlib, importlib.util, json, sys
spec = importlib.util.spec_from_file_location("edgexray_run_py", sys.argv[1])
run = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = run
spec.loader.exec_module(run)
folder = run.Path(sys.argv[1]).resolve().parent
manifest = run.checked_manifest(folder)
runner, pre = run.load_model(folder, manifest, 1), run._preprocess(manifest)
print(json.dumps({run.Path(p).name: hashlib.sha256(run.np.ascontiguousarray(
    runner.prepare(run.load_batch([p], pre))).tobytes()).hexdigest() for p in sys.argv[2:]}))
"""


def input_digests(cmd_prefix: list[str], artifact_dir: Path, images: list[Path], env,
                  side: str) -> dict:
    """{image file name: sha256 of the input tensor run.py feeds the model}."""
    proc = _run([*cmd_prefix, "-c", INPUT_PROBE, str(artifact_dir / "run.py"), *map(str, images)],
                env=env, cwd=artifact_dir, timeout=GUEST_TIMEOUT_S,
                what=f"run.py's pre-processing on the {side}")
    return json.loads(proc.stdout)


def _predictions(doc: dict) -> list[dict]:
    """run.py's predictions JSON -> [{"image": file name, "label", "raw"}] in input order."""
    return [{"image": Path(p["image"]).name, "label": p["label"], "raw": p["raw"]}
            for p in doc["predictions"]]


def _op_names(ops_doc: dict) -> list[str]:
    return [str(op) for op in ops_doc.get("ops", [])]


# --------------------------------------------------------------------------- comparison

@dataclass(frozen=True)
class OutputComparison:
    """Two runs of run.py on the same images, compared output by output."""

    passed: bool
    max_abs_diff: float
    kind: str  # "int" (quantized outputs: a diff of 1 is one quantization step), "float" or "?"
    labels_match: bool
    detail: str

    @property
    def rounding(self) -> bool:
        """Passed with integer outputs that differ: kernel rounding, not identical."""
        return self.passed and self.kind == "int" and self.max_abs_diff > 0


def compare_outputs(a: list[dict], b: list[dict], tolerance: float = FLOAT_TOLERANCE,
                    rounding_steps: int = KERNEL_ROUNDING_STEPS) -> OutputComparison:
    """Compare two prediction lists ({"image", "label", "raw"} per image, same order).

    Integer (quantized) outputs pass when identical, or when they differ by at most
    `rounding_steps` quantization steps and every label is the same: XNNPACK's x86 and NEON
    int8 kernels may round an intermediate differently. A swapped or corrupt model, or wrong
    pre-processing, moves outputs by far more, or changes a label. Float outputs pass within
    `tolerance` with the same labels.
    """
    import numpy as np

    n = len(a)
    if [p["image"] for p in a] != [p["image"] for p in b]:
        return OutputComparison(False, float("inf"), "?", False,
                                f"the two runs answered for different images ({n} vs {len(b)})")
    labels = [p["label"] for p in a] == [p["label"] for p in b]
    diff, integer = 0.0, True
    for pa, pb in zip(a, b):
        ra, rb = np.asarray(pa["raw"], dtype=np.float64), np.asarray(pb["raw"], dtype=np.float64)
        if ra.shape != rb.shape or ra.size == 0:
            return OutputComparison(False, float("inf"), "?", labels,
                                    f"raw outputs of {pa['image']} have shapes {ra.shape} and "
                                    f"{rb.shape}")
        integer = integer and bool(np.all(ra == np.round(ra)) and np.all(rb == np.round(rb)))
        diff = max(diff, float(np.max(np.abs(ra - rb))))
    label_note = "" if labels else "; the predicted labels differ"
    if not integer:
        ok = labels and diff <= tolerance
        return OutputComparison(ok, diff, "float", labels, f"max abs diff {diff:g} over {n} "
                                f"images (float tolerance {tolerance:g}){label_note}")
    steps = f"{diff:g} step" + ("" if diff == 1 else "s")
    if diff == 0:
        detail = f"identical integer outputs over {n} images{label_note}"
    elif diff <= rounding_steps and labels:
        detail = (f"within kernel rounding: max diff {steps} over {n} images, identical labels "
                  f"(x86 and NEON int8 kernels may round differently; allowed up to "
                  f"{rounding_steps} quantization steps)")
    elif diff <= rounding_steps:
        detail = (f"max diff {steps} over {n} images, but the predicted labels differ: kernel "
                  "rounding must not change a prediction")
    else:
        detail = (f"max diff {steps} over {n} images: more than the {rounding_steps} "
                  f"quantization steps kernel rounding can explain{label_note}")
    return OutputComparison(labels and diff <= rounding_steps, diff, "int", labels, detail)


def _check(passed: bool, detail: str) -> dict:
    return {"passed": bool(passed), "detail": detail}


def verify_artifact(artifact_dir: str | os.PathLike, cpu: str | None = None, write: bool = True,
                    cache_dir: str | os.PathLike | None = None, tolerance: float = FLOAT_TOLERANCE,
                    on_unavailable: str = "raise", real_images=()) -> dict:
    """Run the artifact's run.py on this host and on emulated aarch64 and compare.

    Checks: the guest is aarch64 and sees the target core; the op lists are equal and (LiteRT)
    the XNNPACK delegate is applied on both sides; raw outputs are identical (integer outputs),
    or differ by kernel rounding only (at most KERNEL_ROUNDING_STEPS quantization steps with
    every label equal), or are within `tolerance` (float); labels are equal; and both sides
    agree with the reference
    outputs recorded in the manifest by the first passing verification (a model swapped
    afterwards is caught even when its checksum was updated). With write=True the result is
    stored in manifest.json under "arm_verification" (the first pass also stores
    "arm_reference"). A host that cannot verify raises EdgeXrayError, or with
    on_unavailable="skip" gives a "skipped" result saying why; a run.py that fails on either
    side gives "failed". Nothing is reported as passed that did not run.

    `real_images`: paths of real images (e.g. held-out ones at build time), run and compared
    besides the synthetic ones so that rounding is judged on what the model really sees; they
    are never copied into the manifest, whose reference holds the synthetic inputs only.
    """
    if on_unavailable not in ("raise", "skip"):
        raise EdgeXrayError(f"on_unavailable={on_unavailable!r}; allowed: 'raise', 'skip'")
    artifact_dir = Path(artifact_dir).resolve()  # run.py runs with the artifact as its cwd
    manifest = read_manifest(artifact_dir)
    target = artifact_target(manifest)
    cpu = cpu or target["cpu"]
    if cpu in CORES or target["arch"] == "aarch64":
        check_cpu(cpu)  # a mistyped --cpu is an error even for a non-ARM artifact
    result = {"status": "skipped", "reason": "", "cpu": cpu,
              "midr_part": f"0x{CORES[cpu][0]:03x}" if cpu in CORES else None,
              "guest_machine": None, "runtime": {"name": target["runtime"],
                                                 "version": target["version"]},
              "checks": {}, "max_abs_diff": None, "tolerance": tolerance, "checked_at": _now()}
    if target["arch"] != "aarch64":
        result["reason"] = f"the target is {target['arch']}, not ARM: nothing to emulate"
        return _finish(artifact_dir, manifest, result, write)
    if target["device_runtime"] not in RUNTIME_PACKAGES:
        result["reason"] = (f"the target runs the model with {target['device_runtime']}, which CPU "
                            f"emulation cannot check (it checks {', '.join(RUNTIME_PACKAGES)})")
        return _finish(artifact_dir, manifest, result, write)
    checks = result["checks"]
    with tempfile.TemporaryDirectory(prefix="edgexray-verify-") as tmp:
        work = Path(tmp)
        (work / "images").mkdir()
        images = synthetic_images(work / "images")
        result["inputs"] = {"kind": "synthetic", "count": len(images), "seed": INPUT_SEED}
        images += _real_inputs(real_images, work / "images")
        result["real_images"] = len(images) - result["inputs"]["count"]
        try:
            with guest_machine(target["runtime"], target["version"], cpu, cache_dir,
                               target["cores"]) as guest:
                sides = _run_both(guest, artifact_dir, images, work, result)
        except EdgeXrayError as e:
            if on_unavailable == "raise":
                raise
            result["reason"] = f"this host cannot run ARM verification: {e}"
            return _finish(artifact_dir, manifest, result, write)
    if sides is not None:
        _compare_sides(sides, target, tolerance, result)
        _compare_reference(sides["host"][1], artifact_dir, manifest, target, tolerance, result,
                           write)
    failed = [name for name, c in checks.items() if not c["passed"]]
    result["status"] = "failed" if failed else "passed"
    stand_in = result.get("qemu_cpu") not in (None, cpu)
    result["reason"] = ("; ".join(f"{n}: {checks[n]['detail']}" for n in failed) if failed else
                        f"run.py gives the same results on emulated {cpu} (aarch64"
                        + (f", QEMU model {result['qemu_cpu']}" if stand_in else "")
                        + ") as on this host"
                        + (f" ({checks['outputs_match']['detail']})"
                           if result.get("kernel_rounding") else ""))
    return _finish(artifact_dir, manifest, result, write)


class _RunFailed(Exception):
    """run.py itself failed (a verification failure, not a host problem)."""


def _run_both(guest: Guest, artifact_dir: Path, images: list[Path], work: Path, result: dict):
    """Probe the guest, run run.py on both sides: {"host"|"guest": (ops, predictions)} or None
    when run.py failed somewhere (recorded as a failed check)."""
    package = RUNTIME_PACKAGES[result["runtime"]["name"]][0]
    result["qemu"] = qemu_version(guest.qemu)
    result["qemu_cpu"] = guest.cpu
    probe = _run(guest.command(["-c", GUEST_PROBE, package]), env=guest.env(),
                 timeout=GUEST_TIMEOUT_S, what="the aarch64 guest's python3")
    info = json.loads(probe.stdout)
    result["guest_machine"] = info["machine"]
    result["guest_python"] = info["python"]
    result["runtime"].update(host_version=_host_version(package), guest_version=info["runtime"])
    result["numpy"] = {"host": _host_version("numpy"), "guest": info["numpy"]}
    result["checks"]["guest_is_aarch64"] = _check(
        info["machine"] == "aarch64" and info["cpu_part"] == result["midr_part"],
        f"guest platform.machine()={info['machine']!r}, /proc/cpuinfo CPU part {info['cpu_part']}")
    sides = {}
    host_env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")  # nothing written into the artifact
    for side, prefix, env in (("host", [sys.executable], host_env),
                              ("guest", guest.command([]), guest.env())):
        log.info("running run.py on the %s%s", side, " (emulated, slow)" if side == "guest" else "")
        try:
            ops, preds, seconds = run_artifact(prefix, artifact_dir, images, work, env, side)
        except _RunFailed as e:
            result["checks"][f"runs_on_{side}"] = _check(False, str(e))
            return None
        result["checks"][f"runs_on_{side}"] = _check(True, f"run.py ops and predict ran on the "
                                                     f"{side}")
        if side == "guest":
            result["emulated_seconds"] = {"guest_predict": round(seconds, 1), "note": EMULATED_NOTE}
        sides[side] = (ops, preds)
        try:
            result.setdefault("input_sha256", {})[side] = input_digests(prefix, artifact_dir,
                                                                        images, env, side)
        except (EdgeXrayError, ValueError) as e:
            result["checks"]["same_inputs"] = _check(False, f"the input probe failed: {e}")
    return sides


def _compare_sides(sides: dict, target: dict, tolerance: float, result: dict) -> None:
    checks, rt = result["checks"], result["runtime"]
    (host_ops, host_pred), (guest_ops, guest_pred) = sides["host"], sides["guest"]
    checks["same_runtime_version"] = _check(
        rt["host_version"] == rt["guest_version"] == target["version"],
        f"{RUNTIME_PACKAGES[target['runtime']][0]} host {rt['host_version']}, guest "
        f"{rt['guest_version']}, device {target['version']}")
    h_ops, g_ops = _op_names(host_ops), _op_names(guest_ops)
    if target["runtime"] == "litert" or (h_ops and g_ops):
        checks["same_ops"] = _check(h_ops == g_ops and bool(h_ops),
                                    f"host {len(h_ops)} ops, guest {len(g_ops)} ops"
                                    + ("" if h_ops == g_ops else f": host {h_ops} vs guest {g_ops}"))
    else:  # ONNX Runtime: run.py lists the graph's nodes only where the onnx package is installed
        result["ops_not_compared"] = "run.py ops lists ONNX nodes only with the onnx package, " \
                                     "which the device (guest) does not install"
    if target["runtime"] == "litert":
        checks["xnnpack_applied"] = _check("DELEGATE" in h_ops and "DELEGATE" in g_ops,
                                           f"DELEGATE op on host: {'DELEGATE' in h_ops}, "
                                           f"on guest: {'DELEGATE' in g_ops}")
    digests = result.pop("input_sha256", {})
    if "same_inputs" not in checks:
        host_in, guest_in = digests.get("host", {}), digests.get("guest", {})
        differ = sorted(n for n in host_in.keys() | guest_in.keys()
                        if host_in.get(n) != guest_in.get(n))
        checks["same_inputs"] = _check(bool(host_in) and not differ, (
            f"the model inputs of all {len(host_in)} images are bit-identical on both sides"
            if not differ else f"run.py pre-processes {differ} differently on the guest"))
    c = compare_outputs(host_pred, guest_pred, tolerance)
    result["max_abs_diff"] = c.max_abs_diff
    result["output_kind"] = c.kind
    result["kernel_rounding"] = c.rounding
    checks["outputs_match"] = _check(c.passed, c.detail)
    checks["labels_match"] = _check(c.labels_match, "predicted labels " + (
        "equal" if c.labels_match else f"differ: host {[p['label'] for p in host_pred]} vs "
        f"guest {[p['label'] for p in guest_pred]}"))


def _compare_reference(host_pred: list, artifact_dir: Path, manifest: dict, target: dict,
                       tolerance: float, result: dict, write: bool) -> None:
    """Against the outputs recorded by the first passing verification; records them if none."""
    checks = result["checks"]
    reference = manifest.get("arm_reference")
    if reference and reference.get("inputs") == result["inputs"]:
        # only the synthetic inputs were recorded: real images are not stored in the manifest
        c = compare_outputs(reference["predictions"], host_pred[:len(reference["predictions"])],
                            tolerance)
        detail = f"{c.detail}, against the outputs recorded {reference.get('recorded')}"
        if not c.passed and reference.get("model_sha256") != _model_sha(artifact_dir, target):
            detail += "; the model file changed since then"
        checks["matches_reference"] = _check(c.passed, detail)
    elif write and all(c["passed"] for c in checks.values()):
        manifest["arm_reference"] = {"recorded": result["checked_at"], "inputs": result["inputs"],
                                     "model_sha256": _model_sha(artifact_dir, target),
                                     "predictions": host_pred[:result["inputs"]["count"]]}
        checks["matches_reference"] = _check(True, "no reference yet: these outputs are now "
                                             "recorded as the artifact's reference")


def _finish(artifact_dir: Path, manifest: dict, result: dict, write: bool) -> dict:
    if write:
        manifest["arm_verification"] = result
        atomic_write_json(artifact_dir / "manifest.json", manifest)
    return result


def _host_version(package: str) -> str | None:
    from importlib import metadata
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _run(cmd: list[str], what: str, timeout: float, env: dict | None = None,
         cwd=None) -> subprocess.CompletedProcess:
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
