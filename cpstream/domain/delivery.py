"""The delivery worker: one pass a second over leases, TTLs and retries that are due."""

from __future__ import annotations

from typing import Any

from twisted.application.internet import TimerService
from twisted.logger import Logger

from cpstream.domain.messaging import Messaging


class DeliveryWorker(TimerService):
    """Runs :meth:`Messaging.sweep` every ``interval`` seconds while started."""

    log = Logger()

    def __init__(self, messaging: Messaging, clock: Any, interval: float = 1.0) -> None:
        super().__init__(interval, self._tick)
        self.clock = clock
        self._messaging = messaging

    def _tick(self) -> None:
        """One pass; its errors are logged, never fatal (they would stop the loop)."""
        try:
            self._messaging.sweep()
        except Exception:
            self.log.failure("delivery worker pass failed")
