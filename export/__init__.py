"""edgexray.export: PyTorch -> ONNX / TFLite (FP32, FP16, dynamic, INT8) with parity checks.

Submodules (imported on first use, so `edgexray --help` stays fast):
  onnx          torch2onnx, read_metadata, onnx_metadata
  quantize_onnx onnx2int8onnx, choose_scheme (ONNX Runtime static QDQ)
  tflite        onnx2tflite (onnx2tf in an offline subprocess), tflite_io_details, tflite_ops
  calibration   CalibrationSet, stratified_sample, train_calibration
  formats       list_formats, get_format, export_plan
  parity        parity
  exporter      export_model (everything above for one model; the one export path of
                `edgexray export` and `edgexray build`)
  selection     choose_precision (which exported precision ships)
"""

from __future__ import annotations

from edgexray.lazy import lazy_names

_EXPORTS = {
    "torch2onnx": "onnx",
    "read_metadata": "onnx",
    "onnx_metadata": "onnx",
    "onnx2int8onnx": "quantize_onnx",
    "choose_scheme": "quantize_onnx",
    "onnx2tflite": "tflite",
    "tflite_io_details": "tflite",
    "tflite_ops": "tflite",
    "CalibrationSet": "calibration",
    "stratified_sample": "calibration",
    "train_calibration": "calibration",
    "choose_precision": "selection",
    "list_formats": "formats",
    "get_format": "formats",
    "export_plan": "formats",
    "parity": "parity",
    "export_model": "exporter",
    "ExportResult": "exporter",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_names(__name__, _EXPORTS)
