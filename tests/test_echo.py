"""``/ws/echo`` (``--echo``) and the one set of protocol options every endpoint shares."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest_twisted
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.task import Clock

from cpstream.streams.connections import Streams
from cpstream.streams.echo import EchoFactory, EchoProtocol
from cpstream.streams.hubstreams import (
    InstancesFactory,
    InstancesProtocol,
    MessagesFactory,
    MessagesProtocol,
)
from cpstream.streams.logstream import LogsFactory, LogsProtocol
from cpstream.streams.settings import ECHO_MAX_MESSAGE, MAX_CLIENT_MESSAGE
from tests.conftest import RunningControlPlane, build_control_plane
from tests.support import authorize, create, read_token, sleep, wait_for
from tests.test_streams import log_path, raw_upgrade
from tests.wsclient import WSClient

OPTIONS = WebSocketProtocol.CONFIG_ATTRS_COMMON + WebSocketProtocol.CONFIG_ATTRS_SERVER
SIZE_LIMITS = {"maxFramePayloadSize", "maxMessagePayloadSize"}
REAL_STREAMS = (InstancesProtocol, LogsProtocol, MessagesProtocol)


def options(protocol: type) -> dict:
    """The protocol options the endpoint of ``protocol`` is built with (no collaborators)."""
    streams = Streams(Clock())
    factory = {
        EchoProtocol: lambda: EchoFactory(streams),
        InstancesProtocol: lambda: InstancesFactory(streams, None, None),
        LogsProtocol: lambda: LogsFactory(streams, None, None, None),
        MessagesProtocol: lambda: MessagesFactory(streams, None, None),
    }[protocol]()
    return {name: getattr(factory, name) for name in OPTIONS}


@pytest_twisted.async_yield_fixture
async def echo_cp(data_dir) -> AsyncIterator[RunningControlPlane]:
    service = build_control_plane(data_dir, "--echo")
    service.startService()
    authorize(service.web.url, read_token(data_dir))
    try:
        yield RunningControlPlane(service, data_dir)
    finally:
        await service.stopService()


def test_echo_options_are_the_log_streams_but_for_the_size_limit():
    """The echo endpoint differs from the log stream in its size limits only."""
    echo, logs = options(EchoProtocol), options(LogsProtocol)
    assert {name for name in OPTIONS if echo[name] != logs[name]} == SIZE_LIMITS
    assert echo["maxMessagePayloadSize"] == echo["maxFramePayloadSize"] == ECHO_MAX_MESSAGE


def test_every_real_stream_keeps_the_64_kib_limit():
    """Instances, logs and messages all refuse client frames and messages over 64 KiB."""
    for stream in REAL_STREAMS:
        limits = {options(stream)[name] for name in SIZE_LIMITS}
        assert limits == {MAX_CLIENT_MESSAGE}, stream
    assert MAX_CLIENT_MESSAGE == 64 * 1024


def test_real_streams_share_every_option_but_compression():
    """Instances, logs and messages differ in compression acceptance and nothing else."""
    instances, logs, messages = (options(p) for p in REAL_STREAMS)
    assert instances == messages
    assert {name for name in OPTIONS if logs[name] != instances[name]} == {
        "perMessageCompressionAccept"
    }


@pytest_twisted.ensureDeferred
async def test_echo_is_not_mounted_by_default(cp):
    """Without --echo, /ws/echo is a 404 before any upgrade."""
    client = await raw_upgrade(cp, "/ws/echo")
    assert client.data.startswith(b"HTTP/1.1 404 "), client.data


@pytest_twisted.ensureDeferred
async def test_echo_returns_text_and_binary_as_sent(echo_cp):
    """Text comes back as the same text, binary as the same bytes, in order."""
    client = await WSClient.connect(echo_cp.url, "/ws/echo")
    client.send({"type": "anything", "é": "ü"})
    client.send_raw(b"\x00\xff\x10", binary=True)
    assert await client.frame() == {"type": "anything", "é": "ü"}
    assert await client.frame() == b"\x00\xff\x10"
    await client.close()
    assert client.close_code == 1000


@pytest_twisted.ensureDeferred
async def test_echo_takes_large_messages_real_streams_refuse(echo_cp):
    """1 MiB echoes back on /ws/echo; the same message closes /ws/instances with 1009."""
    big = json.dumps({"type": "ping", "pad": "x" * 1024 * 1024})
    echo = await WSClient.connect(echo_cp.url, "/ws/echo")
    echo.send_raw(big.encode())
    assert (await echo.frame())["pad"] == "x" * 1024 * 1024
    await echo.close()
    instances = await WSClient.connect(echo_cp.url, "/ws/instances")
    await instances.frame()
    instances.send_raw(big.encode())
    assert (await instances.wait_closed())[0] == 1009


@pytest_twisted.ensureDeferred
async def test_echo_stops_reading_while_its_client_does_not_read(echo_cp):
    """A client that sends but never reads is read from only until the echoes back up."""
    client = await WSClient.connect(echo_cp.url, "/ws/echo")
    client.protocol.transport.pauseProducing()
    chunk, count = b"\x07" * 65536, 512
    total = count * len(chunk)
    for _ in range(count):
        client.send_raw(chunk, binary=True)
    (echo,) = await wait_for(lambda: list(echo_cp.service.streams.connections))
    await wait_for(lambda: echo.paused)
    read = -1
    for _ in range(40):
        if read == echo.trafficStats.incomingOctetsWireLevel:
            break
        read = echo.trafficStats.incomingOctetsWireLevel
        await sleep(0.5)
    assert echo.paused and read == echo.trafficStats.incomingOctetsWireLevel
    assert read < total // 2, "the echo read on while its echoes piled up"
    client.protocol.transport.resumeProducing()
    await wait_for(lambda: len(client.raw) == count, timeout=30)
    assert set(client.raw) == {chunk}
    await client.close()


@pytest_twisted.ensureDeferred
async def test_echo_goes_through_the_origin_and_host_policy(echo_cp):
    """A foreign Origin or Host is refused with 403 before the upgrade, as on every stream."""
    port = echo_cp.service.web.port.getHost().port
    foreign = await raw_upgrade(echo_cp, "/ws/echo", [("Origin", "http://evil.example")])
    assert foreign.data.startswith(b"HTTP/1.1 403 "), foreign.data
    same = await raw_upgrade(echo_cp, "/ws/echo", [("Origin", f"http://127.0.0.1:{port}")])
    assert same.data.startswith(b"HTTP/1.1 101 "), same.data
    same.transport.loseConnection()
    rebound = await raw_upgrade(echo_cp, "/ws/echo", host=f"rebound.example:{port}")
    assert rebound.data.startswith(b"HTTP/1.1 403 "), rebound.data


@pytest_twisted.ensureDeferred
async def test_compression_is_accepted_on_logs_and_echo_only(echo_cp):
    """permessage-deflate is negotiated on the log stream and /ws/echo, declined elsewhere."""
    await create(echo_cp.url, "zip")
    log_path(echo_cp, "zip").write_bytes(b"hello\n" * 50)
    negotiated = {}
    for path in ("/ws/instances/zip/logs", "/ws/echo", "/ws/instances", "/ws/messages"):
        client = await WSClient.connect(echo_cp.url, path, compress=True)
        negotiated[path] = client.compressed
        if path == "/ws/instances/zip/logs":
            assert (await client.frame())["lines"] == ["hello"] * 50
        await client.close()
    assert negotiated == {
        "/ws/instances/zip/logs": True,
        "/ws/echo": True,
        "/ws/instances": False,
        "/ws/messages": False,
    }
