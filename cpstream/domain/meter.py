"""What the control plane counts and times about itself, as plain numbers.

The domain and the streams count on their hot paths with a dict increment
(:meth:`Meter.count`) and report durations to whoever listens
(:meth:`Meter.time`); a reporter (``cpstream/web/metrics.py``, the Prometheus
exposition) reads the counts when it is scraped. Nothing here knows Prometheus.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable

Timing = Callable[[str, float], None]


class Meter:
    """Counters by key (a name, or a tuple of a name and its labels) and timing listeners."""

    def __init__(self) -> None:
        self.counts: Counter[Hashable] = Counter()
        self._timings: list[Timing] = []

    def count(self, key: Hashable, n: int = 1) -> None:
        self.counts[key] += n

    def time(self, name: str, seconds: float) -> None:
        """Report one duration (seconds) to every listener; dropped when nobody listens."""
        for listener in self._timings:
            listener(name, seconds)

    def on_timing(self, listener: Timing) -> None:
        self._timings.append(listener)
