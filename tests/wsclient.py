"""A WebSocket test client: Autobahn's client protocol on the test reactor."""

from __future__ import annotations

import json
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateResponseAccept
from twisted.internet import defer
from twisted.internet import reactor as global_reactor


class _Protocol(WebSocketClientProtocol):
    def onOpen(self) -> None:  # noqa: N802 (Autobahn API)
        self.factory.client._opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:  # noqa: N802 (Autobahn API)
        self.factory.client._received(payload, isBinary)

    def onClose(self, wasClean: bool, code: int, reason: str) -> None:  # noqa: N802
        self.factory.client._closed(self, wasClean, code, reason)


class WSClient:
    """Connects, collects every frame in order, and records how the connection closed."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.frames: defer.DeferredQueue = defer.DeferredQueue()
        self.received: list[dict] = []
        self.raw: list[bytes] = []
        self.protocol: _Protocol | None = None
        self.opened: defer.Deferred = defer.Deferred()
        self.closed: defer.Deferred = defer.Deferred()
        self.close_code: int | None = None
        self.close_reason: str | None = None

    @classmethod
    async def connect(
        cls,
        base: str,
        path: str,
        timeout: float = 10.0,
        compress: bool = False,
        **options: Any,
    ) -> WSClient:
        """Open ``ws://HOST:PORT/path``; ``base`` is the daemon's ``http://`` URL.

        ``compress`` offers permessage-deflate; ``compressed`` tells if it was accepted.
        """
        client = cls(base.replace("http://", "ws://") + path)
        if "headers" not in options:
            from tests.support import auth_headers

            sent = auth_headers(base)
            options["headers"] = {k.decode(): v[0].decode() for k, v in sent.items()}
        factory = WebSocketClientFactory(client.url, **options)
        factory.protocol = _Protocol
        factory.client = client
        factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0)
        if compress:
            factory.setProtocolOptions(
                perMessageCompressionOffers=[PerMessageDeflateOffer()],
                perMessageCompressionAccept=PerMessageDeflateResponseAccept,
            )
        host, port = factory.host, factory.port
        global_reactor.connectTCP(host, port, factory)
        await client.opened.addTimeout(timeout, global_reactor)
        return client

    def _opened(self, protocol: _Protocol) -> None:
        self.protocol = protocol
        self.opened.callback(self)

    @property
    def compressed(self) -> bool:
        """Whether permessage-deflate was negotiated on this connection."""
        return self.protocol is not None and bool(self.protocol.websocket_extensions_in_use)

    def _received(self, payload: bytes, is_binary: bool) -> None:
        self.raw.append(payload)
        frame = payload if is_binary else json.loads(payload)
        self.received.append(frame)
        self.frames.put(frame)

    def _closed(self, protocol: _Protocol, clean: bool, code: int, reason: str) -> None:
        self.close_code = protocol.remoteCloseCode
        self.close_reason = protocol.remoteCloseReason
        if not self.opened.called:
            self.opened.errback(ConnectionError(f"handshake failed: {code} {reason}"))
        if not self.closed.called:
            self.closed.callback((self.close_code, self.close_reason))

    async def frame(self, timeout: float = 5.0) -> dict:
        """The next frame, or fail after ``timeout`` seconds."""
        return await self.frames.get().addTimeout(timeout, global_reactor)

    async def frame_of(self, kind: str, timeout: float = 5.0) -> dict:
        """Skip frames until one of type ``kind`` arrives."""
        while True:
            frame = await self.frame(timeout)
            if frame["type"] == kind:
                return frame

    def send(self, frame: Any) -> None:
        assert self.protocol is not None
        self.protocol.sendMessage(json.dumps(frame).encode())

    def send_raw(self, payload: bytes, binary: bool = False) -> None:
        assert self.protocol is not None
        self.protocol.sendMessage(payload, isBinary=binary)

    async def wait_closed(self, timeout: float = 5.0) -> tuple[int | None, str | None]:
        return await self.closed.addTimeout(timeout, global_reactor)

    async def close(self) -> None:
        if self.protocol is not None and not self.closed.called:
            self.protocol.sendClose(1000)
            try:
                await self.wait_closed()
            except defer.TimeoutError:
                self.protocol.transport.abortConnection()
