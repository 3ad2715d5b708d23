"""The TFLite conversion, run in its own process by `edgexray.export.tflite.onnx2tflite`.

TensorFlow and PyTorch fight over threads in one process, and onnx2tf may try the network;
this process imports only TensorFlow, refuses every internet connection, and writes exactly
the precisions asked for. Usage: python -m edgexray.export._tflite_worker SPEC.json
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

INPUT_NAME = "input"  # the TFLite input tensor is named serving_default_input:0


def block_network() -> None:
    """Make every IPv4/IPv6 connection fail, so nothing is fetched silently."""
    original = socket.socket.connect

    def refuse(self, address, *args, **kwargs):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise OSError(f"network access is disabled during conversion (tried {address})")
        return original(self, address, *args, **kwargs)

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.create_connection = lambda address, *a, **k: refuse(socket.socket(), address)


def convert(spec: dict) -> dict:
    import numpy as np
    import onnx2tf
    import tensorflow as tf

    work = Path(spec["work_dir"])
    t0 = time.perf_counter()
    # onnx2tf builds the Keras model only; the TFLite files are written below, one per
    # requested precision (onnx2tf itself would always write fp32 + fp16, and five variants
    # more for int8). The int8 representative dataset is the real calibration images,
    # normalized with the model's mean/std: what onnx2tf's -cind with mean/std would feed.
    model = onnx2tf.convert(
        input_onnx_file_path=spec["onnx_path"],
        output_folder_path=str(work / "saved_model"),
        disable_model_save=True,
        not_use_onnxsim=True,  # simplified already; onnxsim would fuse our zero Pad back in
        batch_size=spec.get("batch_size"),
        verbosity=spec.get("verbosity", "info"),
    )
    timings = {"onnx2tf": round(time.perf_counter() - t0, 2)}
    print(f"edgexray: timing onnx2tf {timings['onnx2tf']}", flush=True)
    calib = np.load(spec["calib_nhwc"]) if spec.get("calib_nhwc") else None
    t = time.perf_counter()
    frozen = _freeze(model, tf)
    timings["freeze"] = round(time.perf_counter() - t, 2)
    print(f"edgexray: timing freeze {timings['freeze']}", flush=True)
    written = {}
    for precision, out in spec["outputs"].items():
        t = time.perf_counter()
        converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Flex ops
        if precision == "fp16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif precision == "dynamic":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter._experimental_disable_per_channel = not spec["per_channel"]
        elif precision == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            # int8 I/O by default; ("uint8", "float32") for the Tasks-ready variant
            in_type, out_type = spec.get("int8_io", ("int8", "int8"))
            converter.inference_input_type = getattr(tf, in_type)
            converter.inference_output_type = getattr(tf, out_type)
            converter._experimental_disable_per_channel = not spec["per_channel"]

            def representative():
                for x in calib:  # normalized with the model's mean / std (or raw pixels)
                    yield [x[None].astype(np.float32)]

            converter.representative_dataset = representative
        elif precision != "fp32":
            raise ValueError(f"unknown precision {precision!r}")
        Path(out).write_bytes(converter.convert())
        written[precision] = out
        timings[precision] = round(time.perf_counter() - t, 2)
        print(f"edgexray: timing {precision} {timings[precision]}", flush=True)
    return {"written": written, "timings": timings}


def _freeze(model, tf):
    """Trace the Keras model once and fold its variables into constants.

    TFLiteConverter.from_keras_model re-traces and re-freezes the whole model for every file
    (about 17 s of CPU for a pruned ResNet18-CBAM); from one frozen function each file takes
    about 1 s, with identical output.
    """
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = model.inputs[0]
    run = tf.function(lambda x: model(x))
    concrete = run.get_concrete_function(tf.TensorSpec(spec.shape, spec.dtype, name=INPUT_NAME))
    return convert_variables_to_constants_v2(concrete)


def main(argv: list[str]) -> int:
    block_network()
    spec = json.loads(Path(argv[0]).read_text())
    result = convert(spec)
    Path(spec["result_path"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
