"""ONNX Runtime Mobile: the .ort format and its reduced-operator config, for profiles whose
runtime is ONNX Runtime. Written by onnxruntime's own converter
(`python -m onnxruntime.tools.convert_onnx_models_to_ort`), in a subprocess.

The config lists the operators (and, with type reduction, the types) the models use; a minimal
ONNX Runtime built with `--include_ops_by_config <config>` holds only those kernels.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from edgexray.runtime.errors import EdgeXrayError

ORT_CONFIG = "required_operators_and_types.config"  # the converter's name with type reduction
OPTIMIZATION_STYLE = "Fixed"  # CPU execution provider; "Runtime" is for NNAPI / CoreML
_PLATFORM = {"aarch64": "arm", "arm64": "arm", "x86_64": "amd64"}
DEFAULT_TIMEOUT_S = 300


def target_platform(arch: str) -> str:
    """The converter's --target_platform for a device profile's arch."""
    if arch not in _PLATFORM:
        raise EdgeXrayError(
            f"no ONNX Runtime Mobile platform for arch {arch!r}; known: {', '.join(sorted(_PLATFORM))}"
        )
    return _PLATFORM[arch]


def onnx2ort(
    onnx_paths: list, out_dir: str | os.PathLike, *, platform: str, timeout_s: float = DEFAULT_TIMEOUT_S
) -> tuple[dict, Path]:
    """Convert `onnx_paths` to out_dir/<stem>.ort plus one out_dir/ORT_CONFIG covering them all.

    Returns ({onnx path: ort path}, config path). Raises EdgeXrayError with the converter's
    output when it fails.
    """
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="edgexray-ort-") as tmp:
        src, dst = Path(tmp) / "onnx", Path(tmp) / "ort"
        src.mkdir()
        names = {}
        for p in map(Path, onnx_paths):
            if p.suffix != ".onnx" or not p.is_file():
                raise EdgeXrayError(f"{str(p)!r} is not an .onnx file; pass the files edgexray export wrote")
            shutil.copyfile(p, src / p.name)
            names[p] = p.stem + ".ort"
        cmd = [
            sys.executable,
            "-m",
            "onnxruntime.tools.convert_onnx_models_to_ort",
            str(src),
            "--output_dir",
            str(dst),
            "--optimization_style",
            OPTIMIZATION_STYLE,
            "--enable_type_reduction",
            "--target_platform",
            platform,
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise EdgeXrayError(
                f"the ONNX -> ORT conversion did not finish within {timeout_s:.0f} s"
            ) from None
        config = dst / ORT_CONFIG
        missing = [n for n in names.values() if not (dst / n).is_file()]
        if proc.returncode != 0 or missing or not config.is_file():
            raise EdgeXrayError(
                f"onnxruntime's ORT converter failed (exit {proc.returncode}, "
                f"missing {missing or [ORT_CONFIG]}):\n"
                f"{(proc.stdout + proc.stderr)[-3000:]}"
            )
        out_dir.mkdir(parents=True, exist_ok=True)
        result = {}
        for p, n in names.items():
            shutil.copyfile(dst / n, out_dir / n)
            result[p] = out_dir / n
        # the converter names the models by their temporary path: keep the file names only
        text = config.read_text().replace(f"{dst}{os.sep}", "")
        (out_dir / ORT_CONFIG).write_text(text)
    return result, out_dir / ORT_CONFIG


def embed_ort(folder: str | os.PathLike, manifest: dict) -> list[str]:
    """Write the .ort twin of every .onnx variant of an artifact being built (`folder`) and the
    operator config; records them in manifest["ort_mobile"]. Returns the files added."""
    folder = Path(folder)
    onnx_vars = {p: v for p, v in manifest.get("variants", {}).items() if v["file"].endswith(".onnx")}
    # the CPU runtime only: CUDA / TensorRT builds take .onnx (the .ort format is for the CPU EP
    # and the mobile EPs)
    if not onnx_vars or manifest["profile"].get("runtime") != "onnxruntime":
        return []
    platform = target_platform(manifest["profile"]["arch"])
    made, config = onnx2ort([folder / v["file"] for v in onnx_vars.values()], folder, platform=platform)
    files = {}
    for prec, var in onnx_vars.items():
        ort = made[folder / var["file"]]
        var["ort_file"] = ort.name
        files[prec] = {"file": ort.name, "bytes": ort.stat().st_size}
    manifest["ort_mobile"] = {
        "files": files,
        "operator_config": config.name,
        "optimization_style": OPTIMIZATION_STYLE,
        "target_platform": platform,
        "type_reduction": True,
        "minimal_build": minimal_build_command(config.name),
    }
    return [f["file"] for f in files.values()] + [config.name]


def minimal_build_command(config_name: str) -> str:
    """The onnxruntime source-tree command for a minimal runtime holding only these kernels."""
    return (
        f"./build.sh --config MinSizeRel --minimal_build --disable_ml_ops --disable_exceptions "
        f"--include_ops_by_config {config_name} --enable_reduced_operator_type_support "
        f"--build_shared_lib --parallel --skip_tests"
    )


def readme_section(manifest: dict) -> str:
    """The artifact README's ONNX Runtime Mobile section (empty without .ort files)."""
    ort = manifest.get("ort_mobile")
    if not ort:
        return ""
    shipped = ort["files"].get(manifest["model"]["precision"]) or next(iter(ort["files"].values()))
    return f"""
## ONNX Runtime Mobile (.ort format, minimal build)

`{shipped["file"]}` is the shipped model in ONNX Runtime's mobile format (converted by
`python -m onnxruntime.tools.convert_onnx_models_to_ort`, optimization style
{ort["optimization_style"]}, target platform {ort["target_platform"]}); it loads in a full
onnxruntime too: `onnxruntime.InferenceSession("{shipped["file"]}")`. `{ort["operator_config"]}`
lists the operators and types it needs. To build a minimal runtime that holds only those
kernels, from an onnxruntime source checkout of the same version:

```sh
{ort["minimal_build"]}
```

Add `--android --android_sdk_path $ANDROID_HOME --android_ndk_path $ANDROID_NDK_HOME
--android_abi arm64-v8a --android_api 27` for Android, or `--ios --apple_sysroot iphoneos
--osx_arch arm64 --apple_deploy_target 15.0` for iOS. A minimal build loads .ort files only.
"""
