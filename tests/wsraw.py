"""HTTP/1.1 and WebSocket bytes built and parsed by hand: the one copy.

The stream tests, the hardening battery (:mod:`tests.hardening.raw`) and the
benchmarks' raw clients (:mod:`bench.wsraw`, :mod:`bench.loadgen`) all build
their upgrade requests and client frames here and parse server frames here.
Attacks need what no well-behaved client sends (missing or duplicate headers,
unmasked frames, RSV bits, lengths that lie), so nothing is checked on the
way out.

Standard library only: ``python -m bench.loadgen`` imports it and must stay lean.
"""

from __future__ import annotations

import base64
import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10

# -- what a client sends -------------------------------------------------------------------


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


def upgrade(
    path: str,
    host: str | None,
    headers: list[tuple[str, str]] = (),  # type: ignore[assignment]
    version: str = "13",
) -> bytes:
    """A WebSocket upgrade request (fresh key) with any extra (even repeated) headers."""
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


# -- what a server sends ---------------------------------------------------------------------


def next_frame(data: bytes, at: int = 0) -> tuple[int, bytes, int] | None:
    """The unmasked server frame starting at ``at``: its opcode, its payload and the
    offset just past it; None until the whole frame is in ``data``."""
    if len(data) - at < 2:
        return None
    opcode, size, header = data[at] & 0x0F, data[at + 1] & 0x7F, 2
    if size == 126:
        if len(data) - at < 4:
            return None
        (size,) = struct.unpack_from("!H", data, at + 2)
        header = 4
    elif size == 127:
        if len(data) - at < 10:
            return None
        (size,) = struct.unpack_from("!Q", data, at + 2)
        header = 10
    end = at + header + size
    if end > len(data):
        return None
    return opcode, data[at + header : end], end


def server_frames(data: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """The complete server frames (opcode, payload) in ``data``, and how many bytes they used."""
    frames, position = [], 0
    while (found := next_frame(data, position)) is not None:
        opcode, payload, position = found
        frames.append((opcode, payload))
    return frames, position


@dataclass
class Frames:
    """What a server sent after its 101: data frames and how (if) it closed."""

    messages: list[Any] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    complete: int = 0


def read_frames(data: bytes) -> Frames:
    """Server frames as JSON text messages and the close code and reason, if any."""
    found = Frames()
    frames, found.complete = server_frames(data)
    for opcode, payload in frames:
        if opcode == OP_TEXT:
            found.messages.append(json.loads(payload))
        elif opcode == OP_CLOSE:
            found.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            found.close_reason = payload[2:].decode("utf-8", "replace")
    return found
