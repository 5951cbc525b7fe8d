"""A minimal blocking WebSocket client for the benchmark runner (server frames only)."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time


class RawClient:
    """Opens one stream, reads whole server frames; nothing else."""

    def __init__(self, port: int, path: str, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket()
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.buffer = b""
        self.offset = 0
        while b"\r\n\r\n" not in self.buffer:
            self._fill(10)
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(head.split(b"\r\n")[0].decode())

    def _fill(self, timeout: float) -> None:
        self.sock.settimeout(timeout)
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("closed")
        self.buffer = self.buffer[self.offset :] + chunk
        self.offset = 0

    def frame(self, timeout: float = 10.0) -> tuple[bytes, float]:
        """The next text frame's payload and the monotonic time it was complete."""
        deadline = time.monotonic() + timeout
        while True:
            payload = self._parse()
            if payload is not None:
                return payload, time.monotonic()
            self._fill(max(0.001, deadline - time.monotonic()))

    def json(self, timeout: float = 10.0) -> dict:
        return json.loads(self.frame(timeout)[0])

    def _parse(self) -> bytes | None:
        """One complete frame's payload from the buffer, consumed by moving an offset."""
        data, at = self.buffer, self.offset
        if len(data) - at < 2:
            return None
        length, header = data[at + 1] & 0x7F, 2
        if length == 126:
            if len(data) - at < 4:
                return None
            (length,) = struct.unpack_from("!H", data, at + 2)
            header = 4
        elif length == 127:
            if len(data) - at < 10:
                return None
            (length,) = struct.unpack_from("!Q", data, at + 2)
            header = 10
        if len(data) - at < header + length:
            return None
        self.offset = at + header + length
        return data[at + header : self.offset]

    def close(self) -> None:
        self.sock.close()
