"""Raw TCP clients for the hardening battery: hand-built HTTP and WebSocket bytes.

The attacks need what no well-behaved client sends (missing or duplicate
headers, unmasked frames, RSV bits, lengths that lie), so requests and
frames are built by hand here, and everything the server sends back is kept.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, endpoints, protocol
from twisted.internet import reactor as global_reactor

from tests.support import wait_for

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


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


def request(
    method: str,
    path: str,
    headers: list[tuple[str, str]] = (),  # type: ignore[assignment]
    body: bytes = b"",
    host: str | None = None,
) -> bytes:
    """An HTTP/1.1 request; ``host`` None sends no Host header, the headers go as given."""
    lines = [f"{method} {path} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


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


def upgrade(
    path: str,
    host: str | None,
    headers: list[tuple[str, str]] = (),  # type: ignore[assignment]
    version: str = "13",
) -> bytes:
    """A WebSocket upgrade request with any extra (even repeated) headers."""
    key = base64.b64encode(os.urandom(16)).decode()
    base = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", version),
    ]
    return request("GET", path, [*base, *headers], host=host)


def frame(
    opcode: int,
    payload: bytes = b"",
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    length: int | None = None,
) -> bytes:
    """One client frame; ``length`` may lie about the payload that follows."""
    size = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if masked else 0
    if size < 126:
        head += bytes([mask_bit | size])
    elif size < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", size)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def text(value: Any) -> bytes:
    """A masked text frame carrying ``value`` as JSON."""
    return frame(OP_TEXT, json.dumps(value).encode())


@dataclass
class Frames:
    """What a server sent after its 101: data frames and how (if) it closed."""

    messages: list[Any] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    complete: int = 0


def read_frames(data: bytes) -> Frames:
    """Parse unmasked server frames."""
    found = Frames()
    position = 0
    while position + 2 <= len(data):
        opcode, size = data[position] & 0x0F, data[position + 1] & 0x7F
        header = 2
        if size == 126:
            if position + 4 > len(data):
                break
            (size,) = struct.unpack("!H", data[position + 2 : position + 4])
            header = 4
        elif size == 127:
            if position + 10 > len(data):
                break
            (size,) = struct.unpack("!Q", data[position + 2 : position + 10])
            header = 10
        if position + header + size > len(data):
            break
        payload = data[position + header : position + header + size]
        if opcode == OP_TEXT:
            found.messages.append(json.loads(payload))
        elif opcode == OP_CLOSE:
            found.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            found.close_reason = payload[2:].decode("utf-8", "replace")
        position += header + size
        found.complete = position
    return found


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
    """A raw WebSocket on ``path``, past its 101."""
    client = await connect(port, rcvbuf)
    client.write(upgrade(path, f"127.0.0.1:{port}"))
    handshake = await client.response()
    assert handshake.status == 101, (handshake.status, handshake.body)
    return Stream(client, handshake)
