"""Host vs guest, and host vs the reference recorded by the first passing verification."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgexray.bench.arm.artifact import model_sha
from edgexray.runtime.registry import runtime_for_manifest

FLOAT_TOLERANCE = 1e-4  # max abs output difference allowed for float models
# Quantized outputs may differ by this many steps between hosts (XNNPACK's x86 and NEON int8
# kernels round differently: 1 step seen between AVX2 and AVX-512 VNNI hosts and Cortex-A72)
KERNEL_ROUNDING_STEPS = 2


@dataclass(frozen=True)
class OutputComparison:
    """Two runs of run.py on the same images, compared output by output."""

    passed: bool
    max_abs_diff: float
    kind: str  # "int" (quantized outputs: a diff of 1 is one quantization step), "float" or "?"
    labels_match: bool
    detail: str

    @property
    def rounding(self) -> bool:
        """Passed with integer outputs that differ: kernel rounding, not identical."""
        return self.passed and self.kind == "int" and self.max_abs_diff > 0


def compare_outputs(
    a: list[dict],
    b: list[dict],
    tolerance: float = FLOAT_TOLERANCE,
    rounding_steps: int = KERNEL_ROUNDING_STEPS,
) -> OutputComparison:
    """Compare two prediction lists ({"image", "label", "raw"} per image, same order).

    Integer (quantized) outputs pass when identical, or when they differ by at most
    `rounding_steps` quantization steps and every label is the same: XNNPACK's x86 and NEON
    int8 kernels may round an intermediate differently. A swapped or corrupt model, or wrong
    pre-processing, moves outputs by far more, or changes a label. Float outputs pass within
    `tolerance` with the same labels.
    """
    import numpy as np

    n = len(a)
    if [p["image"] for p in a] != [p["image"] for p in b]:
        return OutputComparison(
            False, float("inf"), "?", False, f"the two runs answered for different images ({n} vs {len(b)})"
        )
    labels = [p["label"] for p in a] == [p["label"] for p in b]
    diff, integer = 0.0, True
    for pa, pb in zip(a, b):
        ra, rb = np.asarray(pa["raw"], dtype=np.float64), np.asarray(pb["raw"], dtype=np.float64)
        if ra.shape != rb.shape or ra.size == 0:
            return OutputComparison(
                False,
                float("inf"),
                "?",
                labels,
                f"raw outputs of {pa['image']} have shapes {ra.shape} and {rb.shape}",
            )
        integer = integer and bool(np.all(ra == np.round(ra)) and np.all(rb == np.round(rb)))
        diff = max(diff, float(np.max(np.abs(ra - rb))))
    label_note = "" if labels else "; the predicted labels differ"
    if not integer:
        ok = labels and diff <= tolerance
        return OutputComparison(
            ok,
            diff,
            "float",
            labels,
            f"max abs diff {diff:g} over {n} images (float tolerance {tolerance:g}){label_note}",
        )
    steps = f"{diff:g} step" + ("" if diff == 1 else "s")
    if diff == 0:
        detail = f"identical integer outputs over {n} images{label_note}"
    elif diff <= rounding_steps and labels:
        detail = (
            f"within kernel rounding: max diff {steps} over {n} images, identical labels "
            f"(x86 and NEON int8 kernels may round differently; allowed up to "
            f"{rounding_steps} quantization steps)"
        )
    elif diff <= rounding_steps:
        detail = (
            f"max diff {steps} over {n} images, but the predicted labels differ: kernel "
            "rounding must not change a prediction"
        )
    else:
        detail = (
            f"max diff {steps} over {n} images: more than the {rounding_steps} "
            f"quantization steps kernel rounding can explain{label_note}"
        )
    return OutputComparison(labels and diff <= rounding_steps, diff, "int", labels, detail)


def check(passed: bool, detail: str) -> dict:
    """One entry of a verification's "checks"."""
    return {"passed": bool(passed), "detail": detail}


def compare_sides(sides: dict, target: dict, tolerance: float, result: dict) -> None:
    """Host vs guest: runtime versions, ops, XNNPACK, inputs, outputs and labels, into `result`."""
    checks, rt = result["checks"], result["runtime"]
    (host_ops, host_pred), (guest_ops, guest_pred) = sides["host"], sides["guest"]
    checks["same_runtime_version"] = check(
        rt["host_version"] == rt["guest_version"] == target["version"],
        f"{runtime_for_manifest(target['runtime']).package} host {rt['host_version']}, guest "
        f"{rt['guest_version']}, device {target['version']}",
    )
    h_ops, g_ops = _op_names(host_ops), _op_names(guest_ops)
    if target["runtime"] == "litert" or (h_ops and g_ops):
        checks["same_ops"] = check(
            h_ops == g_ops and bool(h_ops),
            f"host {len(h_ops)} ops, guest {len(g_ops)} ops"
            + ("" if h_ops == g_ops else f": host {h_ops} vs guest {g_ops}"),
        )
    else:  # ONNX Runtime: run.py lists the graph's nodes only where the onnx package is installed
        result["ops_not_compared"] = (
            "run.py ops lists ONNX nodes only with the onnx package, "
            "which the device (guest) does not install"
        )
    if target["runtime"] == "litert":
        checks["xnnpack_applied"] = check(
            "DELEGATE" in h_ops and "DELEGATE" in g_ops,
            f"DELEGATE op on host: {'DELEGATE' in h_ops}, on guest: {'DELEGATE' in g_ops}",
        )
    digests = result.pop("input_sha256", {})
    if "same_inputs" not in checks:
        host_in, guest_in = digests.get("host", {}), digests.get("guest", {})
        differ = sorted(n for n in host_in.keys() | guest_in.keys() if host_in.get(n) != guest_in.get(n))
        checks["same_inputs"] = check(
            bool(host_in) and not differ,
            (
                f"the model inputs of all {len(host_in)} images are bit-identical on both sides"
                if not differ
                else f"run.py pre-processes {differ} differently on the guest"
            ),
        )
    c = compare_outputs(host_pred, guest_pred, tolerance)
    result["max_abs_diff"] = c.max_abs_diff
    result["output_kind"] = c.kind
    result["kernel_rounding"] = c.rounding
    checks["outputs_match"] = check(c.passed, c.detail)
    checks["labels_match"] = check(
        c.labels_match,
        "predicted labels "
        + (
            "equal"
            if c.labels_match
            else f"differ: host {[p['label'] for p in host_pred]} vs guest {[p['label'] for p in guest_pred]}"
        ),
    )


def compare_reference(
    host_pred: list,
    artifact_dir: Path,
    manifest: dict,
    target: dict,
    tolerance: float,
    result: dict,
    write: bool,
) -> None:
    """Against the outputs recorded by the first passing verification; records them if none."""
    checks = result["checks"]
    reference = manifest.get("arm_reference")
    if reference and reference.get("inputs") == result["inputs"]:
        # only the synthetic inputs were recorded: real images are not stored in the manifest
        c = compare_outputs(reference["predictions"], host_pred[: len(reference["predictions"])], tolerance)
        detail = f"{c.detail}, against the outputs recorded {reference.get('recorded')}"
        if not c.passed and reference.get("model_sha256") != model_sha(artifact_dir, target):
            detail += "; the model file changed since then"
        checks["matches_reference"] = check(c.passed, detail)
    elif write and all(c["passed"] for c in checks.values()):
        manifest["arm_reference"] = {
            "recorded": result["checked_at"],
            "inputs": result["inputs"],
            "model_sha256": model_sha(artifact_dir, target),
            "predictions": host_pred[: result["inputs"]["count"]],
        }
        checks["matches_reference"] = check(
            True, "no reference yet: these outputs are now recorded as the artifact's reference"
        )


def _op_names(ops_doc: dict) -> list[str]:
    return [str(op) for op in ops_doc.get("ops", [])]
