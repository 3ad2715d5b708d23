"""The deployable artifact: one folder (and a zip of it) per target, model and precision.

    <out>/<target>-<arch>-<precision>/
        model.tflite | model.onnx   the shipped model; other precisions as model_<precision>.<ext>
        labels.txt                  one class per line, in output order (== class_names)
        manifest.json               docs/ARCHITECTURE.md "manifest" (edgexray.artifact/1)
        run.py                      edgexray.export.run_py_render.render_run_py(), sealed
        checksums.sha256            sha256sum format, every file incl. manifest.json and run.py
        README.md                   device, Android (Kotlin) and iOS (Swift) instructions
        report.html                 self-contained report, plots as base64 PNG
    <out>/<target>-<arch>-<precision>.zip

Atomic: everything is built in a hidden temporary folder next to the destination and renamed
at the end; the zip is written under a temporary name and renamed after the folder. A killed
build leaves only hidden `.<name>.*.partial` entries.

Sealed (seal_artifact): manifest "files" hashes every file but the three seal files; run.py holds
the sha256 of manifest.json; checksums.sha256 hashes every file. Editing the manifest alone, or
any file, is caught by run.py, `edgexray bench` and `edgexray verify` (exit 3).

No patient image is ever written: the only image-derived content allowed is Grad-CAM of
synthetic data (`images_are_synthetic`).

The bundle reads model input/output details with edgexray.runtime.runners (the code run.py
itself runs); the runtime layer is torch-free.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from string import Template

from edgexray.devices import DeviceProfile
from edgexray.fsutil import partial_prefix, refuse_existing, remove_stale_partials, replace_dir, sha256_file
from edgexray.runtime.errors import EdgeXrayError
from edgexray.runtime.preprocess import Preprocess
from edgexray.runtime.registry import artifact_formats, runtime_for_manifest

log = logging.getLogger(__name__)

SCHEMA = "edgexray.artifact/1"
TEMPLATES = Path(__file__).resolve().parent / "templates"
# distribution names whose versions go into every manifest
TOOLS = (
    "edgexray",
    "torch",
    "torchvision",
    "torch-pruning",
    "onnx",
    "onnxruntime",
    "onnxsim",
    "onnx2tf",
    "tensorflow",
    "ai-edge-litert",
    "numpy",
)
# keys write_artifact sets itself; manifest_fields may not override them
RESERVED = (
    "schema",
    "name",
    "created",
    "model",
    "input",
    "output",
    "preprocess",
    "class_names",
    "threads",
    "profile",
    "arch",
    "variants",
    "tool_versions",
    "files",
)
_SUFFIX = {fmt: info.suffix for fmt, info in artifact_formats().items()}
_RUNTIME = {fmt: info.manifest_runtime for fmt, info in artifact_formats().items()}  # model.runtime
CHECKSUMS = "checksums.sha256"
# written by seal_artifact and sealed by checksums.sha256 and run.py, not by manifest "files"
SEAL_FILES = ("manifest.json", "run.py", CHECKSUMS)
# files that could hold an image; none may end up in an artifact
_IMAGE_SUFFIXES = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".dcm",
    ".pgm",
    ".npy",
    ".npz",
    ".webp",
)


def tool_versions() -> dict:
    """{distribution: version or None when not installed}, via importlib.metadata."""
    out = {}
    for dist in TOOLS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def artifact_name(target: DeviceProfile, arch: str, precision: str) -> str:
    return f"{target.name}-{arch}-{precision}"


def model_io_spec(path: str | os.PathLike) -> dict:
    """{"input": ..., "output": ...} of a .tflite or .onnx file, as manifest.json stores them."""
    from edgexray.runtime.runners import runner_for_file

    path = Path(path)
    if path.suffix in _SUFFIX.values():
        runner = runner_for_file(path, threads=1)
    else:
        raise EdgeXrayError(
            f"model file {str(path)!r} is neither .tflite nor .onnx; pass the files edgexray export wrote"
        )
    return {"input": runner.input_spec.to_dict(), "output": runner.output_spec.to_dict()}


def write_artifact(
    out_root: str | os.PathLike,
    *,
    target: DeviceProfile,
    arch: str,
    precision: str,
    model_files: dict,
    manifest_fields: dict,
    class_names,
    preprocess,
    report_assets: dict | None = None,
    images_are_synthetic: bool = False,
    output_kind: str = "logits",
    verify: Callable[[Path], dict] | None = None,
    tasks_model: str | os.PathLike | None = None,
    main_model: str = "int8-io",
    force: bool = False,
) -> Path:
    """Write <out_root>/<target>-<arch>-<precision>/ and its .zip; return the folder.

    model_files: {precision: path}; `precision` is the shipped one, the others ride along.
    manifest_fields: everything the pipeline measured (see docs/ARCHITECTURE.md "bundle"); merged
        into manifest.json at the top level and shown in report.html.
    report_assets: {"plots": {title: PNG bytes | matplotlib Figure},
                    "gradcam": {title: PNG bytes | Figure}} (Grad-CAM kept only when
        images_are_synthetic; otherwise the report says it was left out for privacy).
    tasks_model: the Tasks-ready variant (export/tasks_variant.py), shipped as model_tasks.tflite.
    main_model: "int8-io" ships model_files[precision] as model.<ext>; "tasks" (the profile's
        main_model, e.g. android-arm64) ships tasks_model as model.tflite, run.py running it,
        and the exported files as model_<precision>.tflite.
    verify: called with the finished temporary folder before the report is written (e.g. the
        emulated-ARM check); its result appears in the report, and whatever it stored in
        manifest.json is kept.
    """
    out_root = Path(out_root)
    name = artifact_name(target, arch, precision)
    final_dir, final_zip = out_root / name, out_root / f"{name}.zip"
    refuse_existing(final_dir, force, "artifact")
    refuse_existing(final_zip, force, "artifact zip")
    _check_inputs(target, precision, model_files, manifest_fields, class_names, output_kind)
    if main_model not in ("int8-io", "tasks"):
        raise ValueError(f"main_model {main_model!r}; allowed: int8-io, tasks")
    if main_model == "tasks" and tasks_model is None:
        raise EdgeXrayError(
            f"target {target.name!r} ships the Tasks-ready model as {name}/model.tflite, but none "
            "was given (tasks_model); make it with edgexray.export.tasks_variant.torch2tasks_tflite"
        )
    preprocess = preprocess if isinstance(preprocess, Preprocess) else Preprocess.from_dict(preprocess)
    report_assets = dict(report_assets or {})
    unknown = set(report_assets) - {"plots", "gradcam"}
    if unknown:
        raise ValueError(f"report_assets keys {sorted(unknown)}; allowed: plots, gradcam")

    out_root.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(final_dir)
    remove_stale_partials(final_zip)
    tmp = Path(tempfile.mkdtemp(prefix=partial_prefix(final_dir), dir=out_root))
    tmp_zip = None
    try:
        manifest = _assemble(
            tmp,
            name,
            target,
            arch,
            precision,
            model_files,
            manifest_fields,
            list(class_names),
            preprocess,
            output_kind,
            main_model,
        )
        _add_mobile_files(tmp, manifest, tasks_model, main_model)
        _write_text(tmp / "labels.txt", "".join(f"{c}\n" for c in class_names))
        _write_text(tmp / "README.md", render_readme(manifest))
        seal_artifact(tmp, manifest)  # verify() runs run.py, which checks the seal
        if verify is not None:
            result = verify(tmp)
            manifest = json.loads((tmp / "manifest.json").read_text(encoding="utf-8"))
            manifest.setdefault("arm_verification", result)
        html = render_report_html(manifest, report_assets, images_are_synthetic=images_are_synthetic)
        _write_text(tmp / "report.html", html)
        seal_artifact(tmp, manifest)
        _refuse_images(tmp)

        tmp_zip = out_root / f"{partial_prefix(final_zip)}zip"
        _zip_folder(tmp, name, tmp_zip)
        if force:
            final_zip.unlink(missing_ok=True)  # never leave a new folder beside an old zip
        replace_dir(tmp, final_dir, force)
        os.replace(tmp_zip, final_zip)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if tmp_zip is not None:
            tmp_zip.unlink(missing_ok=True)
        raise
    log.info("artifact %s (%d files) and %s", final_dir, len(manifest["files"]), final_zip.name)
    return final_dir


# ----------------------------------------------------------------------------- manifest


def _add_mobile_files(tmp: Path, manifest: dict, tasks_model=None, main_model="int8-io") -> None:
    """The Tasks-ready variant (beside the shipped model, or as it), TFLite Model Metadata in
    every .tflite, .ort files for ONNX Runtime; before the seal."""
    from edgexray.export.ort_mobile import embed_ort
    from edgexray.export.tasks_variant import add_tasks_variant, ship_tasks_as_main
    from edgexray.export.tflite_metadata import embed_metadata

    if main_model == "tasks":
        ship_tasks_as_main(tmp, manifest, tasks_model)
    elif tasks_model is not None:
        add_tasks_variant(tmp, manifest, tasks_model)
    embed_metadata(tmp, manifest)
    embed_ort(tmp, manifest)  # .ort + operator config where the runtime is ONNX Runtime


def _check_inputs(target, precision, model_files, manifest_fields, class_names, output_kind):
    if precision not in model_files:
        raise EdgeXrayError(
            f"the shipped precision {precision!r} has no model file; got files "
            f"for {sorted(model_files)}; export it first (edgexray export)"
        )
    for prec, path in model_files.items():
        path = Path(path)
        if not path.is_file():
            raise EdgeXrayError(f"model file {str(path)!r} ({prec}) does not exist")
        if path.suffix != _SUFFIX.get(target.model_format):
            raise EdgeXrayError(
                f"target {target.name!r} runs {target.runtime} and needs a "
                f"{target.model_format} model; got {path.name!r} for {prec}"
            )
    clash = sorted(set(manifest_fields) & set(RESERVED))
    if clash:
        raise ValueError(f"manifest_fields may not set {clash}; the bundle writes those")
    names = list(class_names)
    if not names or any(not isinstance(c, str) or not c or "\n" in c for c in names):
        raise EdgeXrayError(f"class names {names!r}; need non-empty single-line strings")
    if output_kind not in ("logits", "probabilities"):
        raise ValueError(f"output_kind {output_kind!r}; allowed: logits, probabilities")


def _assemble(
    tmp: Path,
    name,
    target,
    arch,
    precision,
    model_files,
    fields,
    class_names,
    preprocess,
    output_kind,
    main_model="int8-io",
) -> dict:
    from edgexray.export.formats import file_name

    variants = {}
    for prec, src in sorted(model_files.items(), key=lambda kv: kv[0] != precision):
        fname = (
            f"model{_SUFFIX[target.model_format]}"
            if prec == precision and main_model == "int8-io"
            else file_name(target.model_format, prec)
        )
        shutil.copyfile(src, tmp / fname)
        spec = model_io_spec(tmp / fname)
        _check_io(spec, preprocess, class_names, fname)
        spec["output"]["kind"] = output_kind
        variants[prec] = {"file": fname, "bytes": (tmp / fname).stat().st_size, **spec}
    shipped = variants[precision]
    profile = target.to_dict()
    profile["source"] = Path(target.source).name if target.source else ""
    model = {
        "file": shipped["file"],
        "runtime": _RUNTIME[target.model_format],
        "precision": precision,
        "arch": arch,
    }
    if target.execution_provider:
        model["execution_provider"] = target.execution_provider
        if target.execution_provider != "CPUExecutionProvider":
            # run.py falls back to the CPU (and says so) where onnxruntime-gpu/CUDA is missing
            model["provider_fallback"] = "cpu"
    if target.delegate:
        model["delegate"] = target.delegate
    return {
        "schema": SCHEMA,
        "name": name,
        "created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "model": model,
        "input": shipped["input"],
        "output": shipped["output"],
        "preprocess": preprocess.to_dict(),
        "class_names": class_names,
        "threads": target.threads,
        "profile": profile,
        "arch": arch,
        "variants": variants,
        "tool_versions": tool_versions(),
        **json.loads(json.dumps(fields, default=_jsonable)),
        "files": {},
    }


def _check_io(spec: dict, pre: Preprocess, class_names: list, fname: str) -> None:
    shape, layout = spec["input"]["shape"], spec["input"]["layout"]
    want = (
        [1, pre.size, pre.size, pre.channels] if layout == "NHWC" else [1, pre.channels, pre.size, pre.size]
    )
    if [abs(d) for d in shape][1:] != want[1:]:
        raise EdgeXrayError(
            f"{fname}: model input {shape} ({layout}) does not match the "
            f"pre-processing (size {pre.size}, {pre.channels} channel(s)); "
            "export the model from the same checkpoint"
        )
    out = spec["output"]["shape"]
    if not out or out[-1] != len(class_names):
        raise EdgeXrayError(
            f"{fname}: model output {out} does not have one value per class "
            f"({len(class_names)}: {class_names})"
        )


def _jsonable(obj):
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"manifest field of type {type(obj).__name__} is not JSON-serializable")


def _write_text(path: Path, text: str, executable: bool = False) -> None:
    path.write_text(text, encoding="utf-8")
    if executable:
        path.chmod(0o755)


def _artifact_files(folder: Path) -> list:
    return [
        p
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.relative_to(folder).parts
    ]


def seal_artifact(folder: str | os.PathLike, manifest: dict) -> None:
    """Write manifest.json with "files" = sha256 and size of every file but SEAL_FILES, run.py
    holding the manifest's sha256, and checksums.sha256 over every other file.

    For a folder being built (not atomic); run it again after changing any file or field.
    """
    folder = Path(folder)
    manifest["files"] = {
        rel: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in _artifact_files(folder)
        if (rel := p.relative_to(folder).as_posix()) not in SEAL_FILES
    }
    write_seal(folder, manifest)


def write_seal(folder: Path, manifest: dict) -> None:
    """manifest.json as given, run.py sealed with its sha256, checksums.sha256 over every file."""
    data = (json.dumps(manifest, indent=2) + "\n").encode("utf-8")
    (folder / "manifest.json").write_bytes(data)
    _write_text(folder / "run.py", _render_run_py(hashlib.sha256(data).hexdigest()), executable=True)
    _write_text(
        folder / CHECKSUMS,
        "".join(
            f"{sha256_file(p)}  {p.relative_to(folder).as_posix()}\n"
            for p in _artifact_files(folder)
            if p.name != CHECKSUMS or p.parent != folder
        ),
    )


def _refuse_images(folder: Path) -> None:
    images = [
        p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES
    ]
    if images:
        raise EdgeXrayError(
            f"the artifact would contain image files {images}; no image is ever "
            "written into an artifact (report images are embedded in report.html)"
        )


def _render_run_py(manifest_sha256: str) -> str:
    try:
        from edgexray.export.run_py_render import render_run_py
    except ImportError as e:
        raise EdgeXrayError(
            f"cannot write run.py: edgexray.export.run_py_render is missing ({e}); reinstall edgexray"
        ) from None
    return render_run_py(manifest_sha256)


def _zip_folder(folder: Path, arc_root: str, dest: Path) -> None:
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, f"{arc_root}/{p.relative_to(folder).as_posix()}")
    with open(dest, "rb") as f:
        os.fsync(f.fileno())


# ----------------------------------------------------------------------------- README


def _f32(x) -> str:
    """Shortest text that reads back as the same float32 (what the runtimes store)."""
    import numpy as np

    return np.format_float_positional(np.float32(x), unique=True, trim="0")


# manifest preprocess "intensity" -> what the README's normalization step adds (runtime.preprocess)
INTENSITY_STEPS = {
    "standardize": "; before that, per image: g = 0.5 + 0.25 (g - mean(g)) / std(g) over all its "
    "pixels (a flat image: 0.5)",
    "equalize": "; before that, per image: histogram equalization of g quantized to 256 levels "
    "(floor(255 g + 0.5)): each level becomes (cdf(level) - cdf(darkest)) / (pixels - cdf(darkest)) "
    "(a flat image: 0.5), as run.py's `equalize_images`",
}


def render_readme(manifest: dict) -> str:
    """README.md of an artifact, from its manifest (pure)."""
    prof, model, inp, out = manifest["profile"], manifest["model"], manifest["input"], manifest["output"]
    pre = manifest["preprocess"]
    names = manifest["class_names"]
    qin, qout = inp.get("quantization"), out.get("quantization")
    raw_pixels = pre.get("pixels", "unit") == "raw"  # model.tflite is the Tasks-ready file
    shipped = manifest["tasks_variant"] if raw_pixels else manifest["variants"][model["precision"]]
    model_bytes = shipped["bytes"]
    install = (
        prof["install"]
        if prof["install"].startswith("pip ")
        else f"pip install numpy==1.26.4 {runtime_for_manifest(model['runtime']).pip_requirement}"
    )
    if qin:
        lo, hi = (-128, 127) if inp["dtype"] == "int8" else (0, 255)
        zp = int(qin["zero_point"])
        quant_step = (
            f"Quantize to {inp['dtype']}: `q = clip(round_half_even(x / {_f32(qin['scale'])})"
            f" {'-' if zp < 0 else '+'} {abs(zp)}, {lo}, {hi})` (scale and zero point of "
            "the model input, float32 arithmetic)."
        )
    else:
        quant_step = f"No quantization: the model takes {inp['dtype']} values as they are."
    kind = out.get("kind", "logits")
    deq = f"dequantize `real = {_f32(qout['scale'])} * (q - ({qout['zero_point']}))`, then " if qout else ""
    probs = (
        "softmax over the classes gives probabilities" if kind == "logits" else "the values are probabilities"
    )
    output_step = f"{deq}{probs}."
    accel = (
        f", {model.get('delegate') or model.get('execution_provider')}"
        if model.get("delegate") or model.get("execution_provider")
        else ""
    )

    def spec_text(s):
        q = s.get("quantization")
        qt = f", scale {q['scale']:.6g}, zero point {q['zero_point']}" if q else ""
        return f"{s['shape']} {s.get('layout', '')} {s['dtype']}{qt}".replace("  ", " ")

    values = dict(
        name=manifest["name"],
        edgexray_version=manifest["tool_versions"].get("edgexray") or "?",
        target_name=prof["name"],
        target_description=prof["description"],
        model_file=model["file"],
        model_format=prof["model_format"],
        precision=model["precision"],
        model_bytes=model_bytes,
        arch=manifest["arch"],
        class_list=", ".join(names),
        input_summary=spec_text(inp),
        output_summary=spec_text(out) + f" ({kind})",
        runtime=prof["runtime"],
        threads=manifest.get("threads", prof["threads"]),
        accel=accel,
        created=manifest["created"],
        install_python=install,
        size=pre["size"],
        channels=pre["channels"],
        mean=pre["mean"],
        std=(
            str(pre["std"])
            if not raw_pixels
            else f"{pre['std']}, where g is 255 x the gray value (raw pixels 0-255: the model "
            "averages the channels and normalizes inside)"
        )
        + INTENSITY_STEPS.get(pre.get("intensity", "none"), ""),
        quant_step=quant_step,
        layout=inp["layout"],
        input_shape=inp["shape"],
        input_dtype=inp["dtype"],
        output_step=output_step,
    )
    if raw_pixels:
        mobile = ""  # the MediaPipe Tasks section below is for this very file
    elif model["runtime"] == "litert":
        mobile = Template((TEMPLATES / "mobile_tflite.md.tmpl").read_text()).substitute(
            name=manifest["name"],
            model_file=model["file"],
            model_stem=Path(model["file"]).stem,
            size=pre["size"],
            channels=pre["channels"],
            mean_kt=", ".join(f"{_f32(m)}f" for m in pre["mean"]),
            std_kt=", ".join(f"{_f32(s)}f" for s in pre["std"]),
            mean_swift=", ".join(_f32(m) for m in pre["mean"]),
            std_swift=", ".join(_f32(s) for s in pre["std"]),
            input_int8=str(bool(qin) and inp["dtype"] == "int8").lower(),
            in_scale=_f32(qin["scale"]) if qin else "1.0",
            in_zero=int(qin["zero_point"]) if qin else 0,
            output_int8=str(bool(qout) and out["dtype"] == "int8").lower(),
            out_scale=_f32(qout["scale"]) if qout else "1.0",
            out_zero=int(qout["zero_point"]) if qout else 0,
            output_is_logits=str(kind == "logits").lower(),
            labels_quoted=", ".join(json.dumps(n) for n in names),
            threads=prof["threads"],
        )
        if qin and inp["dtype"] != "int8":
            raise EdgeXrayError(
                f"input dtype {inp['dtype']} is not covered by the mobile code; "
                "export full-integer int8 or float models"
            )
    else:
        mobile = Template((TEMPLATES / "mobile_onnx.md.tmpl").read_text()).substitute(runtime=prof["runtime"])
    from edgexray.export.mobile_snippets import readme_section as tasks_readme
    from edgexray.export.ort_mobile import readme_section as ort_readme

    values["mobile"] = mobile + tasks_readme(manifest) + ort_readme(manifest)
    values["measured"] = _measured_table(manifest.get("models"))
    readme = Template((TEMPLATES / "README.md.tmpl").read_text()).substitute(values)
    if manifest.get("synthetic_data"):
        title, rest = readme.split("\n", 1)
        readme = (
            f"{title}\n\n> **SYNTHETIC demo:** trained and evaluated on procedurally drawn "
            "X-rays, not patient images; its accuracy says nothing about clinical "
            f"performance.\n{rest}"
        )
    return readme


def _measured_table(models) -> str:
    """Markdown table of manifest "models" (what the build measured), or nothing."""
    rows = [m for m in models or [] if isinstance(m, dict)]
    if not rows:
        return ""

    def cell(v, fmt):
        return "" if v is None else fmt(v)

    lines = [
        "",
        "## Measured at build time (on the build host, not on the device)",
        "",
        "| model | params | MACs | size | latency p50 | accuracy |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for m in rows:
        lat = m.get("latency_ms")
        lat = lat.get("p50") if isinstance(lat, dict) else lat
        acc = m.get("accuracy", (m.get("metrics") or {}).get("accuracy"))
        label = str(m.get("label", "?")).replace("|", "/") + (" **(shipped)**" if m.get("shipped") else "")
        lines.append(
            f"| {label} | {cell(m.get('params'), '{:,}'.format)} | "
            f"{cell(m.get('macs'), '{:,}'.format)} | "
            f"{cell(m.get('size_bytes'), lambda b: f'{b / 1e6:.2f} MB')} | "
            f"{cell(lat, lambda v: f'{v:.2f} ms')} | {cell(acc, lambda a: f'{100 * a:.1f}%')} |"
        )
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- report.html


def render_report_html(
    manifest: dict, report_assets: dict | None = None, *, images_are_synthetic: bool = False
) -> str:
    """A self-contained HTML report (pure: returns the text, writes nothing)."""
    from edgexray.export import report_html

    return report_html.render(manifest, report_assets or {}, images_are_synthetic, TEMPLATES)
