"""The composition root: every part of the service runs on the reactor it is given."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from cpstream.tap import Options, makeService
from cpstream.web.deadline import HEADERS_DEADLINE


def test_the_whole_service_runs_on_the_reactor_it_is_given(tmp_path):
    """Built on a MemoryReactorClock, the service listens there and a request deadline
    fires on that clock, never on the global reactor."""
    reactor = MemoryReactorClock()
    options = Options()
    options.parseOptions(["--listen", "tcp:18899:interface=127.0.0.1", "--data-dir", str(tmp_path)])
    service = makeService(options, reactor=reactor)
    service.startService()
    [(port, site, _, interface)] = reactor.tcpServers
    assert (port, interface) == (18899, "127.0.0.1")
    assert site.reactor is reactor
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport(
        hostAddress=IPv4Address("TCP", "127.0.0.1", 18899),
        peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
    )
    channel.makeConnection(transport)
    channel.dataReceived(b"GET /api/health HTTP/1.1\r\nHost: 127.0.")
    reactor.advance(HEADERS_DEADLINE - 0.1)
    assert transport.value() == b""
    reactor.advance(0.1)
    assert transport.value().startswith(b"HTTP/1.1 408 ")
    service.stopService()
