"""ONNX graph rewrites that make a graph convert cleanly to full-integer TFLite.

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
            new_nodes.append(helper.make_node("Pad", [node.input[0], pads_name], [padded],
                                              name=f"{pads_name}_pad", mode="constant"))
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
