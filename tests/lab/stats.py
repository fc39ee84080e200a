"""Summaries of measured samples, for tests that bound a latency and for the benchmarks."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` percentile of ``values`` by nearest rank: the smallest value that
    at least ``fraction`` of them do not exceed (``percentile(v, 0.99)`` of 12 values is
    their maximum)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction: expected 0 to 1, got {fraction}")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]
