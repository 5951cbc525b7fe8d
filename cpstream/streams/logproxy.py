"""``/ws/instances/NAME/logs`` on a gateway: the control plane's log stream, relayed.

The log files live where the instances run, next to the control plane, so a
gateway (maybe on another machine) opens the same stream on the control plane,
with the operator token and the client's own query (``backlog``, ``cursor``),
and relays every frame as it came: the same bytes, the same cursor (signed by
the control plane, so a client can resume on any gateway or on the control
plane itself), then the same close code. The gateway answers the client's
``ping`` itself and keeps the upstream alive with WebSocket pings.

Backpressure passes through: while the client is not reading, the upstream
socket is not read either, so the control plane's viewer pauses and the log
file stays the buffer, as it does for a direct viewer.

When the control plane cannot be reached: ``error unavailable``, close 1013
(try again later).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlsplit

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import endpoints
from twisted.logger import Logger

from cpstream.streams.connections import Streams
from cpstream.streams.protocol import StreamFactory, StreamProtocol
from cpstream.streams.settings import LOGS, prepare_frame

UPSTREAM_PING = 20.0
CONNECT_TIMEOUT = 5.0


class Upstream(WebSocketClientProtocol):
    """The gateway's connection to the control plane's log stream, for one viewer."""

    _log = Logger()
    viewer: ProxiedLogs | None = None

    def onOpen(self) -> None:  # noqa: N802 (Autobahn API)
        viewer = self.viewer
        if viewer is None or not viewer.live:
            self.dropConnection(abort=True)
            return
        viewer.upstream_open(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:  # noqa: N802 (Autobahn API)
        if self.viewer is not None and not isBinary:
            self.viewer.relay(payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:  # noqa: N802
        viewer, self.viewer = self.viewer, None
        if viewer is not None:
            viewer.upstream_closed(code, reason)


class ProxiedLogs(StreamProtocol):
    """A log viewer on a gateway: every frame from the control plane's stream, relayed."""

    endpoint = LOGS
    factory: ProxiedLogsFactory

    def __init__(self) -> None:
        super().__init__()
        self.target = ""
        self._upstream: Upstream | None = None
        self._connecting: Any = None

    def parse(self, request: Any) -> None:
        pairs = [(key, value) for key, values in request.params.items() for value in values]
        self.target = request.path + ("?" + urlencode(pairs) if pairs else "")

    def opened(self) -> None:
        self._connecting = self.factory.connect(self)
        self._connecting.addErrback(self._unreachable)

    def _unreachable(self, failure: Any) -> None:
        self._connecting = None
        if self.live and self._upstream is None:
            self._log.info("log proxy: the control plane is unreachable: {e}", e=failure.value)
            self.send_error("unavailable", "the control plane is unreachable", 1013)

    def upstream_open(self, upstream: Upstream) -> None:
        self._upstream = upstream
        if self.paused:
            upstream.transport.pauseProducing()

    def relay(self, payload: bytes) -> None:
        """One frame from the control plane, to the client as it came."""
        self.write_frames((prepare_frame(payload),))

    def upstream_closed(self, code: int | None, reason: str | None) -> None:
        """The control plane closed the stream: close the client's the same way."""
        self._upstream = None
        if not self.live:
            return
        if code is None or code == 1006:
            self.send_error("unavailable", "the control plane is unreachable", 1013)
        elif code >= 3000:
            self.sendClose(code, reason)
        else:
            self.sendCloseFrame(code, (reason or "").encode(), isReply=False)

    def stream_paused(self) -> None:
        if self._upstream is not None and self._upstream.transport is not None:
            self._upstream.transport.pauseProducing()

    def stream_resumed(self) -> None:
        if self._upstream is not None and self._upstream.transport is not None:
            self._upstream.transport.resumeProducing()

    def ended(self) -> None:
        upstream, self._upstream = self._upstream, None
        if upstream is not None:
            upstream.viewer = None
            upstream.dropConnection(abort=True)
        elif self._connecting is not None:
            self._connecting.cancel()


class ProxiedLogsFactory(StreamFactory):
    """Where the control plane is, and the token to open its log streams with."""

    protocol = ProxiedLogs

    def __init__(self, streams: Streams, reactor: Any, control: str, token: str | None) -> None:
        super().__init__(streams)
        self.reactor = reactor
        parts = urlsplit(control)
        self._ws_base = ("wss" if parts.scheme == "https" else "ws") + "://" + parts.netloc
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    def connect(self, viewer: ProxiedLogs) -> Any:
        """Open the control plane's stream for ``viewer``."""
        factory = WebSocketClientFactory(
            self._ws_base + viewer.target, headers=self._headers, reactor=self.reactor
        )
        factory.setProtocolOptions(
            autoPingInterval=UPSTREAM_PING,
            autoPingTimeout=UPSTREAM_PING,
            openHandshakeTimeout=CONNECT_TIMEOUT,
            perMessageCompressionOffers=[],
            maxFramePayloadSize=0,
            maxMessagePayloadSize=0,
        )

        def build(addr: Any) -> Upstream:
            upstream = Upstream()
            upstream.factory = factory
            upstream.viewer = viewer
            return upstream

        factory.buildProtocol = build
        endpoint = endpoints.HostnameEndpoint(
            self.reactor, self._host, self._port, timeout=CONNECT_TIMEOUT
        )
        if self._ws_base.startswith("wss:"):
            from twisted.internet.ssl import optionsForClientTLS

            endpoint = endpoints.wrapClientTLS(optionsForClientTLS(self._host), endpoint)
        return endpoint.connect(factory)
