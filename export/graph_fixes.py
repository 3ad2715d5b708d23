"""ONNX graph rewrites, exact in float, that make a graph convert well to full-integer TFLite.

MaxPool with symmetric padding (PyTorch's `MaxPool2d(3, 2, padding=1)`) has no TensorFlow
equivalent; onnx2tf inserts an explicit pad filled with -3.4e38, which as int8 gets a scale of
~1e36 and destroys the quantized model (LiteRT aborts while preparing it). After a ReLU every
value is >= 0, so padding with 0 instead gives the same maximum and quantizes exactly.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import helper, numpy_helper

log = logging.getLogger(__name__)

NON_NEGATIVE_OPS = ("Relu", "Sigmoid")  # producers whose outputs are never negative


def zero_pad_maxpool(model: onnx.ModelProto) -> int:
    """Rewrite, in place, each padded MaxPool fed by a non-negative op into Pad(0) + MaxPool.

    Returns the number of MaxPool nodes rewritten.
    """
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    if opset < 11:
        return 0
    rewritten, new_nodes = 0, []
    for node in graph.node:
        if node.op_type == "MaxPool" and _rewritable(node, producer):
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            pads = list(attrs["pads"])
            half = len(pads) // 2
            full = [0, 0] + pads[:half] + [0, 0] + pads[half:]  # N, C not padded
            pads_name = f"{node.name or node.output[0]}_zero_pads"
            padded = f"{node.input[0]}_zero_padded_{rewritten}"
            graph.initializer.append(numpy_helper.from_array(np.asarray(full, np.int64), pads_name))
            new_nodes.append(
                helper.make_node(
                    "Pad", [node.input[0], pads_name], [padded], name=f"{pads_name}_pad", mode="constant"
                )
            )
            for a in node.attribute:
                if a.name == "pads":
                    a.ints[:] = [0] * len(pads)
            node.input[0] = padded
            rewritten += 1
        new_nodes.append(node)
    if rewritten:
        del graph.node[:]
        graph.node.extend(new_nodes)
        onnx.checker.check_model(model)
        log.info("padded %d MaxPool node(s) with zeros instead of -inf (inputs are >= 0)", rewritten)
    return rewritten


def _rewritable(node, producer) -> bool:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    pads = attrs.get("pads")
    if not pads or not any(pads) or attrs.get("ceil_mode", 0):
        return False
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or len(node.output) > 1:
        return False
    src = producer.get(node.input[0])
    return src is not None and src.op_type in NON_NEGATIVE_OPS


def split_concat_conv(model: onnx.ModelProto) -> int:
    """Rewrite, in place, each Conv fed only by a channel Concat into one Conv per Concat input
    plus Adds: conv(concat(a, b)) == conv_a(a) + conv_b(b), exactly.

    CBAM's spatial gate concatenates the channel mean and the channel max; in full-integer
    TFLite a concat forces one int8 scale on both, and the mean (much smaller than the max)
    loses most of its precision. After the split each input keeps its own scale.
    Returns the number of Conv nodes rewritten.
    """
    graph = model.graph
    inferred = onnx.shape_inference.infer_shapes(model).graph
    channels = {}
    for vi in list(inferred.value_info) + list(inferred.input) + list(inferred.output):
        dims = vi.type.tensor_type.shape.dim
        if len(dims) == 4 and dims[1].HasField("dim_value"):
            channels[vi.name] = dims[1].dim_value
    consumers: dict = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    weights = {init.name: init for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    rewritten, new_nodes, dropped = 0, [], set()
    for node in graph.node:
        src = producer.get(node.input[0]) if node.op_type == "Conv" and node.input else None
        if src is None or src.op_type != "Concat" or consumers.get(src.output[0]) != 1:
            new_nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axis = {a.name: helper.get_attribute_value(a) for a in src.attribute}.get("axis")
        sizes = [channels.get(name) for name in src.input]
        if attrs.get("group", 1) != 1 or axis not in (1, -3) or None in sizes or node.input[1] not in weights:
            new_nodes.append(node)
            continue
        w = numpy_helper.to_array(weights[node.input[1]])
        bias = list(node.input[2:3])
        parts, start = [], 0
        for i, (name, size) in enumerate(zip(src.input, sizes)):
            w_name = f"{node.input[1]}_split{i}"
            graph.initializer.append(numpy_helper.from_array(w[:, start : start + size].copy(), w_name))
            start += size
            out = f"{node.output[0]}_split{i}"
            conv = helper.make_node(
                "Conv",
                [name, w_name, *(bias if i == 0 else [])],
                [out],
                name=f"{node.name or node.output[0]}_split{i}",
            )
            conv.attribute.extend(node.attribute)
            new_nodes.append(conv)
            parts.append(out)
        total = parts[0]
        for i, part in enumerate(parts[1:], 1):
            out = node.output[0] if i == len(parts) - 1 else f"{node.output[0]}_sum{i}"
            new_nodes.append(
                helper.make_node("Add", [total, part], [out], name=f"{node.name or node.output[0]}_sum{i}")
            )
            total = out
        dropped.add(id(src))
        rewritten += 1
    if rewritten:
        kept = [n for n in new_nodes if id(n) not in dropped]
        del graph.node[:]
        graph.node.extend(kept)
        used = {name for n in kept for name in n.input}
        unused = [init for init in graph.initializer if init.name not in used]
        for init in unused:
            graph.initializer.remove(init)
        onnx.checker.check_model(model)
        log.info("split %d Conv(Concat) node(s) into per-input Convs + Add", rewritten)
    return rewritten
