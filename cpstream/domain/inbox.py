"""Long-poll receivers: each waits on a Deferred, woken when a message becomes available.

A waiting receiver is woken by the send (or retry, or replay) that makes a
message available to it, in the same reactor turn; there is no sleep loop.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet import defer

from cpstream.domain.messaging import Messaging

MAX_WAIT = 60


class Inbox(Service):
    """The receivers waiting for messages, per instance, oldest waiter first."""

    def __init__(self, messaging: Messaging, clock: Any) -> None:
        self._messaging = messaging
        self._clock = clock
        self._waiters: dict[str, list[defer.Deferred]] = {}
        messaging.when_available(self.wake)

    def receive(self, name: str, wait: float) -> defer.Deferred:
        """Lease the oldest queued message for ``name``, waiting up to ``wait`` seconds."""
        message = self._messaging.lease(name)
        if message is not None or wait <= 0:
            return defer.succeed(message)
        waiter: defer.Deferred = defer.Deferred(lambda d: self._forget(name, d))
        self._waiters.setdefault(name, []).append(waiter)
        timer = self._clock.callLater(wait, self._expire, name, waiter)

        def done(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        return waiter.addBoth(done)

    def wake(self, name: str) -> None:
        """Hand available messages to waiting receivers, oldest waiter first."""
        queue = self._waiters.get(name)
        while queue:
            message = self._messaging.lease(name)
            if message is None:
                return
            waiter = queue.pop(0)
            if not queue:
                self._waiters.pop(name, None)
            waiter.callback(message)

    def _expire(self, name: str, waiter: defer.Deferred) -> None:
        self._forget(name, waiter)
        waiter.callback(None)

    def _forget(self, name: str, waiter: defer.Deferred) -> None:
        queue = self._waiters.get(name, [])
        if waiter in queue:
            queue.remove(waiter)
        if not queue:
            self._waiters.pop(name, None)

    def stopService(self) -> defer.Deferred:  # noqa: N802 (Twisted API)
        """Answer every waiting receiver with no message."""
        super().stopService()
        waiters = [w for queue in self._waiters.values() for w in queue]
        self._waiters.clear()
        for waiter in waiters:
            waiter.callback(None)
        return defer.succeed(None)

    @property
    def waiting(self) -> int:
        """Receivers currently waiting (for tests and leak checks)."""
        return sum(len(queue) for queue in self._waiters.values())
