"""Request deadlines: a client that drips bytes cannot hold a connection open.

Twisted's idle timeout restarts on every byte received, so a client sending
one header byte a second keeps its connection (and a file descriptor) for as
long as it likes: slowloris. Here a request must complete its headers within
``HEADERS_DEADLINE`` seconds of the connection opening (or of its first byte,
on a kept-alive connection) and its body within ``BODY_DEADLINE`` seconds of
its headers; otherwise it is answered 408 and the connection is closed. An
idle kept-alive connection stays under Twisted's own idle timeout, and a
request being answered (a long poll, a WebSocket) is under no deadline.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.web.http import HTTPChannel
from twisted.web.server import Site

from cpstream.domain.ratelimit import Every
from cpstream.web.errors import raw_response

HEADERS_DEADLINE = 10.0
BODY_DEADLINE = 30.0
LOG_EVERY = 10.0


class DeadlineChannel(HTTPChannel):
    """An ``HTTPChannel`` whose requests must arrive in full within fixed deadlines."""

    headers_deadline = HEADERS_DEADLINE
    body_deadline = BODY_DEADLINE
    _deadline: IDelayedCall | None = None
    _between_requests = False

    def connectionMade(self) -> None:  # noqa: N802 (Twisted API)
        super().connectionMade()
        self._arm(self.headers_deadline, "headers")

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted API)
        if self._between_requests and data:
            self._between_requests = False
            self._arm(self.headers_deadline, "headers")
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:  # noqa: N802 (Twisted API)
        self._disarm()
        super().allHeadersReceived()
        if self.length != 0:
            self._arm(self.body_deadline, "body")

    def allContentReceived(self) -> None:  # noqa: N802 (Twisted API)
        self._disarm()
        super().allContentReceived()

    def requestDone(self, request: Any) -> None:  # noqa: N802 (Twisted API)
        self._between_requests = True  # before the base class replays pipelined data
        super().requestDone(request)

    def connectionLost(self, reason: Any) -> None:  # noqa: N802 (Twisted API)
        self._disarm()
        super().connectionLost(reason)

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._deadline = self.callLater(seconds, self._expired, what, seconds)

    def _disarm(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _expired(self, what: str, seconds: float) -> None:
        """Answer 408 and close; abort if the peer will not even take the answer."""
        self._deadline = None
        if self.transport is None or self.transport.disconnecting:
            return
        self.site.too_slow(what)
        message = f"request {what} not received within {seconds:g} s"
        self.transport.write(raw_response(408, message))
        self._abortingCall = self.callLater(self.abortTimeout, self.forceAbortClient)
        self.loseConnection()


class DeadlineSite(Site):
    """A ``Site`` of :class:`DeadlineChannel`; it logs slow clients sparingly, with a count."""

    protocol = DeadlineChannel
    _log = Logger()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timed_out = 0
        self._may_log = Every(self.reactor, LOG_EVERY)

    def too_slow(self, what: str) -> None:
        """Count a connection closed for a missed deadline; log at most every LOG_EVERY s."""
        self.timed_out += 1
        if self._may_log():
            self._log.info(
                "closed a client too slow to send its request {what} ({count} so far)",
                what=what,
                count=self.timed_out,
            )
