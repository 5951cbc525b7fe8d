"""When a crashed instance is started again: backoff, and when to give up (crash loop)."""

from __future__ import annotations

CRASH_WINDOW = 60.0
CRASH_LOOP_COUNT = 5
MAX_BACKOFF = 60.0
STABLE_AFTER = 60.0


class RestartPolicy:
    """Crash history per instance: a delay doubling from 1 s to 60 s, reset by a stable run;
    the fifth crash within 60 s is a crash loop (no more automatic restarts)."""

    def __init__(self) -> None:
        self._crashes: dict[str, list[float]] = {}
        self._streak: dict[str, int] = {}

    def crashed(self, instance_id: str, now: float, spawned_at: float) -> float | None:
        """Record a crash; the delay before the restart, or ``None`` for a crash loop."""
        recent = [t for t in self._crashes.get(instance_id, []) if now - t < CRASH_WINDOW]
        recent.append(now)
        self._crashes[instance_id] = recent
        if len(recent) >= CRASH_LOOP_COUNT:
            return None
        stable = now - spawned_at >= STABLE_AFTER
        streak = 1 if stable else self._streak.get(instance_id, 0) + 1
        self._streak[instance_id] = streak
        return min(MAX_BACKOFF, 2.0 ** (streak - 1))

    def forget(self, instance_id: str) -> None:
        """An operator started the instance: its history starts over."""
        self._crashes.pop(instance_id, None)
        self._streak.pop(instance_id, None)
