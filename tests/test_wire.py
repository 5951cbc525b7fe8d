"""The fast write path on real TCP transports: direct sends, fallback, order, backpressure."""

from __future__ import annotations

import socket

import pytest_twisted
from twisted.internet import defer, protocol
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from cpstream.streams import wire
from tests.support import wait_for


class Accepted(protocol.Protocol):
    def connectionMade(self) -> None:  # noqa: N802 (Twisted API)
        self.factory.accepted.callback(self)


@implementer(IPushProducer)
class Producer:
    def __init__(self) -> None:
        self.paused = 0
        self.resumed = 0

    def pauseProducing(self) -> None:  # noqa: N802 (Twisted API)
        self.paused += 1

    def resumeProducing(self) -> None:  # noqa: N802 (Twisted API)
        self.resumed += 1

    def stopProducing(self) -> None:  # noqa: N802 (Twisted API)
        pass


async def connected_pair(reactor, rcvbuf: int | None = None):
    """A server-side tcp.Server transport and the raw client socket talking to it."""
    factory = protocol.Factory.forProtocol(Accepted)
    factory.accepted = defer.Deferred()
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    client = socket.socket()
    if rcvbuf is not None:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    client.setblocking(False)
    client.connect_ex(("127.0.0.1", port.getHost().port))
    server = await factory.accepted
    port.stopListening()
    return server.transport, client


def drain(client: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = client.recv(1 << 20)
        except BlockingIOError:
            return data
        if not chunk:
            return data
        data += chunk


@pytest_twisted.ensureDeferred
async def test_idle_transport_sends_at_once(reactor):
    """With nothing queued the bytes go straight to the socket; Twisted buffers nothing."""
    transport, client = await connected_pair(reactor)
    assert wire.idle(transport)
    wire.send(transport, b"frame-1")
    assert transport._tempDataLen == 0 and transport.dataBuffer == b""
    sink: list[bytes] = []
    await wait_for(lambda: received(client, sink, 7))
    assert b"".join(sink) == b"frame-1"
    transport.loseConnection()
    client.close()


def received(client: socket.socket, sink: list[bytes], size: int) -> bool:
    """Read what has arrived into ``sink``; True once ``size`` bytes are in."""
    sink.append(drain(client))
    return len(b"".join(sink)) >= size


@pytest_twisted.ensureDeferred
async def test_queued_data_keeps_its_place(reactor):
    """Once something is queued, later frames queue behind it: order is kept."""
    transport, client = await connected_pair(reactor)
    transport.write(b"first;")
    assert not wire.idle(transport)
    wire.send(transport, b"second;")
    assert transport._tempDataLen == len(b"first;second;")
    sink: list[bytes] = []
    await wait_for(lambda: received(client, sink, 13))
    assert b"".join(sink) == b"first;second;"
    transport.loseConnection()
    client.close()


@pytest_twisted.ensureDeferred
async def test_partial_sends_fall_back_and_pause_the_producer(reactor):
    """When the kernel takes only part, the rest is buffered and the producer paused, in order."""
    transport, client = await connected_pair(reactor, rcvbuf=4096)
    producer = Producer()
    transport.registerProducer(producer, True)
    chunks = [b"%06d" % n + b"x" * 994 for n in range(20_000)]
    sent = 0
    while producer.paused == 0 and sent < len(chunks):
        wire.send(transport, chunks[sent])
        sent += 1
    assert producer.paused == 1, "the producer was never paused"
    assert transport._tempDataLen > transport.bufferSize
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    expected = b"".join(chunks[:sent])
    sink: list[bytes] = []
    await wait_for(lambda: received(client, sink, len(expected)), timeout=20)
    assert b"".join(sink) == expected
    await wait_for(lambda: producer.resumed == 1)
    transport.unregisterProducer()
    transport.loseConnection()
    client.close()


@pytest_twisted.ensureDeferred
async def test_a_closing_transport_is_not_written_directly(reactor):
    """After loseConnection the fast path stays out of the way."""
    transport, client = await connected_pair(reactor)
    transport.loseConnection()
    assert not wire.idle(transport)
    wire.send(transport, b"late")
    client.close()


@pytest_twisted.ensureDeferred
async def test_twisted_still_has_what_the_fast_path_reads(reactor):
    """A real tcp.Server has every attribute wire relies on (fails loudly on a Twisted
    that renamed one, instead of silently losing the fast path)."""
    transport, client = await connected_pair(reactor)
    missing = [name for name in wire.RELIED_ON if not hasattr(transport, name)]
    assert missing == [], f"twisted.internet.tcp.Server no longer has {missing}"
    assert wire.fast_path(transport)
    transport.loseConnection()
    client.close()


@pytest_twisted.ensureDeferred
async def test_a_transport_without_them_gets_plain_writes(reactor, monkeypatch):
    """If an attribute is gone (a future Twisted), frames go through transport.write."""
    monkeypatch.setattr(wire, "RELIED_ON", (*wire.RELIED_ON, "_renamed_in_a_new_twisted"))
    monkeypatch.setattr(wire, "_usable", {})
    transport, client = await connected_pair(reactor)
    assert not wire.fast_path(transport) and not wire.idle(transport)
    written: list[bytes] = []
    write = transport.write
    monkeypatch.setattr(transport, "write", lambda data: (written.append(data), write(data)))
    wire.send(transport, b"frame-1")
    assert written == [b"frame-1"]
    sink: list[bytes] = []
    await wait_for(lambda: received(client, sink, 7))
    assert b"".join(sink) == b"frame-1"
    transport.loseConnection()
    client.close()
