"""Retention: terminal messages, their events and instance history older than a window go.

Pruning runs in small batches (each one transaction, a few milliseconds), one
after another on later reactor turns, so it never holds the reactor for long.
The highest event id pruned is kept as a watermark: a client resuming from
before it is told its events expired.
"""

from __future__ import annotations

from typing import Any

from twisted.application.internet import TimerService
from twisted.internet import defer
from twisted.logger import Logger

from cpstream.domain.frames import isotime
from cpstream.domain.store import Store

DEFAULT_RETENTION = 7 * 24 * 3600.0
INTERVAL = 60.0
BATCH = 200


class Retention(TimerService):
    """Prunes what is older than ``keep`` seconds, every ``interval`` seconds, in batches."""

    log = Logger()

    def __init__(
        self,
        store: Store,
        clock: Any,
        keep: float = DEFAULT_RETENTION,
        interval: float = INTERVAL,
        batch: int = BATCH,
    ) -> None:
        super().__init__(interval, self._tick)
        self.clock = clock
        self._store = store
        self.keep = keep
        self._batch = batch
        self._more: Any = None
        self.pruned = {"message_events": 0, "instance_events": 0}

    def stopService(self) -> defer.Deferred:  # noqa: N802 (Twisted API)
        if self._more is not None and self._more.active():
            self._more.cancel()
        return super().stopService()

    def _tick(self) -> None:
        """One batch; another follows on the next reactor turn while there is more."""
        self._more = None
        try:
            more = self.prune_batch()
        except Exception:
            self.log.failure("retention pass failed")
            return
        if more and self.running:
            self._more = self.clock.callLater(0, self._tick)

    def prune_batch(self) -> bool:
        """Prune one batch of each log; True if a batch was full (there may be more)."""
        cutoff = isotime(self.clock.seconds() - self.keep)
        more = False
        store = self._store
        for table, rows in (
            ("message_events", store.messages),
            ("instance_events", store.instance_events),
        ):
            with store.transaction():
                top = rows.prune(cutoff, self._batch)
                if top:
                    key = f"pruned:{table}"
                    store.meta.set(key, str(max(top, int(store.meta.get(key)))))
            if top:
                self.pruned[table] += 1
                more = True
        return more
