"""The delivery worker: one pass a second over leases, TTLs and retries that are due."""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from cpstream.domain.messaging import Messaging


class DeliveryWorker(Service):
    """Runs :meth:`Messaging.sweep` every ``interval`` seconds while started."""

    log = Logger()

    def __init__(self, messaging: Messaging, clock: Any, interval: float = 1.0) -> None:
        self._messaging = messaging
        self._interval = interval
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock

    def startService(self) -> None:  # noqa: N802 (Twisted API)
        super().startService()
        self._loop.start(self._interval, now=True)

    def stopService(self) -> defer.Deferred:  # noqa: N802 (Twisted API)
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        return defer.succeed(None)

    def _tick(self) -> None:
        """One pass; its errors are logged, never fatal (they would stop the loop)."""
        try:
            self._messaging.sweep()
        except Exception:
            self.log.failure("delivery worker pass failed")
