"""Which exported precision ships: a pure choice on the validation split's budget checks and,
when the candidates were timed on the target, their measured latency."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edgexray.runtime.errors import EdgeXrayError
from edgexray.runtime.metrics import budget_text

FLOAT_PRECISIONS = ("fp32", "fp16")  # these must also pass parity with PyTorch to ship


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str
    fallbacks: tuple = ()  # what was refused on the way, and why (said and kept in the manifest)
    by: str = "the profile's precision order"  # what ordered the candidates


def choose_precision(
    default_precision: str,
    precisions: Sequence[str],
    val_parity: dict,
    max_accuracy_drop: float,
    measured_p50: dict | None = None,
    measured_on: str | None = None,
) -> PrecisionChoice:
    """The fastest precision that holds the accuracy budget against the unpruned FP32 model on
    the validation split (each `val_parity[p]["budget"]` is a metrics.budget_check), by
    `measured_p50` {precision: ms} timed on the target (`measured_on`); without measurements,
    `default_precision` when it holds the budget, else the next of `precisions` that does.
    Raises EdgeXrayError when none does."""
    order = [default_precision] + [p for p in precisions if p != default_precision]
    by = PrecisionChoice.by
    if measured_p50:
        order.sort(key=lambda p: measured_p50.get(p, float("inf")))  # stable: ties keep the profile's order
        by = f"the fastest within the budget, timed on {measured_on}"
    fallbacks = []
    for p in order:
        if p not in val_parity:
            continue
        r = val_parity[p]
        parity_ok = p not in FLOAT_PRECISIONS or r["passed"]
        if r["budget"]["passed"] and parity_ok:
            if p != order[0]:
                fallbacks.append(f"shipping {p}: {order[0]} broke the budget")
            return PrecisionChoice(p, tuple(fallbacks), by)
        fallbacks.append(
            f"{p} breaks the budget ({budget_text(r['budget'])}"
            + ("" if parity_ok else ", parity failed")
            + "); trying the next "
            + ("fastest precision" if measured_p50 else "precision")
        )
    drops = ", ".join(f"{p}: {budget_text(r['budget'])}" for p, r in val_parity.items())
    raise EdgeXrayError(
        f"no exported precision of {list(val_parity)} stays within {max_accuracy_drop} pp of the "
        f"unpruned FP32 model on the validation split ({drops}); nothing was shipped. Relax "
        "--max-accuracy-drop, fine-tune longer (--finetune-epochs) or prune less"
    )
