"""Small helpers shared by the architecture builders."""

from __future__ import annotations


def scaled(channels: int, width: float, divisor: int = 8) -> int:
    """Channel count times the width multiplier, rounded to a multiple of `divisor` (min 8)."""
    return max(divisor, int(channels * width + divisor / 2) // divisor * divisor)
