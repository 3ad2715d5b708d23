"""How many channels each coupled group keeps.

- one-shot: the same ratio for every stage.
- progressive: one ratio per stage (the seed paper: 20/35/50/60 % for stages 1..4); a group takes
  the ratio of the deepest stage among the layers whose output it prunes.
- target: the stage profile (progressive's, or one-shot's uniform one) scaled by one factor found
  by bisection so the whole network loses the requested fraction of MACs or parameters.
Iterative pruning in k steps removes ratio * i / k at step i (of the original width).
"""

from __future__ import annotations

from edgexray.prune.graph import NUM_STAGES


def stage_profile(schedule: str, ratio: float, stage_ratios: tuple[float, ...]) -> tuple[float, ...]:
    """The per-stage ratios of a schedule, before any target scaling."""
    if schedule == "one-shot":
        return (ratio,) * NUM_STAGES
    return tuple(stage_ratios)


def group_ratio(profile: tuple[float, ...], stage: int, scale: float, max_ratio: float) -> float:
    return min(max_ratio, max(0.0, scale * profile[stage - 1]))


def keep_count(original: int, ratio: float, round_to: int) -> int:
    """Channels kept of `original` at `ratio`, rounded to the nearest multiple of `round_to`
    (never 0, never more than `original`)."""
    exact = original * (1.0 - ratio)
    if round_to > 1 and original >= round_to:
        keep = max(round_to, int(round(exact / round_to)) * round_to)
    else:
        keep = max(1, int(round(exact)))
    return min(original, keep)


def step_ratio(ratio: float, step: int, steps: int) -> float:
    """The cumulative ratio reached after `step` of `steps` (linear)."""
    return ratio * step / steps
