"""Device profiles: one TOML file per target, loaded into a frozen dataclass.

Standard library only (runs on the device too). `load_profile("rpi4")` reads the built-in
devices/rpi4.toml; `load_profile("my-board.toml")` reads the user's own file. Every key is
checked: an unknown key, a wrong type or a malformed file is an EdgeXrayError naming the file,
the line and the key.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from edgexray.runtime.errors import EdgeXrayError, unknown_name
from edgexray.runtime.registry import profile_runtimes, runtime_for_profile

PROFILE_DIR = Path(__file__).resolve().parent

ARCHES = ("aarch64", "x86_64")
RUNTIMES = profile_runtimes()  # litert, onnxruntime, onnxruntime-cuda, onnxruntime-tensorrt, torch
PRECISIONS = ("int8", "fp16", "fp32", "dynamic")  # dynamic = dynamic-range (int8 weights only)
SCHEDULES = ("progressive", "one-shot")  # edgexray.prune.schedules names
# what an artifact ships as model.<ext>: "int8-io" the exported file (int8 in and out for int8),
# "tasks" the Tasks-ready TFLite (uint8 RGB pixels in, probabilities out; export/tasks_variant.py)
MAIN_MODELS = ("int8-io", "tasks")


@dataclass(frozen=True)
class PruneSettings:
    """How a build for this target prunes (table [prune] of the profile)."""

    method: str = "cbam"  # importance criterion (edgexray.prune registry)
    schedule: str = "progressive"  # "progressive": one ratio per stage; "one-shot": one ratio
    stage_ratios: tuple = (0.2, 0.35, 0.5, 0.6)  # progressive: channels removed per stage (seed paper)
    ratio: float = 0.5  # one-shot: channels removed in every prunable group
    target_params: float | None = None  # fraction of parameters to remove at least (0.7 = 70% fewer)
    target_macs: float | None = None  # fraction of MACs to remove at least
    round_to: int = 8  # kept channel counts rounded to a multiple of this


@dataclass(frozen=True)
class DeviceProfile:
    """One deployment target. `source` is the TOML file it was read from."""

    name: str  # short name, also the artifact folder's prefix
    description: str  # one paragraph: the board, its runtime, its quirks
    arch: str  # CPU architecture: aarch64 | x86_64
    cpu: str  # CPU model, human readable
    cpu_core: str  # core micro-architecture (cortex-a72, cortex-a76, ...)
    cores: int  # CPU cores
    memory_mb: int  # RAM of the device
    runtime: str  # litert | onnxruntime | onnxruntime-cuda | onnxruntime-tensorrt | torch
    precisions: tuple  # precisions to build, in fallback order
    default_precision: str  # the one shipped when its accuracy budget holds
    threads: int  # inference threads on the device
    input_size: int  # square model input side in pixels
    latency_budget_ms: float  # per image, batch 1, on the device
    memory_budget_mb: float  # peak RSS of the device harness
    install: str  # the one line that installs the runtime on the device
    gpu: str | None = None  # GPU, or None when inference never uses one
    delegate: str | None = None  # LiteRT delegate (xnnpack, gpu, ...)
    execution_provider: str | None = None  # ONNX Runtime execution provider
    main_model: str = "int8-io"  # MAIN_MODELS: "tasks" for apps (MediaPipe Tasks), LiteRT only
    prune: PruneSettings = field(default_factory=PruneSettings)
    source: str = ""  # path of the TOML file (filled by the loader)

    @property
    def model_format(self) -> str:
        """File format the runtime loads: tflite | onnx | torch."""
        return runtime_for_profile(self.runtime).model_format

    @property
    def runner(self) -> str:
        """Name of the edgexray.bench runner that measures this target on the host."""
        return runtime_for_profile(self.runtime).name

    def to_dict(self) -> dict:
        """JSON-ready dict (what an artifact's manifest stores)."""
        d = asdict(self)
        d["precisions"] = list(self.precisions)
        d["prune"]["stage_ratios"] = list(self.prune.stage_ratios)
        d["model_format"] = self.model_format
        return d


# key -> (accepted python types, required?) for each table; bool is excluded from int below.
_PROFILE_KEYS = {f.name: f for f in fields(DeviceProfile) if f.name not in ("prune", "source")}
_PRUNE_KEYS = {f.name: f for f in fields(PruneSettings)}
_TYPES = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "tuple": (list,),
    "str | None": (str,),
    "float | None": (int, float),
}


def list_profiles() -> list[str]:
    """Names of the built-in profiles, sorted."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """A built-in profile by name, or the user's own TOML by path."""
    text = str(name_or_path)
    if text.endswith(".toml") or "/" in text or "\\" in text:
        path = Path(text).expanduser()
        if not path.is_file():
            raise EdgeXrayError(
                f"device profile file {text!r} does not exist; pass a built-in "
                f"target ({', '.join(list_profiles())}) or the path of a TOML file"
            )
    else:
        if text not in list_profiles():
            raise unknown_name("target", text, list_profiles())
        path = PROFILE_DIR / f"{text}.toml"
    return _parse(path)


def _parse(path: Path) -> DeviceProfile:
    raw = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(raw)
    except tomllib.TOMLDecodeError as e:
        raise EdgeXrayError(_syntax_message(path, raw, e)) from None
    prune_data = data.pop("prune", {})
    if not isinstance(prune_data, dict):
        raise _key_error(path, raw, None, "prune", "must be a table: [prune] on its own line")
    values = _check_table(path, raw, None, data, _PROFILE_KEYS)
    prune_values = _check_table(path, raw, "prune", prune_data, _PRUNE_KEYS)
    values["precisions"] = tuple(values["precisions"])
    if "stage_ratios" in prune_values:
        prune_values["stage_ratios"] = tuple(float(r) for r in prune_values["stage_ratios"])
    profile = DeviceProfile(**values, prune=PruneSettings(**prune_values), source=str(path))
    _check_values(path, raw, profile)
    return profile


def _check_table(path: Path, raw: str, table: str | None, data: dict, spec: dict) -> dict:
    where = f"[{table}]" if table else "the top level"
    for key in data:
        if key not in spec:
            close = difflib.get_close_matches(key, spec, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise _key_error(
                path, raw, table, key, f"is not a profile key in {where}{hint} allowed: {', '.join(spec)}"
            )
    missing = [
        k for k, f in spec.items() if f.default is MISSING and f.default_factory is MISSING and k not in data
    ]
    if missing:
        raise EdgeXrayError(
            f"{path}: missing key(s) {', '.join(missing)} in {where}; "
            f"every profile sets them (see devices/rpi4.toml)"
        )
    for key, value in data.items():
        allowed = _TYPES[str(spec[key].type)]
        if isinstance(value, bool) or not isinstance(value, allowed):
            want = "a list" if allowed == (list,) else " or ".join(t.__name__ for t in allowed)
            raise _key_error(path, raw, table, key, f"is {value!r} ({type(value).__name__}); expected {want}")
    return dict(data)


def _check_values(path: Path, raw: str, p: DeviceProfile) -> None:
    def bad(table, key, msg):
        return _key_error(path, raw, table, key, msg)

    if p.arch not in ARCHES:
        raise bad(None, "arch", f"is {p.arch!r}; allowed: {', '.join(ARCHES)}")
    if p.runtime not in RUNTIMES:
        raise bad(None, "runtime", f"is {p.runtime!r}; allowed: {', '.join(RUNTIMES)}")
    for key in ("cores", "memory_mb", "threads", "input_size", "latency_budget_ms", "memory_budget_mb"):
        if getattr(p, key) <= 0:
            raise bad(None, key, f"is {getattr(p, key)!r}; must be > 0")
    if (
        not p.precisions
        or len(set(p.precisions)) != len(p.precisions)
        or any(not isinstance(x, str) or x not in PRECISIONS for x in p.precisions)
    ):
        raise bad(
            None,
            "precisions",
            f"is {list(p.precisions)!r}; a non-empty list of distinct values from {', '.join(PRECISIONS)}",
        )
    if p.default_precision not in p.precisions:
        raise bad(
            None,
            "default_precision",
            f"is {p.default_precision!r}; must be one of precisions {list(p.precisions)}",
        )
    if p.main_model not in MAIN_MODELS:
        raise bad(None, "main_model", f"is {p.main_model!r}; allowed: {', '.join(MAIN_MODELS)}")
    if p.main_model == "tasks" and p.model_format != "tflite":
        raise bad(None, "main_model", f"is 'tasks' but runtime {p.runtime!r} does not load .tflite files")
    s = p.prune
    if s.schedule not in SCHEDULES:
        raise bad("prune", "schedule", f"is {s.schedule!r}; allowed: {', '.join(SCHEDULES)}")
    if len(s.stage_ratios) != 4 or any(not 0 <= r < 1 for r in s.stage_ratios):
        raise bad(
            "prune",
            "stage_ratios",
            f"is {list(s.stage_ratios)!r}; four ratios in [0, 1), one per network stage",
        )
    for key in ("ratio", "target_params", "target_macs"):
        value = getattr(s, key)
        if value is not None and not 0 < value < 1:
            raise bad("prune", key, f"is {value!r}; a fraction in (0, 1), e.g. 0.7 for 70% fewer")
    if s.round_to < 1:
        raise bad("prune", "round_to", f"is {s.round_to!r}; must be >= 1 (1 = no rounding)")


def _line_of(raw: str, table: str | None, key: str) -> int | None:
    """1-based line where `key` is set inside `table` (None = top level), or None."""
    current = None
    for n, line in enumerate(raw.splitlines(), 1):
        header = re.match(r"\s*\[\s*([^\]]+?)\s*\]", line)
        if header:
            current = header.group(1)
        elif current == table and re.match(rf"\s*{re.escape(key)}\s*=", line):
            return n
    return None


def _key_error(path: Path, raw: str, table: str | None, key: str, problem: str) -> EdgeXrayError:
    line = _line_of(raw, table, key)
    where = f"{path}, line {line}" if line else str(path)
    qualified = f"{table}.{key}" if table else key
    return EdgeXrayError(f"{where}: key {qualified!r} {problem}")


def _syntax_message(path: Path, raw: str, e: tomllib.TOMLDecodeError) -> str:
    # Python 3.11's TOMLDecodeError has no lineno attribute; the message ends "(at line N, column M)".
    m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
    problem = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(e))
    if not m:
        return f"{path}: malformed TOML: {problem}"
    line_no = int(m.group(1))
    lines = raw.splitlines()
    text = lines[line_no - 1].strip() if 0 < line_no <= len(lines) else ""
    key = re.match(r"([A-Za-z0-9_.-]+)\s*=", text)
    key_part = f" (key {key.group(1)!r})" if key else ""
    return (
        f"{path}, line {line_no}, column {m.group(2)}: malformed TOML{key_part}: {problem}: "
        f"{text!r}; strings need quotes, lists need [ ], see devices/rpi4.toml"
    )
