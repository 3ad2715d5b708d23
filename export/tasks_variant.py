"""The Tasks-ready TFLite variant: what MediaPipe Tasks' ImageClassifier and the LiteRT Task
Library take as they are.

    input   uint8 RGB [1, H, W, 3], raw pixels 0-255 (input quantization scale 1, zero point 0)
    inside  gray = mean of R, G, B (a gray image arrives as R = G = B), the model's
            normalization, the network, softmax; full-INT8 compute
    output  float32 probabilities [1, classes]

The int8-I/O file stays the shipped model of run.py, and this one rides along as
model_tasks.tflite; a profile with main_model = "tasks" (android-arm64) ships this one as
model.tflite instead (ship_tasks_as_main), run.py feeding it raw pixels ("pixels": "raw").
It spares an app every constant (no normalization, quantization or gray conversion app-side),
at the price of MediaPipe's own resize (bilinear) instead of run.py's triangle filter.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgexray.runtime.errors import EdgeXrayError
from edgexray.runtime.preprocess import Preprocess

TASKS_FILE = "model_tasks.tflite"
DEFAULT_TIMEOUT_S = 900  # export.tflite.DEFAULT_TIMEOUT_S; this module imports torch lazily


def pixels2probabilities(model, preprocess: Preprocess, temperature: float = 1.0):
    """`model` (normalized input, logits out) behind RGB pixels 0-255 in, probabilities out;
    `temperature` (the build's, fitted on val) divides the logits as run.py does."""
    import torch

    class PixelsToProbabilities(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model, self.channels = model, preprocess.channels
            std = torch.tensor(preprocess.std, dtype=torch.float32).view(1, -1, 1, 1)
            mean = torch.tensor(preprocess.mean, dtype=torch.float32).view(1, -1, 1, 1)
            # (pixel / 255 - mean) / std as one multiply-add
            self.register_buffer("scale", 1.0 / (255.0 * std))
            self.register_buffer("shift", -mean / std)
            self.inv_temperature = 1.0 / float(temperature)

        def forward(self, rgb):
            x = rgb.mean(dim=1, keepdim=True) if self.channels == 1 else rgb
            logits = self.model(x * self.scale + self.shift)
            if self.inv_temperature != 1.0:
                logits = logits * self.inv_temperature
            return torch.softmax(logits, dim=1)

    return PixelsToProbabilities().eval()


def pixel_calibration(calib) -> np.ndarray:
    """float32 (N, S, S, 3) RGB pixels 0-255 from the calibration images. The first image gets
    one black and one white pixel so the calibrated input range is exactly 0-255: uint8 input
    scale 1, zero point 0, i.e. the model takes the raw pixel bytes."""
    pixels = np.repeat((calib.gray * 255.0)[..., None], 3, axis=-1).astype(np.float32)
    pixels[0, 0, 0, :], pixels[0, 0, 1, :] = 0.0, 255.0
    return np.ascontiguousarray(pixels)


def torch2tasks_tflite(
    model,
    out_path: str | os.PathLike,
    *,
    preprocess: Preprocess,
    calib,
    class_names: Sequence[str] = (),
    temperature: float = 1.0,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    launcher: Sequence[str] = (),
) -> Path:
    """Write the Tasks-ready full-INT8 variant of `model` to `out_path`; returns it.

    Raises EdgeXrayError when the converter did not give uint8 pixels in (scale 1, zero point
    0) and float32 out: an app would then feed it wrong values without noticing."""
    from .calibration import CalibrationSet
    from .onnx import onnx_metadata, torch2onnx
    from .tflite import onnx2tflite, tflite_io_details

    if preprocess.intensity != "none":
        raise EdgeXrayError(
            f"the model was trained with the per-image intensity step {preprocess.intensity!r}, "
            "which the Tasks-ready graph (pixels in, a fixed mean/std inside) cannot carry; "
            "run.py applies it before the int8-I/O file. For this variant train without one "
            "(--recipe default --intensity none)"
        )
    out_path = Path(out_path)
    wrapped = pixels2probabilities(model, preprocess, temperature)
    size = preprocess.size
    with tempfile.TemporaryDirectory(prefix="edgexray-tasks-") as tmp:
        onnx_path = Path(tmp) / "tasks.onnx"
        torch2onnx(
            wrapped,
            onnx_path,
            input_shape=(1, 3, size, size),
            metadata=onnx_metadata(list(class_names), preprocess, variant="tasks"),
        )
        rgb_pre = Preprocess(size=size, channels=3, mean=(0.0,), std=(1 / 255.0,), resize=preprocess.resize)
        rgb_calib = CalibrationSet(gray=calib.gray, preprocess=rgb_pre)
        made = onnx2tflite(
            onnx_path,
            tmp,
            precisions=("int8",),
            calib=rgb_calib,
            timeout_s=timeout_s,
            stem="tasks",
            launcher=launcher,
            int8_io=("uint8", "float32"),
            int8_calib_nhwc=pixel_calibration(calib),
        )
        io = tflite_io_details(made["int8"])
        inp, out = io["input"], io["output"]
        if (
            (inp["dtype"], out["dtype"]) != ("uint8", "float32")
            or inp["shape"] != [1, size, size, 3]
            or (inp["scale"], inp["zero_point"]) != (1.0, 0)
        ):
            raise EdgeXrayError(
                f"the Tasks-ready variant came out with input {inp} and output "
                f"{out}; expected uint8 [1, {size}, {size}, 3] with scale 1 and "
                "zero point 0, and float32 probabilities"
            )
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = out_path.with_name(f".{out_path.name}.tmp")
        tmp_out.write_bytes(made["int8"].read_bytes())
        os.replace(tmp_out, out_path)
    return out_path


def add_tasks_variant(
    folder: str | os.PathLike, manifest: dict, src: str | os.PathLike, name: str = TASKS_FILE
) -> None:
    """Copy the variant into an artifact being built as `name` and describe it in
    manifest["tasks_variant"] (torch-free: the bundle calls it)."""
    from .bundle import model_io_spec

    folder, src = Path(folder), Path(src)
    if not src.is_file() or src.suffix != ".tflite":
        raise EdgeXrayError(
            f"Tasks-ready model {str(src)!r} is not a .tflite file; make it with "
            "edgexray.export.tasks_variant.torch2tasks_tflite"
        )
    shutil.copyfile(src, folder / name)
    spec = model_io_spec(folder / name)
    size, n = manifest["preprocess"]["size"], len(manifest["class_names"])
    inp, out = spec["input"], spec["output"]
    if (
        inp["dtype"] != "uint8"
        or inp["shape"] != [1, size, size, 3]
        or out["dtype"] != "float32"
        or out["shape"][-1] != n
    ):
        raise EdgeXrayError(
            f"{src.name}: input {inp['dtype']} {inp['shape']}, output "
            f"{out['dtype']} {out['shape']}; a Tasks-ready variant takes uint8 "
            f"[1, {size}, {size}, 3] and gives float32 [1, {n}]"
        )
    out["kind"] = "probabilities"
    manifest["tasks_variant"] = {
        "file": name,
        "bytes": (folder / name).stat().st_size,
        **spec,
        "for": "MediaPipe Tasks ImageClassifier / LiteRT Task Library: RGB pixels 0-255 in "
        "(gray as R=G=B), probabilities out, full-INT8 compute inside",
    }


def ship_tasks_as_main(folder: str | os.PathLike, manifest: dict, src: str | os.PathLike) -> None:
    """The variant as the artifact's model.tflite, the one run.py runs: manifest model, input and
    output become its own, and "preprocess" gives it raw pixels (gray * 255 as R = G = B, what
    MediaPipe passes; the normalization is inside the model). The exported files stay in
    "variants", each with the preprocess it takes."""
    main = f"model{Path(src).suffix}"
    add_tasks_variant(folder, manifest, src, name=main)
    tv, pre = manifest["tasks_variant"], Preprocess.from_dict(manifest["preprocess"])
    for var in manifest["variants"].values():
        var["preprocess"] = pre.to_dict()
    manifest["model"]["file"] = main
    manifest["input"], manifest["output"] = dict(tv["input"]), dict(tv["output"])
    raw = Preprocess(size=pre.size, channels=3, mean=(0.0,), std=(1.0,), resize=pre.resize, pixels="raw")
    manifest["preprocess"] = raw.to_dict()


def gray2rgb_pixels(gray: np.ndarray) -> np.ndarray:
    """(N, S, S) gray in [0, 1] -> uint8 (N, S, S, 3) with R = G = B: what an app passes."""
    u8 = np.clip(np.round(np.asarray(gray, np.float32) * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(u8[..., None], 3, axis=-1))


def _p50_ms(runner, x: np.ndarray, runs: int) -> float:
    """Median milliseconds of `runs` calls on `x` (in the model's own layout and dtype)."""
    from edgexray.runtime.latency import first_and_warmup, summarize_ns, time_runs

    first_and_warmup(lambda: runner.run_raw(x), 2)  # 3 untimed calls
    return summarize_ns(time_runs(lambda: runner.run_raw(x), 0.0, runs, runs))["p50"]


def measure_tasks_variant(
    tasks_path,
    shipped_path,
    gray: np.ndarray,
    labels: np.ndarray,
    preprocess: Preprocess,
    threads: int | None = None,
    runs: int = 50,
    reference_top1: np.ndarray | None = None,
) -> dict:
    """Accuracy of the Tasks-ready variant on `gray` (N, S, S in [0, 1]) / `labels`, its top-1
    agreement with the int8-I/O file `shipped_path` on the same images (and with PyTorch's
    `reference_top1` when given), and both files' p50 latency (LiteRT, batch 1, `runs` invokes
    each, measured back to back)."""
    from edgexray.runtime.runners import open_runner

    rgb = gray2rgb_pixels(gray)
    tasks = open_runner("litert", tasks_path, threads)
    probs = [tasks.run_raw(x[None])[0] for x in rgb]  # pixels in, as stored out
    tasks_top1 = np.argmax(np.stack(probs), 1)
    shipped = open_runner("litert", shipped_path, threads)
    shipped_top1 = np.argmax(shipped.predict_all(preprocess.normalize(gray)), 1)
    x_shipped = np.zeros(shipped.input_spec.shape, shipped.input_spec.dtype)
    labels = np.asarray(labels)
    versus_pytorch = {}
    if reference_top1 is not None:
        versus_pytorch["top1_agreement_with_pytorch"] = float(np.mean(tasks_top1 == reference_top1))
    return {
        "n": int(len(labels)),
        "split": "test",
        "accuracy": float(np.mean(tasks_top1 == labels)),
        "shipped_accuracy": float(np.mean(shipped_top1 == labels)),
        "top1_agreement_with_shipped": float(np.mean(tasks_top1 == shipped_top1)),
        **versus_pytorch,
        "latency_ms_p50": _p50_ms(tasks, rgb[:1], runs),
        "shipped_latency_ms_p50": _p50_ms(shipped, x_shipped, runs),
        "threads": threads,
        "runs": runs,
    }
