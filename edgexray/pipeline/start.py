"""What a build does before any work: its options (BuildConfig, the demo's defaults) checked,
existing outputs refused, the build folder made."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from edgexray.fsutil import refuse_existing
from edgexray.pipeline.state import BuildState, Progress
from edgexray.runtime.errors import EdgeXrayError

# The embedded default: synthetic bone X-rays and a model small enough for minutes on 2 cores.
# Its held-out split is small (one image is ~0.6 pp), so its accuracy budget is wider, and
# stated as such in the manifest and the summary.
DEMO = dict(
    synth_classes=3,
    synth_per_class=300,
    size=96,
    width=0.5,
    epochs=12,
    finetune_epochs=4,
    calib_count=100,
    max_accuracy_drop=3.0,
)


@dataclass(frozen=True)
class BuildConfig:
    target: str = "rpi4"  # device profile name or path to a profile TOML
    data_dir: str | None = None  # image folder; None (and no checkpoint) = synthetic demo data
    checkpoint: str | None = None  # start from this trained checkpoint (skips training)
    out: str = "artifacts"  # artifact folders and zips go here; intermediate files in build-<target>/
    arch: str = "resnet18_cbam"  # architecture when training
    size: int | None = None  # input side; None = the profile's input_size (demo: 96)
    width: float = 1.0  # channel multiplier when training
    pretrained: bool = False  # ImageNet weights (torchvision cache)
    weights: str | None = None  # local ImageNet weights file
    epochs: int = 8  # training epochs
    finetune_epochs: int = 3  # fine-tuning epochs after pruning
    batch_size: int = 32
    max_accuracy_drop: float = 1.0  # pp vs the unpruned FP32 model: upper 95% bound, val split
    latency_budget_ms: float | None = None  # host latency goal for the pruning search
    precisions: tuple | None = None  # override the profile's precisions (fallback order)
    calib_count: int = 200  # INT8 calibration images (stratified, training split)
    bench_seconds: float = 3.0  # timed budget per model in the host benchmark
    verify_arm: bool = True  # run the emulated-ARM check for aarch64 targets when the host can
    synth_classes: int = 3  # demo data
    synth_per_class: int = 120  # demo data
    group_regex: str | None = None  # patient key of the file names; None = detect one (data.py)
    group: bool = True  # False (--no-group): split images independently
    test_data: str | None = None  # external test folder: scored at the end, never for a choice
    positive_class: str | None = None  # operating point: this class's threshold, chosen on val
    target_sensitivity: float | None = None  # ... the highest one reaching this val sensitivity
    recipe: str = "default"  # training defaults (edgexray.recipes) when the build trains
    remote: str | None = None  # ssh://user@host[:port]: the device the candidates are timed on
    remote_python: str = "python3"  # Python on the device (numpy and the runtime installed)
    identity: str | None = None  # SSH private key for --remote
    ssh_options: tuple = ()  # extra ssh -o KEY=VALUE options for --remote
    seed: int = 0
    force: bool = False  # replace an existing artifact / build folder

    @property
    def remote_options(self) -> dict:
        """bench.remote.SshTarget's keyword arguments for --remote."""
        return {"identity": self.identity, "options": tuple(self.ssh_options)}


def is_demo(cfg: BuildConfig) -> bool:
    return cfg.data_dir is None and cfg.checkpoint is None


def started(cfg: BuildConfig) -> tuple[BuildState, object]:
    """The checked options, the refused outputs and the build folder, before any work; and the
    given checkpoint (or None)."""
    from edgexray.checkpoint import load_checkpoint
    from edgexray.devices import load_profile
    from edgexray.operating_point import check_options

    profile = load_profile(cfg.target)
    if is_demo(cfg):
        cfg = replace(cfg, **{k: v for k, v in DEMO.items() if getattr(cfg, k) == getattr(BuildConfig, k)})
    precisions = tuple(cfg.precisions or profile.precisions)
    unknown = set(precisions) - set(profile.precisions) if cfg.precisions else set()
    if unknown:
        raise EdgeXrayError(
            f"precision(s) {sorted(unknown)} are not built for {profile.name}; "
            f"its profile allows {list(profile.precisions)}"
        )
    check_options(cfg.positive_class, cfg.target_sensitivity)
    if cfg.remote is not None:
        from edgexray.bench.remote import parse_ssh_url

        parse_ssh_url(cfg.remote)  # a malformed URL fails now, not after training
    if cfg.max_accuracy_drop < 0:
        raise EdgeXrayError(
            f"--max-accuracy-drop {cfg.max_accuracy_drop}; must be >= 0 percentage points, e.g. 1.0"
        )
    out = Path(cfg.out)
    work = out / f"build-{profile.name}"
    refuse_existing(work, cfg.force, "build folder")
    given = load_checkpoint(cfg.checkpoint) if cfg.checkpoint else None
    arch = given.arch if given else cfg.arch
    for existing in sorted(out.glob(f"{profile.name}-{arch}-*")):  # fail now, not after training
        refuse_existing(existing, cfg.force, "artifact")
    work.mkdir(parents=True, exist_ok=True)
    return BuildState(cfg, profile, precisions, out, work, Progress()), given
