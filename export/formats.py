"""The export formats and the precisions each one can be written in."""

from __future__ import annotations

from dataclasses import dataclass

from edgexray.runtime.errors import EdgeXrayError, unknown_name
from edgexray.runtime.registry import runtime_for_format


@dataclass(frozen=True)
class ExportFormat:
    name: str
    precisions: tuple  # the precisions this format is written in, in build order
    description: str

    @property
    def suffix(self) -> str:
        """File suffix of the exported model (edgexray.runtime.registry)."""
        return runtime_for_format(self.name).suffix

    @property
    def runtime(self) -> str:
        """What runs it on the device: the manifest's model.runtime."""
        return runtime_for_format(self.name).manifest_runtime


FORMATS = {
    f.name: f
    for f in (
        ExportFormat("onnx", ("fp32", "int8"), "ONNX; int8 is ONNX Runtime static QDQ quantization"),
        ExportFormat(
            "tflite",
            ("fp32", "fp16", "dynamic", "int8"),
            "TFLite via onnx2tf; int8 is full-integer with int8 input and output",
        ),
    )
}

# Every precision name, what it means.
PRECISIONS = {
    "fp32": "float32 weights and activations",
    "fp16": "float16 weights, float32 compute",
    "dynamic": "int8 weights, activations quantized at run time (dynamic range)",
    "int8": "int8 weights and activations, calibrated on real images",
}


def list_formats() -> list[str]:
    return list(FORMATS)


def get_format(name: str) -> ExportFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise unknown_name("export format", name, FORMATS) from None


def check_precision(name: str) -> str:
    if name not in PRECISIONS:
        raise unknown_name("precision", name, PRECISIONS)
    return name


def parse_list(text: str | list | tuple) -> list[str]:
    """'onnx, tflite' or ['onnx', 'tflite'] -> ['onnx', 'tflite'] (order kept, no duplicates)."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for item in (str(i).strip().lower() for i in items):
        if item and item not in out:
            out.append(item)
    return out


def export_plan(formats, precisions) -> list[tuple[str, str]]:
    """[(format, precision), ...] to build: every requested precision a requested format supports.

    A precision that none of the requested formats supports is an error, so a typo or a
    mismatch (e.g. `--formats onnx --precisions fp16`) never silently builds nothing.
    """
    fmts = [get_format(f) for f in parse_list(formats)]
    precs = [check_precision(p) for p in parse_list(precisions)]
    if not fmts:
        raise EdgeXrayError(f"no export format given; valid: {', '.join(FORMATS)}")
    if not precs:
        raise EdgeXrayError(f"no precision given; valid: {', '.join(PRECISIONS)}")
    for p in precs:
        if not any(p in f.precisions for f in fmts):
            supported = "; ".join(f"{f.name}: {', '.join(f.precisions)}" for f in fmts)
            raise EdgeXrayError(
                f"precision {p!r} is not available for format(s) "
                f"{', '.join(f.name for f in fmts)} ({supported}); drop it or add "
                "a format that supports it"
            )
    return [(f.name, p) for f in fmts for p in f.precisions if p in precs]


def file_name(fmt: str, precision: str, stem: str = "model") -> str:
    """model_int8.tflite, model_fp32.onnx, ..."""
    return f"{stem}_{precision}{get_format(fmt).suffix}"
