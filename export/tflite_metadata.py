"""TFLite Model Metadata in every shipped .tflite: what a mobile app (MediaPipe Tasks, LiteRT
Support Library, Android Studio's model binding) reads instead of hand-copied constants.

The metadata follows the official schema (metadata_schema.fbs; its flatc-generated classes come
from tflite-support, installed without its dependencies by the Makefile because its pins clash with
this project's protobuf) and is written the way tflite-support's / MediaPipe's MetadataPopulator
writes it: the ModelMetadata flatbuffer (identifier "M001") in a model buffer named
"TFLITE_METADATA", and the associated files (labels, edgexray's manifest subset) as an
uncompressed zip appended to the model. The populator itself needs tflite-support's compiled
extensions and their dependencies; the test reads the result back with MediaPipe's own extractor.

Only the flatbuffer's metadata list and one extra buffer change: every tensor, weight and
operator is repacked as it was, so the model computes the same values bit for bit.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import flatbuffers
import numpy as np
from tensorflow_lite_support.metadata import metadata_schema_py_generated as meta_fb

from edgexray.runtime.errors import EdgeXrayError

METADATA_NAME = "TFLITE_METADATA"  # MetadataPopulator.METADATA_FIELD_NAME
METADATA_IDENTIFIER = b"M001"
TFLITE_IDENTIFIER = b"TFL3"
LABELS_FILE = "labels.txt"
MANIFEST_FILE = "edgexray_manifest.json"
AUTHOR = "edgexray"
# Everything written here (ImageProperties, NormalizationOptions, Stats, TENSOR_AXIS_LABELS and
# DESCRIPTIONS files, no AssociatedFile.version) is schema 1.0.0.
MIN_PARSER_VERSION = "1.0.0"
NOT_A_MEDICAL_DEVICE = (
    "Not a medical device: research and engineering use only; not for diagnosis or treatment decisions."
)
# manifest keys copied into the embedded JSON (the rest stays in the artifact's manifest.json)
MANIFEST_SUBSET = (
    "schema",
    "name",
    "created",
    "arch",
    "class_names",
    "preprocess",
    "input",
    "output",
    "synthetic_data",
    "reduction",
    "accuracy",
)
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed: the same model and manifest give the same bytes


@dataclass(frozen=True)
class TfliteMetadata:
    """What goes into one .tflite; built from the artifact manifest by manifest2metadata."""

    name: str
    version: str
    description: str
    size: int
    color_space: str  # "GRAYSCALE" or "RGB"
    mean: tuple  # per channel, on the 0-255 pixel scale
    std: tuple  # per channel, on the 0-255 pixel scale
    input_description: str
    output_kind: str  # "logits" or "probabilities"
    output_description: str
    labels: tuple
    manifest_json: str  # edgexray's manifest subset, embedded as MANIFEST_FILE
    author: str = AUTHOR


TASKS = "tasks"  # manifest2metadata's name for manifest["tasks_variant"]


def manifest2metadata(manifest: dict, variant: str) -> TfliteMetadata:
    """The metadata of manifest["variants"][variant], or of manifest["tasks_variant"] for
    variant TASKS (pure)."""
    tasks = variant == TASKS
    var = manifest["tasks_variant"] if tasks else manifest["variants"][variant]
    pre = var.get("preprocess") or manifest["preprocess"]  # its own where model.tflite is Tasks-ready
    names = tuple(manifest["class_names"])
    inp, out = var["input"], var["output"]
    mean = tuple(255.0 * m for m in pre["mean"])
    std = tuple(255.0 * s for s in pre["std"])
    arch, precision = manifest["arch"], "int8" if tasks else variant
    reduction = manifest.get("reduction") or {}
    pruning = ", ".join(
        f"{100 * v:.0f}% fewer {k}" for k, v in reduction.items() if isinstance(v, (int, float))
    )
    config = manifest.get("config") or {}
    if manifest.get("synthetic_data"):
        dataset = "SYNTHETIC X-rays (demo data; says nothing about clinical performance)"
    elif config.get("data_dir"):
        dataset = f"the image folder {Path(str(config['data_dir'])).name!r}"
    else:
        dataset = "the user's images"
    acc = (manifest.get("accuracy") or {}).get(f"exported_{precision}")
    description = (
        f"{arch} X-ray classifier ({', '.join(names)}), {precision}"
        f"{' (Tasks-ready: RGB pixels in, probabilities out)' if tasks else ''}, "
        f"{'CBAM-guided channel pruning: ' + pruning if pruning else 'not pruned'}; "
        f"trained on {dataset}"
        + (f"; held-out accuracy {100 * acc:.1f}%" if isinstance(acc, (int, float)) else "")
        + f". {NOT_A_MEDICAL_DEVICE} Made by edgexray; see {MANIFEST_FILE}."
    )
    q = inp.get("quantization")
    quant = (
        f" The model takes {inp['dtype']}: q = round(x / {q['scale']:.8g}) + "
        f"{q['zero_point']} after normalization."
        if q
        else ""
    )
    channels = pre["channels"]
    input_description = (
        f"{'Gray' if channels == 1 else 'RGB'} X-ray, {pre['size']}x{pre['size']}, "
        f"{inp.get('layout', 'NHWC')} {inp['shape']}: pixel values 0-255, normalized as "
        f"(pixel - mean) / std with the NormalizationOptions below (0-255 scale).{quant}"
    )
    if pre.get("intensity", "none") != "none":  # run.py's Preprocess.adjust_intensity
        input_description += (
            f" First, per image: {pre['intensity']} the gray values in [0, 1] (histogram "
            "equalization or mean 0.5 / std 0.25), as run.py's preprocess does, then x 255."
        )
    if tasks:  # normalization, gray conversion and quantization are inside the model
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        input_description = (
            f"RGB image, {pre['size']}x{pre['size']}, NHWC {inp['shape']} uint8: the raw pixel "
            "values 0-255 (identity normalization). A gray X-ray is given as R = G = B; the "
            "model averages the channels, normalizes and quantizes inside."
        )
    kind = out.get("kind", "logits")
    output_description = (
        f"{'Logits' if kind == 'logits' else 'Probabilities'} of the "
        f"{len(names)} classes, in the order of {LABELS_FILE}"
        + ("; softmax gives probabilities." if kind == "logits" else ".")
    )
    subset = {k: manifest[k] for k in MANIFEST_SUBSET if k in manifest}
    subset.update(
        preprocess=pre,
        input=inp,
        output=out,
        precision=precision,
        file=var["file"],
        tasks_ready=tasks,
        edgexray_version=(manifest.get("tool_versions") or {}).get("edgexray"),
    )
    return TfliteMetadata(
        name=manifest["name"],
        version=str(manifest.get("created", "")),
        description=description,
        size=int(pre["size"]),
        color_space="RGB" if tasks or channels == 3 else "GRAYSCALE",
        mean=mean,
        std=std,
        input_description=input_description,
        output_kind=kind,
        output_description=output_description,
        labels=names,
        manifest_json=json.dumps(subset, indent=2, sort_keys=True) + "\n",
    )


def _associated(name: str, description: str, kind: int) -> meta_fb.AssociatedFileT:
    f = meta_fb.AssociatedFileT()
    f.name, f.description, f.type = name, description, kind
    return f


def metadata2buffer(
    meta: TfliteMetadata, input_name: str = "image", output_name: str = "probability"
) -> bytes:
    """The ModelMetadata flatbuffer ("M001") of a one-input, one-output image classifier."""
    image = meta_fb.ImagePropertiesT()
    image.colorSpace = getattr(meta_fb.ColorSpaceType, meta.color_space)
    image.defaultSize = meta_fb.ImageSizeT()
    image.defaultSize.width = image.defaultSize.height = meta.size
    norm = meta_fb.NormalizationOptionsT()
    norm.mean, norm.std = list(meta.mean), list(meta.std)
    unit = meta_fb.ProcessUnitT()
    unit.optionsType = meta_fb.ProcessUnitOptions.NormalizationOptions
    unit.options = norm
    stats = meta_fb.StatsT()  # value range the normalized input takes (pixels 0 and 255)
    stats.min = [(0.0 - m) / s for m, s in zip(meta.mean, meta.std)]
    stats.max = [(255.0 - m) / s for m, s in zip(meta.mean, meta.std)]
    inp = meta_fb.TensorMetadataT()
    inp.name, inp.description = input_name, meta.input_description
    inp.content = meta_fb.ContentT()
    inp.content.contentPropertiesType = meta_fb.ContentProperties.ImageProperties
    inp.content.contentProperties = image
    inp.processUnits, inp.stats = [unit], stats

    out = meta_fb.TensorMetadataT()
    out.name, out.description = output_name, meta.output_description
    out.content = meta_fb.ContentT()
    out.content.contentPropertiesType = meta_fb.ContentProperties.FeatureProperties
    out.content.contentProperties = meta_fb.FeaturePropertiesT()
    out.stats = meta_fb.StatsT()
    if meta.output_kind == "probabilities":
        out.stats.min, out.stats.max = [0.0], [1.0]
    out.associatedFiles = [
        _associated(
            LABELS_FILE,
            "Class names, one per line, in output order.",
            meta_fb.AssociatedFileType.TENSOR_AXIS_LABELS,
        )
    ]
    sub = meta_fb.SubGraphMetadataT()
    sub.inputTensorMetadata, sub.outputTensorMetadata = [inp], [out]

    model = meta_fb.ModelMetadataT()
    model.name, model.description, model.version = meta.name, meta.description, meta.version
    model.author, model.minParserVersion = meta.author, MIN_PARSER_VERSION
    model.subgraphMetadata = [sub]
    model.associatedFiles = [
        _associated(
            MANIFEST_FILE,
            "edgexray manifest subset (JSON): pre-processing, input quantization, "
            "class names, accuracy on the held-out split.",
            meta_fb.AssociatedFileType.DESCRIPTIONS,
        )
    ]
    b = flatbuffers.Builder(0)
    b.Finish(model.Pack(b), METADATA_IDENTIFIER)
    return bytes(b.Output())


def tflite2tflite_with_metadata(model: bytes, meta: TfliteMetadata) -> bytes:
    """`model` (a .tflite's bytes, with or without metadata) with `meta` populated (pure)."""
    from ai_edge_litert import schema_py_generated as schema

    if len(model) < 8 or model[4:8] != TFLITE_IDENTIFIER:
        raise EdgeXrayError(
            "not a TFLite flatbuffer (identifier TFL3 missing); metadata can "
            "only be added to the .tflite files edgexray export writes"
        )
    m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model, 0))
    if len(m.subgraphs) != 1 or len(m.subgraphs[0].inputs) != 1 or len(m.subgraphs[0].outputs) != 1:
        raise EdgeXrayError(
            "TFLite metadata is written for one subgraph with one input and one "
            "output (an image classifier); this model has another shape"
        )
    sg = m.subgraphs[0]
    names = [
        sg.tensors[i].name.decode() if isinstance(sg.tensors[i].name, bytes) else sg.tensors[i].name
        for i in (sg.inputs[0], sg.outputs[0])
    ]
    buf = schema.BufferT()
    buf.data = np.frombuffer(metadata2buffer(meta, *names), np.uint8)
    m.metadata = [e for e in (m.metadata or []) if _name(e) != METADATA_NAME]
    m.buffers = m.buffers or []
    # an earlier TFLITE_METADATA buffer stays as an unused empty entry: indices must not move
    for e in model_metadata_entries(model):
        if e[0] == METADATA_NAME:
            m.buffers[e[1]] = schema.BufferT()
    m.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(m.buffers) - 1
    m.metadata.append(entry)
    b = flatbuffers.Builder(0)
    b.Finish(m.Pack(b), TFLITE_IDENTIFIER)
    out = io.BytesIO(bytes(b.Output()))
    out.seek(0, io.SEEK_END)
    # appended, uncompressed zip: what MetadataPopulator writes and the extractors read
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as z:
        for fname, data in (
            (LABELS_FILE, "".join(f"{c}\n" for c in meta.labels)),
            (MANIFEST_FILE, meta.manifest_json),
        ):
            z.writestr(zipfile.ZipInfo(fname, date_time=_ZIP_DATE), data.encode("utf-8"))
    return out.getvalue()


def _name(entry) -> str:
    n = entry.name
    return n.decode() if isinstance(n, bytes) else (n or "")


def model_metadata_entries(model: bytes) -> list[tuple[str, int]]:
    """(name, buffer index) of the flatbuffer's metadata list."""
    from ai_edge_litert import schema_py_generated as schema

    m = schema.Model.GetRootAsModel(model, 0)
    return [(m.Metadata(i).Name().decode(), m.Metadata(i).Buffer()) for i in range(m.MetadataLength())]


def read_tflite_metadata(model: bytes) -> dict:
    """The metadata a .tflite carries, as a plain dict (for checks; apps use the extractors):
    {"name", "description", "version", "author", "min_parser_version", "input": {...},
    "output": {...}, "files": {name: bytes}}. Raises EdgeXrayError when there is none."""
    from ai_edge_litert import schema_py_generated as schema

    entries = dict(model_metadata_entries(model))
    if METADATA_NAME not in entries:
        raise EdgeXrayError(
            "the model carries no TFLite Model Metadata; re-create the artifact with this edgexray"
        )
    root = schema.Model.GetRootAsModel(model, 0)
    data = root.Buffers(entries[METADATA_NAME]).DataAsNumpy().tobytes()
    md = meta_fb.ModelMetadataT.InitFromObj(meta_fb.ModelMetadata.GetRootAsModelMetadata(data, 0))

    def dec(s):
        return s.decode() if isinstance(s, bytes) else s

    sub = md.subgraphMetadata[0]

    def tensor(t):
        d = {
            "name": dec(t.name),
            "description": dec(t.description),
            "files": {dec(f.name): f.type for f in t.associatedFiles or []},
        }
        if (
            t.content is not None
            and t.content.contentPropertiesType == meta_fb.ContentProperties.ImageProperties
        ):
            props = t.content.contentProperties
            d["color_space"] = {
                v: k for k, v in vars(meta_fb.ColorSpaceType).items() if not k.startswith("_")
            }[props.colorSpace]
            d["size"] = [props.defaultSize.width, props.defaultSize.height]
        for u in t.processUnits or []:
            if u.optionsType == meta_fb.ProcessUnitOptions.NormalizationOptions:
                d["mean"], d["std"] = list(u.options.mean), list(u.options.std)
        if t.stats is not None:
            d["min"] = list(t.stats.min) if t.stats.min is not None else None
            d["max"] = list(t.stats.max) if t.stats.max is not None else None
        return d

    files = {}
    if zipfile.is_zipfile(io.BytesIO(model)):
        with zipfile.ZipFile(io.BytesIO(model)) as z:
            files = {n: z.read(n) for n in z.namelist()}
    return {
        "name": dec(md.name),
        "description": dec(md.description),
        "version": dec(md.version),
        "author": dec(md.author),
        "min_parser_version": dec(md.minParserVersion),
        "files_described": {dec(f.name): f.type for f in md.associatedFiles or []},
        "input": tensor(sub.inputTensorMetadata[0]),
        "output": tensor(sub.outputTensorMetadata[0]),
        "files": files,
    }


def embed_metadata(folder: str | os.PathLike, manifest: dict) -> list[str]:
    """Populate the metadata into every .tflite variant of an artifact being built (`folder`),
    updating manifest["variants"][*]["bytes"]; returns the files changed. Call before sealing."""
    folder = Path(folder)
    changed = []
    entries = list(manifest.get("variants", {}).items())
    if manifest.get("tasks_variant"):
        entries.append((TASKS, manifest["tasks_variant"]))
    for precision, var in entries:
        if not var["file"].endswith(".tflite"):
            continue
        path = folder / var["file"]
        data = tflite2tflite_with_metadata(path.read_bytes(), manifest2metadata(manifest, precision))
        path.write_bytes(data)
        var["bytes"] = len(data)
        var["tflite_metadata"] = {
            "min_parser_version": MIN_PARSER_VERSION,
            "associated_files": [LABELS_FILE, MANIFEST_FILE],
        }
        changed.append(var["file"])
    return changed
