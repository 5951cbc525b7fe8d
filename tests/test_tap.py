"""The composition root: every part of the service runs on the reactor it is given."""

from __future__ import annotations

import gc
from types import SimpleNamespace

from twisted.internet import reactor as global_reactor
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from cpstream import gatewaytap
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


async def test_a_daemon_that_owns_its_process_freezes_its_start_up_objects(tmp_path):
    """Built as twistd builds it (no reactor given), a started control plane has moved its
    start-up objects out of the garbage collector's reach; given a reactor (tests and
    benchmarks share their process), it leaves the collector alone."""
    gc.unfreeze()
    options = Options()
    options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1", "--data-dir", str(tmp_path)])
    shared = makeService(options, reactor=global_reactor)
    shared.startService()
    try:
        assert gc.get_freeze_count() == 0
    finally:
        await shared.stopService()
    owned = makeService(options)
    owned.startService()
    try:
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
        await owned.stopService()


def test_a_gateway_that_owns_its_process_freezes_once_loaded():
    """A gateway twistd built freezes its objects when the streams are first loaded (and
    opens them); one built with a given reactor only opens them."""
    gc.unfreeze()
    for owns_process, frozen in ((False, False), (True, True)):
        streams = SimpleNamespace(not_ready="loading")
        try:
            gatewaytap._ready(streams, owns_process)
            assert streams.not_ready is None
            assert (gc.get_freeze_count() > 0) is frozen
        finally:
            gc.unfreeze()
