"""Figures shared by the hardening battery and the benchmarks.

Standard library only: ``python -m bench.loadgen`` imports it and must stay lean.
"""

from __future__ import annotations

import math


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` (0..1) percentile of ``values`` by nearest rank (the smallest value
    with at least that fraction of the values at or below it); NaN when there are none."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]
