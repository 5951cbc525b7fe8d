"""A minimal blocking WebSocket client for the benchmark runner (server frames only).

The upgrade request and the frame parsing are :mod:`tests.wsraw`'s, shared with the tests.
"""

from __future__ import annotations

import json
import socket
import time

from tests.wsraw import next_frame, upgrade


class RawClient:
    """Opens one stream, reads whole server frames; nothing else."""

    def __init__(
        self, port: int, path: str, rcvbuf: int | None = None, token: str | None = None
    ) -> None:
        self.sock = socket.socket()
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(("127.0.0.1", port))
        headers = [("Authorization", f"Bearer {token}")] if token else []
        self.sock.sendall(upgrade(path, f"127.0.0.1:{port}", headers))
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
        found = next_frame(self.buffer, self.offset)
        if found is None:
            return None
        _, payload, self.offset = found
        return payload

    def close(self) -> None:
        self.sock.close()
