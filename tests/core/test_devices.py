"""Device profiles: every built-in loads, bad files are explained, the CLI lists and shows them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgexray.cli import main
from edgexray.devices import PRECISIONS, RUNTIMES, DeviceProfile, list_profiles, load_profile
from edgexray.runtime.errors import EdgeXrayError

RPI4 = Path(load_profile("rpi4").source).read_text()
TARGETS = ["rpi4", "rpi5", "jetson-orin-nano", "android-arm64", "ios-arm64", "x86-64", "cuda-gpu"]


def test_builtin_targets_listed():
    assert list_profiles() == sorted(TARGETS)


@pytest.mark.parametrize("name", TARGETS)
def test_every_profile_loads_and_is_consistent(name):
    p = load_profile(name)
    assert isinstance(p, DeviceProfile)
    assert p.name == name  # the file name and the profile name agree
    assert p.runtime in RUNTIMES and set(p.precisions) <= set(PRECISIONS)
    assert p.default_precision in p.precisions
    assert p.threads <= p.cores and p.input_size > 0 and p.latency_budget_ms > 0
    assert p.install
    # exactly one of delegate (LiteRT) / execution provider (ONNX Runtime) fits the runtime
    if p.model_format == "tflite":
        assert p.delegate and p.execution_provider is None
    else:
        assert p.execution_provider and p.delegate is None
    with pytest.raises(Exception):  # frozen
        p.threads = 1


def test_rpi4_profile_facts():
    p = load_profile("rpi4")
    assert (p.arch, p.cpu_core, p.runtime) == ("aarch64", "cortex-a72", "litert")
    assert p.precisions == ("int8", "fp16", "fp32") and p.default_precision == "int8"
    assert "dot-product" in p.description  # INT8 is not always faster on the A72
    assert p.prune.schedule == "progressive"
    assert p.prune.stage_ratios == (0.2, 0.35, 0.5, 0.6)
    assert p.prune.target_macs == 0.7 and p.prune.target_params is None
    assert p.install == "pip install numpy==1.26.4 ai-edge-litert==2.1.0"
    assert (
        load_profile("rpi5").cpu_core,
        load_profile("jetson-orin-nano").cpu_core,
        load_profile("android-arm64").cpu_core,
    ) == ("cortex-a76", "cortex-a78ae", "cortex-a76")
    d = p.to_dict()
    assert d["model_format"] == "tflite" and d["prune"]["stage_ratios"] == [0.2, 0.35, 0.5, 0.6]


def test_user_toml_by_path(tmp_path):
    f = tmp_path / "my-board.toml"
    f.write_text(RPI4.replace('name = "rpi4"', 'name = "my-board"').replace("threads = 4", "threads = 2"))
    p = load_profile(str(f))
    assert (p.name, p.threads, p.source) == ("my-board", 2, str(f))


def test_unknown_target_suggests_closest():
    with pytest.raises(EdgeXrayError, match=r"unknown target 'rpi-4'; did you mean 'rpi4'"):
        load_profile("rpi-4")
    with pytest.raises(EdgeXrayError, match="does not exist"):
        load_profile("nowhere/board.toml")


def _write(tmp_path, text):
    f = tmp_path / "board.toml"
    f.write_text(text)
    return f


def test_unknown_key_names_key_file_and_line(tmp_path):
    f = _write(tmp_path, RPI4.replace("threads = 4", "threads = 4\nthread_count = 4"))
    line = f.read_text().splitlines().index("thread_count = 4") + 1
    with pytest.raises(EdgeXrayError) as e:
        load_profile(f)
    msg = str(e.value)
    assert str(f) in msg and f"line {line}" in msg and "'thread_count'" in msg
    assert "did you mean 'threads'" in msg


def test_unknown_key_in_prune_table(tmp_path):
    f = _write(tmp_path, RPI4.replace("round_to = 8", "round_to = 8\nstage_ratio = [0.1]"))
    with pytest.raises(EdgeXrayError, match=r"key 'prune.stage_ratio' is not a profile key in \[prune\]"):
        load_profile(f)


def test_malformed_toml_names_file_line_and_key(tmp_path):
    f = _write(tmp_path, RPI4.replace('runtime = "litert"', "runtime = litert"))
    line = f.read_text().splitlines().index("runtime = litert") + 1
    with pytest.raises(EdgeXrayError) as e:
        load_profile(f)
    msg = str(e.value)
    assert str(f) in msg and f"line {line}" in msg and "'runtime'" in msg and "malformed TOML" in msg


@pytest.mark.parametrize(
    "old,new,pattern",
    [
        ("cores = 4", 'cores = "four"', r"key 'cores' is 'four' \(str\); expected int"),
        ('runtime = "litert"', 'runtime = "tflite"', r"key 'runtime' is 'tflite'; allowed: litert"),
        ('default_precision = "int8"', 'default_precision = "int4"', "must be one of precisions"),
        ('precisions = ["int8", "fp16", "fp32"]', 'precisions = ["int8", "int8"]', "distinct"),
        ("target_macs = 0.7 ", "target_macs = 70 ", r"a fraction in \(0, 1\)"),
        ('schedule = "progressive"', 'schedule = "progresive"', "allowed: progressive, one-shot"),
        ('install = "pip install numpy==1.26.4 ai-edge-litert==2.1.0"', "", r"missing key\(s\) install"),
    ],
)
def test_bad_values_are_explained(tmp_path, old, new, pattern):
    assert old in RPI4
    f = _write(tmp_path, RPI4.replace(old, new))
    with pytest.raises(EdgeXrayError, match=pattern):
        load_profile(f)


def test_cli_list_and_show():
    runner = CliRunner()
    r = runner.invoke(main, ["devices", "list"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split()[:2] == ["name", "arch"] and len(lines) == 1 + len(TARGETS)
    assert any(line.split()[:4] == ["rpi4", "aarch64", "cortex-a72", "litert"] for line in lines)

    r = runner.invoke(main, ["devices", "show", "jetson-orin-nano"])
    assert r.exit_code == 0, r.output
    for expected in (
        "runtime",
        "onnxruntime-tensorrt",
        "TensorrtExecutionProvider",
        "int8, fp32",
        "prune.stage_ratios",
        "0.2, 0.35, 0.5, 0.6",
        "memory_budget_mb",
    ):
        assert expected in r.output

    r = runner.invoke(main, ["devices", "show", "rpi"])
    assert r.exit_code == 2 and "unknown target 'rpi'" in r.output and "Traceback" not in r.output


def test_devices_never_import_torch_or_tensorflow():
    code = (
        "import sys, edgexray.devices, edgexray.devices.cli; "
        "edgexray.devices.load_profile('rpi4'); "
        "print(sorted(m for m in ('torch', 'tensorflow', 'onnx') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_profiles_ask_only_for_what_export_can_build():
    from edgexray.export.formats import PRECISIONS as EXPORT_PRECISIONS
    from edgexray.export.formats import get_format

    assert set(PRECISIONS) == set(EXPORT_PRECISIONS)
    for name in TARGETS:
        p = load_profile(name)
        assert set(p.precisions) <= set(get_format(p.model_format).precisions), name
