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
        self._counts: dict[defer.Deferred, int | None] = {}
        messaging.when_available(self.wake)

    def receive(self, name: str, wait: float, count: int | None = None) -> defer.Deferred:
        """Lease the oldest queued message for ``name`` (or, with ``count``, a list of up to
        that many), waiting up to ``wait`` seconds for the first."""
        leased = self._lease(name, count)
        if leased or wait <= 0:
            return defer.succeed(leased)
        waiter: defer.Deferred = defer.Deferred(lambda d: self._forget(name, d))
        self._waiters.setdefault(name, []).append(waiter)
        self._counts[waiter] = count
        timer = self._clock.callLater(wait, self._expire, name, waiter)

        def done(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        return waiter.addBoth(done)

    def _lease(self, name: str, count: int | None) -> Any:
        if count is None:
            return self._messaging.lease(name)
        return self._messaging.lease_many(name, count)

    def wake(self, name: str) -> None:
        """Hand available messages to waiting receivers, oldest waiter first."""
        queue = self._waiters.get(name)
        while queue:
            leased = self._lease(name, self._counts.get(queue[0]))
            if not leased:
                return
            waiter = queue.pop(0)
            self._counts.pop(waiter, None)
            if not queue:
                self._waiters.pop(name, None)
            waiter.callback(leased)

    def _expire(self, name: str, waiter: defer.Deferred) -> None:
        count = self._counts.get(waiter)
        self._forget(name, waiter)
        waiter.callback(None if count is None else [])

    def _forget(self, name: str, waiter: defer.Deferred) -> None:
        self._counts.pop(waiter, None)
        queue = self._waiters.get(name, [])
        if waiter in queue:
            queue.remove(waiter)
        if not queue:
            self._waiters.pop(name, None)

    def stopService(self) -> defer.Deferred:  # noqa: N802 (Twisted API)
        """Answer every waiting receiver with no message."""
        super().stopService()
        waiters = [w for queue in self._waiters.values() for w in queue]
        counts, self._counts = self._counts, {}
        self._waiters.clear()
        for waiter in waiters:
            waiter.callback(None if counts.get(waiter) is None else [])
        return defer.succeed(None)

    @property
    def waiting(self) -> int:
        """Receivers currently waiting (for tests and leak checks)."""
        return sum(len(queue) for queue in self._waiters.values())
