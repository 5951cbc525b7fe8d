"""Raw TCP clients for the hardening battery (and the stream tests' hand-made upgrades).

The attacks need what no well-behaved client sends (missing or duplicate
headers, unmasked frames, RSV bits, lengths that lie): the bytes are built and
the server's frames parsed by :mod:`tests.wsraw`; this module connects, sends
them, keeps everything the server sends back, and parses HTTP responses.
"""

from __future__ import annotations

import errno
import json
import os
import socket
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, endpoints, protocol
from twisted.internet import reactor as global_reactor

from tests.support import TOKENS, wait_for
from tests.wsraw import Frames, read_frames, request, upgrade


class Raw(protocol.Protocol):
    """A TCP client that writes what its test says and keeps every byte it receives."""

    def __init__(self) -> None:
        self.data = b""
        self.made_at: float | None = None
        self.lost_at: float | None = None
        self.lost: defer.Deferred = defer.Deferred()
        self.reason: Any = None

    def connectionMade(self) -> None:  # noqa: N802 (Twisted API)
        self.made_at = global_reactor.seconds()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted API)
        self.data += data

    def connectionLost(self, reason: Any) -> None:  # noqa: N802 (Twisted API)
        self.lost_at = global_reactor.seconds()
        self.reason = reason.value
        self.lost.callback(reason.value)

    @property
    def closed(self) -> bool:
        return self.lost_at is not None

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)

    def abort(self) -> None:
        if not self.closed:
            self.transport.abortConnection()

    async def until(self, predicate: Any, timeout: float = 5.0) -> Any:
        """Wait until ``predicate(self)`` is truthy (or the connection is gone)."""
        await wait_for(lambda: predicate(self) or self.closed, timeout=timeout)
        return predicate(self)

    async def response(self, timeout: float = 5.0, bodyless: bool = False) -> Response:
        """The first complete HTTP response (the connection may stay open after it)."""
        await self.until(lambda c: parse_response(c.data, bodyless), timeout)
        answer = parse_response(self.data, bodyless)
        assert answer is not None, f"no complete response: {self.data[:300]!r}"
        return answer


async def connect(port: int, rcvbuf: int | None = None) -> Raw:
    """A connected :class:`Raw` to 127.0.0.1:port; ``rcvbuf`` is set before connecting."""
    if rcvbuf is None:
        endpoint = endpoints.TCP4ClientEndpoint(global_reactor, "127.0.0.1", port, timeout=5)
        return await endpoints.connectProtocol(endpoint, Raw())
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        code = sock.connect_ex(("127.0.0.1", port))
        assert code in (0, errno.EINPROGRESS), os.strerror(code)
        await wait_for(lambda: _connected(sock), timeout=5)
        client = Raw()
        factory = protocol.Factory.forProtocol(lambda: client)
        global_reactor.adoptStreamConnection(sock.fileno(), socket.AF_INET, factory)
    finally:
        sock.close()
    return client


def _connected(sock: socket.socket) -> bool:
    failure = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    assert failure == 0, os.strerror(failure)
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


# -- HTTP ------------------------------------------------------------------------------


def json_post(path: str, host: str, *headers: tuple[str, str]) -> bytes:
    """The head of a JSON POST with ``headers`` (a length, say) and no body yet."""
    return request("POST", path, [("Content-Type", "application/json"), *headers], host=host)


@dataclass
class Response:
    status: int
    headers: dict[str, list[str]]
    body: bytes
    rest: bytes = b""

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


def parse_response(data: bytes, bodyless: bool = False) -> Response | None:
    """The first response in ``data`` once complete (by Content-Length), else None;
    ``bodyless`` for the answer to a HEAD."""
    head, found, rest = data.partition(b"\r\n\r\n")
    if not found:
        return None
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    if status == 101 or bodyless:
        return Response(status, headers, b"", rest)
    if headers.get("transfer-encoding") == ["chunked"]:
        return _dechunk(status, headers, rest)
    length = int(headers.get("content-length", ["0"])[0])
    if len(rest) < length:
        return None
    return Response(status, headers, rest[:length], rest[length:])


def _dechunk(status: int, headers: dict[str, list[str]], data: bytes) -> Response | None:
    body, position = b"", 0
    while True:
        line_end = data.find(b"\r\n", position)
        if line_end < 0:
            return None
        size = int(data[position:line_end].split(b";")[0], 16)
        start = line_end + 2
        if len(data) < start + size + 2:
            return None
        if size == 0:
            return Response(status, headers, body, data[start + 2 :])
        body += data[start : start + size]
        position = start + size + 2


async def exchange(port: int, raw_request: bytes, timeout: float = 5.0) -> Response:
    """Send one request on a fresh connection and return the response."""
    client = await connect(port)
    client.write(raw_request)
    try:
        return await client.response(timeout, bodyless=raw_request.startswith(b"HEAD "))
    finally:
        client.abort()


# -- WebSocket ---------------------------------------------------------------------------


class Stream:
    """An open raw WebSocket: its client and what came after the handshake."""

    def __init__(self, client: Raw, handshake: Response) -> None:
        self.client = client
        self.handshake = handshake
        self._offset = len(client.data) - len(handshake.rest)

    def frames(self) -> Frames:
        return read_frames(self.client.data[self._offset :])

    async def closed_with(self, timeout: float = 5.0) -> int | None:
        """Wait for the server's close frame (or the connection's end); its code."""
        await self.client.until(lambda c: self.frames().close_code is not None, timeout)
        return self.frames().close_code


async def provoke(port: int, data: bytes, timeout: float = 3.0) -> tuple[Stream, int | None, float]:
    """Open ``/ws/instances``, take its first frame, send ``data``: the stream, the close
    code the server answered with, and how long after sending it came."""
    stream = await open_stream(port, "/ws/instances")
    await stream.client.until(lambda c: stream.frames().messages)
    sent_at = global_reactor.seconds()
    stream.client.write(data)
    code = await stream.closed_with(timeout)
    return stream, code, global_reactor.seconds() - sent_at


async def open_stream(port: int, path: str, rcvbuf: int | None = None) -> Stream:
    """A raw, well-formed WebSocket on ``path`` (with the daemon's token), past its 101."""
    client = await connect(port, rcvbuf)
    host = f"127.0.0.1:{port}"
    token = TOKENS.get(host)
    client.write(upgrade(path, host, [("Authorization", f"Bearer {token}")] if token else []))
    handshake = await client.response()
    assert handshake.status == 101, (handshake.status, handshake.body)
    return Stream(client, handshake)
