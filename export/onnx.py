"""PyTorch -> ONNX: named input/output, metadata, simplified with onnxsim."""

from __future__ import annotations

import io
import json
import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import onnx

from edgexray.fsutil import atomic_write_bytes
from edgexray.runtime.errors import EdgeXrayError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def torch2onnx(
    model: torch.nn.Module,
    path: str | os.PathLike,
    *,
    input_shape: tuple,
    opset: int = 17,
    dynamic_batch: bool = False,
    metadata: dict | None = None,
    simplify: bool = True,
) -> Path:
    """Export `model` (eval mode) to `path`; returns the path.

    `metadata` goes into metadata_props (strings kept, anything else JSON-encoded), e.g.
    {"class_names": [...], "preprocess": Preprocess.to_dict()}. The legacy TorchScript exporter
    is used: on this stack it is fast and deterministic for CNNs, where the dynamo exporter is
    slower and adds nothing. If onnxsim fails, the raw graph is kept with a warning; parity
    decides whether the file is usable.
    """
    import torch  # here, so that `edgexray export --help` and the INT8/TFLite stages stay torch-free

    if len(input_shape) != 4:
        raise EdgeXrayError(f"input_shape {input_shape}; expected (batch, channels, height, width)")
    if not 11 <= int(opset) <= 21:
        raise EdgeXrayError(f"ONNX opset {opset}; allowed 11..21 (default 17)")
    model = model.eval().cpu()
    dummy = torch.zeros(*input_shape, dtype=torch.float32)
    dynamic_axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(
            model,
            (dummy,),
            buffer,
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=int(opset),
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )
    graph = onnx.load_from_string(buffer.getvalue())
    if simplify:
        graph = _simplify(graph)
    onnx.checker.check_model(graph)
    set_metadata(graph, metadata or {})
    return atomic_write_bytes(path, graph.SerializeToString())


def _simplify(graph: onnx.ModelProto) -> onnx.ModelProto:
    try:
        from onnxsim import simplify

        simplified, ok = simplify(graph)
    except Exception as e:  # onnxsim raises anything from RuntimeError to protobuf errors
        log.warning(
            "onnxsim failed (%s: %s); keeping the unsimplified graph",
            type(e).__name__,
            str(e).splitlines()[0][:200] if str(e) else "",
        )
        return graph
    if not ok:
        log.warning("onnxsim could not validate the simplified graph; keeping the unsimplified one")
        return graph
    return simplified


def set_metadata(graph: onnx.ModelProto, metadata: dict) -> None:
    """Write `metadata` into metadata_props, replacing keys that already exist."""
    values = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    kept = [p for p in graph.metadata_props if p.key not in values]
    del graph.metadata_props[:]
    graph.metadata_props.extend(kept)
    for key, value in values.items():
        graph.metadata_props.add(key=str(key), value=value)


def read_metadata(path: str | os.PathLike) -> dict:
    """metadata_props of an ONNX file; JSON values decoded."""
    graph = onnx.load(str(path), load_external_data=False)
    out = {}
    for p in graph.metadata_props:
        try:
            out[p.key] = json.loads(p.value)
        except ValueError:
            out[p.key] = p.value
    return out


def onnx_metadata(class_names, preprocess, **extra) -> dict:
    """The metadata every edgexray ONNX file carries."""
    return {
        "producer": "edgexray",
        "class_names": list(class_names),
        "preprocess": preprocess.to_dict(),
        **extra,
    }
