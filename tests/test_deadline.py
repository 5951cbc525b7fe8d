"""Request deadlines against slow clients, on a task.Clock and an in-memory transport."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from cpstream.web.deadline import BODY_DEADLINE, HEADERS_DEADLINE, DeadlineSite
from cpstream.web.guard import Guard
from cpstream.web.site import ControlPlaneSite
from tests.support import NO_AUTH

HEAD = b"GET /x HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"


class Answers(Resource):
    """Answers at once, or holds the request open (``/hold``) until the test finishes it."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.held: list[Any] = []

    def render(self, request: Any) -> Any:
        if request.path == b"/hold":
            self.held.append(request)
            return NOT_DONE_YET
        return b"ok"


class Connection:
    """One client connection to a site, with its clock and what the server wrote."""

    def __init__(self, site_class: type = DeadlineSite, **kwargs: Any) -> None:
        self.clock = Clock()
        self.resource = Answers()
        self.site = site_class(self.resource, reactor=self.clock, **kwargs)
        self.channel = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        self.transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8080),
            peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
        )
        self.channel.makeConnection(self.transport)

    def drip(self, data: bytes, every: float = 1.0) -> None:
        for byte in data:
            self.channel.dataReceived(bytes([byte]))
            self.clock.advance(every)

    def closes_exactly_after(self, seconds: float) -> bool:
        """Not closed 10 ms before ``seconds`` from now, closed at ``seconds``."""
        self.clock.advance(seconds - 0.01)
        if self.closed:
            return False
        self.clock.advance(0.01)
        return self.closed

    @property
    def closed(self) -> bool:
        return self.transport.disconnecting

    @property
    def written(self) -> bytes:
        return self.transport.value()


def test_dripped_headers_are_cut_off_at_the_headers_deadline():
    """A client dripping one header byte a second gets 408 and is closed at 10 s."""
    connection = Connection()
    connection.drip(b"GET /x HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nX-Slow: aaaa", every=1.0)
    assert connection.closed
    assert connection.written.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b'{"error": "request headers not received within 10 s"}' in connection.written


def test_partial_headers_then_silence_are_cut_off():
    """Partial headers followed by silence are closed exactly at the headers deadline."""
    connection = Connection()
    connection.channel.dataReceived(b"GET /x HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n")
    assert connection.closes_exactly_after(HEADERS_DEADLINE)


def test_a_silent_connection_is_cut_off():
    """A connection that never sends a byte is closed at the headers deadline."""
    connection = Connection()
    connection.clock.advance(HEADERS_DEADLINE)
    assert connection.closed and b" 408 " in connection.written


def test_a_slow_body_is_cut_off_at_the_body_deadline():
    """Headers on time, then a body at 1 byte a second: 408 at 30 s after the headers."""
    connection = Connection()
    connection.channel.dataReceived(
        b"POST /x HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Length: 100\r\n\r\n"
    )
    connection.drip(b"x" * 29, every=1.0)
    connection.clock.advance(0.99)
    assert not connection.closed
    connection.clock.advance(0.01)
    assert connection.closed and b"request body not received within 30 s" in connection.written


def test_prompt_requests_are_untouched_and_keep_alive_is_twisteds():
    """A prompt request is answered; the idle kept-alive connection is not cut at 10 s."""
    connection = Connection(timeout=60)
    connection.channel.dataReceived(HEAD)
    assert connection.written.startswith(b"HTTP/1.1 200 OK")
    connection.clock.advance(BODY_DEADLINE + 1)
    assert not connection.closed
    connection.clock.advance(60)
    assert connection.closed and b" 408 " not in connection.written


def test_a_request_being_answered_has_no_deadline():
    """A long-poll held open for longer than both deadlines is still answered."""
    connection = Connection()
    connection.channel.dataReceived(b"GET /hold HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n")
    connection.clock.advance(HEADERS_DEADLINE + BODY_DEADLINE + 5)
    assert not connection.closed
    request = connection.resource.held[0]
    request.write(b"late")
    request.finish()
    assert connection.written.startswith(b"HTTP/1.1 200 OK") and not connection.closed


def test_each_request_on_a_kept_alive_connection_has_its_own_deadline():
    """After an answer, the next request's headers get 10 s from its first byte."""
    connection = Connection(timeout=600)
    connection.channel.dataReceived(HEAD)
    connection.clock.advance(100)
    connection.channel.dataReceived(b"GET /x HTTP/1.1\r\n")
    assert connection.closes_exactly_after(HEADERS_DEADLINE)


def test_the_control_plane_site_has_the_deadlines():
    """The site the daemon serves applies the headers deadline (before any policy check)."""
    connection = Connection(ControlPlaneSite, guard=Guard(), auth=NO_AUTH)
    connection.drip(b"GET /api/health HTTP/1.1\r\nHost: 12", every=1.0)
    assert connection.closed and b" 408 " in connection.written


def test_timeouts_are_logged_at_most_every_ten_seconds():
    """Many slow clients at once produce one log line, with a count."""
    lines: list[dict] = []
    globalLogPublisher.addObserver(lines.append)
    try:
        clock = Clock()
        site = DeadlineSite(Answers(), reactor=clock)
        for port in range(5):
            channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", port))
            channel.makeConnection(StringTransport())
        clock.advance(HEADERS_DEADLINE)
    finally:
        globalLogPublisher.removeObserver(lines.append)
    slow = [e for e in lines if "too slow" in e.get("log_format", "")]
    assert len(slow) == 1 and site.timed_out == 5
