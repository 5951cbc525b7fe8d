"""Rate limits for log lines about events that a misbehaving client can repeat at will."""

from __future__ import annotations

from typing import Any


class Every:
    """Says yes at most once per ``seconds`` of clock time (the first time, always)."""

    def __init__(self, clock: Any, seconds: float) -> None:
        self._clock = clock
        self._seconds = seconds
        self._last: float | None = None

    def __call__(self) -> bool:
        now = self._clock.seconds()
        if self._last is not None and now - self._last < self._seconds:
            return False
        self._last = now
        return True
