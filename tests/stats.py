"""Figures shared by the hardening battery and the benchmarks.

Standard library only: ``python -m bench.loadgen`` imports it and must stay lean.
"""

from __future__ import annotations

import math


def percentile(values: list[float], fraction: float, method: str = "rank") -> float:
    """The ``fraction`` (0..1) percentile of ``values``; NaN when there are none.

    ``rank`` is the nearest rank (the smallest value with at least that fraction of
    the values at or below it), as the hardening battery reports; ``index`` rounds
    ``fraction * (n - 1)`` to the nearest index, as the load generator reports.
    """
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    if method == "rank":
        return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]
    if method == "index":
        return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]
    raise ValueError(f"method must be 'rank' or 'index', not {method!r}")
