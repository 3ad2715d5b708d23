"""Size and speed of a model: parameters, MACs, serialized bytes, CPU latency."""

from __future__ import annotations

import io

import torch
import torch_pruning as tp
from torch import nn

from edgexray.runtime.latency import first_and_warmup, summarize_ns, time_runs


def count(model: nn.Module, example_input: torch.Tensor) -> dict:
    """{"params", "macs"} for one forward pass of `example_input` (batch 1)."""
    was_training = model.training
    with torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(model.eval(), example_input[:1])
    model.train(was_training)
    return {"params": int(params), "macs": int(macs)}


def state_dict_bytes(model: nn.Module) -> int:
    """Size of the serialized weights (what a checkpoint file mostly is)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


def zipped_bytes(data: bytes) -> int:
    """Size of `data` in a zip archive (deflate, level 9): what zeroed weights save on disk."""
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("file", data)
    return buf.tell()


def cpu_latency_ms(
    model: nn.Module, example_input: torch.Tensor, runs: int = 30, warmup: int = 5, threads: int | None = None
) -> dict:
    """Batch-1 latency in PyTorch on the CPU after warm-up: p50/p90/mean/min in ms (min is the
    steadiest figure on a machine shared with other work)."""
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    x = example_input[:1].cpu()
    model = model.eval().cpu()
    try:
        with torch.inference_mode():
            first_and_warmup(lambda: model(x), warmup)
            samples = time_runs(lambda: model(x), seconds=0.0, min_runs=runs, max_runs=runs)
    finally:
        torch.set_num_threads(old)
    return {**summarize_ns(samples), "runs": runs, "threads": threads or old}


def onnx_count(path) -> dict:
    """{"params", "macs"} read from an exported ONNX file: float weights in its initializers, and
    multiply-accumulates of its Conv / Gemm / MatMul nodes (batch 1, shapes inferred)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper, shape_inference

    m = shape_inference.infer_shapes(onnx.load(str(path)))
    g = m.graph
    weights = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    params = sum(int(w.size) for w in weights.values() if np.issubdtype(w.dtype, np.floating))
    shapes = {}
    for v in list(g.input) + list(g.output) + list(g.value_info):
        dims = v.type.tensor_type.shape.dim
        shapes[v.name] = [d.dim_value or 1 for d in dims]  # a symbolic batch counts as 1
    macs = 0
    for node in g.node:
        if node.op_type == "Conv":
            w = weights[node.input[1]].shape  # (out, in / groups, kh, kw)
            out = shapes[node.output[0]]
            macs += int(np.prod(out)) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            b = weights.get(node.input[1])
            k = (
                (
                    b.shape[0]
                    if node.op_type == "MatMul" or not any(a.name == "transB" and a.i for a in node.attribute)
                    else b.shape[1]
                )
                if b is not None
                else shapes[node.input[0]][-1]
            )
            macs += int(np.prod(shapes[node.output[0]])) * int(k)
    return {"params": params, "macs": macs}
