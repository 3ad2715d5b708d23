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

One module per job: `host` (what this host needs and has), `cache` (userland and wheels),
`guest` (the emulated machine), `inputs` (the images both sides run), `artifact` (its manifest,
its run.py run on one side), `comparison` (host vs guest vs the recorded reference) and
`verify` (the two entry points).
"""

from edgexray.bench.arm.artifact import artifact_target, read_manifest
from edgexray.bench.arm.cache import ArmCache, default_cache_dir
from edgexray.bench.arm.comparison import (
    FLOAT_TOLERANCE,
    KERNEL_ROUNDING_STEPS,
    OutputComparison,
    compare_outputs,
)
from edgexray.bench.arm.guest import CORES, DEFAULT_CPU, Guest, check_cpu, cpuinfo_text, guest_machine
from edgexray.bench.arm.host import ensure_host_tools
from edgexray.bench.arm.inputs import NUM_INPUTS, synthetic_images
from edgexray.bench.arm.verify import EMULATED_NOTE, arm_verification_available, verify_artifact

__all__ = [
    "CORES",
    "DEFAULT_CPU",
    "EMULATED_NOTE",
    "FLOAT_TOLERANCE",
    "KERNEL_ROUNDING_STEPS",
    "NUM_INPUTS",
    "ArmCache",
    "Guest",
    "OutputComparison",
    "arm_verification_available",
    "artifact_target",
    "check_cpu",
    "compare_outputs",
    "cpuinfo_text",
    "default_cache_dir",
    "ensure_host_tools",
    "guest_machine",
    "read_manifest",
    "synthetic_images",
    "verify_artifact",
]
