"""The WebSocket streams under ``/ws/``: wire protocol, Autobahn protocols and factories.

Wire protocol (JSON text frames, each with a ``type``):

``/ws/instances``
    server: ``snapshot {instances, include_archived, seq[, resync]}`` first, then
    ``status_changed {name, status, pid, started_at}``, ``instance_created {name,
    port, status}``, ``instance_archived {name}``, ``instance_unarchived {name,
    port, status}``, ``instance_deleted {name}``, each with ``seq`` and
    ``timestamp``. client: ``set_include_archived {value}`` (answered by a snapshot).
``/ws/instances/NAME/logs?backlog=N``
    server: ``backlog {lines, count}`` (N default 100, clamped to 1000), then
    ``lines {lines, count}`` in 100 ms batches and ``rotated`` when the file
    rotates. Unknown NAME: ``error instance_not_found`` then close 4404; a bad N:
    ``error bad_request`` then close 4400.
``/ws/messages?instance=&correlation_id=``
    server: ``snapshot {recent_events, seq}`` (the last 100 matching events,
    oldest first), then ``message_event {message_id, event, from, to,
    message_type, correlation_id, detail, seq, timestamp}``. Never a payload.
``/ws/echo`` (only with ``--echo``: a test aid for conformance suites)
    every text or binary message is sent back as it came; no JSON, no ``ping``.
Every stream
    client ``ping`` -> server ``pong``. Any inbound frame resets the idle timer;
    silence for ``--idle-timeout`` closes with 1001 ``idle timeout``; shutdown
    closes with 1001 ``server shutdown``. A binary, non-JSON or unknown frame
    gets ``error invalid_frame`` and close 1008; a client message over 64 KiB
    closes with 1009. A client that falls 256 frames behind on a hub stream
    gets one ``snapshot`` with ``"resync": true`` instead of the stale deltas.

Each connection is a streaming producer on its transport: it writes only
while the transport is not paused, so a client that stops reading costs a
bounded amount of memory (see :mod:`cpstream.hub` and :mod:`cpstream.logtail`).
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept
from autobahn.websocket.protocol import PreparedMessage
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.resource import Resource

from cpstream import wire
from cpstream.hub import Event, encode
from cpstream.logtail import ROTATED
from cpstream.ratelimit import Every
from cpstream.registry import UnknownInstance
from cpstream.web import SERVER_NAME, JSONError

MAX_CLIENT_MESSAGE = 64 * 1024
# The echo endpoint's only exception: the Autobahn TestSuite echoes messages of
# up to 16 MiB (cases 9.1.6, 9.2.6) and compressed ones of 128 KiB (12.*, 13.*).
ECHO_MAX_MESSAGE = 16 * 1024 * 1024
STUCK_TIMEOUT = 60.0
BATCH_WINDOW = 0.1
DEFAULT_BACKLOG = 100
MAX_BACKLOG = 1000
FRAME_LINES = 2000
FRAME_BYTES = 512 * 1024
READ_BUDGET = 512 * 1024
SHUTDOWN_WAIT = 2.0
CAP_LOG_EVERY = 10.0
SEND_BUFFER = 64 * 1024  # Linux doubles it: 128 KiB in the kernel


def prepare_frame(payload: bytes) -> PreparedMessage:
    """One server text frame, built once and written as is to every uncompressed subscriber.

    A connection that negotiated permessage-deflate (where the settings accept
    it) cannot share the bytes: Autobahn deflates the payload for it alone.
    """
    return PreparedMessage(payload, False, False, False)


INSTANCES, LOGS, MESSAGES, ECHO = "instances", "logs", "messages", "echo"
# permessage-deflate (RFC 7692) pays on the log stream: text batches written
# per viewer anyway, 4x fewer bytes. On the instance and message streams it
# would replace one shared prepared frame per event with a deflate per client:
# 2-3.5x the server CPU per delivery and ~200 KiB instead of ~11 KiB per
# connection, to save ~150 bytes per event (docs/compression.md, measured by
# bench/compression.py). The echo endpoint mirrors the log stream, so the
# conformance suite covers the compressed path.
COMPRESSED = frozenset({LOGS, ECHO})


def accept_deflate(offers: list[Any]) -> PerMessageDeflateOfferAccept | None:
    """Accept the client's first permessage-deflate offer, with the parameters it asks for."""
    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer):
            return PerMessageDeflateOfferAccept(offer)
    return None


def decline_compression(offers: list[Any]) -> None:
    """Decline every compression offer: frames go out as prepared."""
    return None


@dataclass(frozen=True)
class StreamSettings:
    """The one set of WebSocket protocol options every endpoint is built from.

    Autobahn's defaults are unsafe for us (any Origin, version 8, unlimited
    sizes, errors as TCP resets, an HTML status page): every one is set here,
    and nowhere else. Endpoints differ in two named ways only: whether they
    accept compression (``compressed``) and the echo endpoint's size limit.
    """

    max_message: int = MAX_CLIENT_MESSAGE
    open_handshake_timeout: float = 5.0
    close_handshake_timeout: float = 2.0
    send_buffer: int = SEND_BUFFER
    compressed: frozenset[str] = COMPRESSED

    def message_limit(self, endpoint: str) -> int:
        """The largest client frame and message ``endpoint`` accepts (1009 beyond).

        The one exception, for the echo endpoint only: the conformance suite's
        large-message cases. Every real stream keeps ``max_message``.
        """
        return ECHO_MAX_MESSAGE if endpoint == ECHO else self.max_message

    def apply(self, factory: WebSocketServerFactory, endpoint: str) -> None:
        """Set every protocol option of ``factory``, the factory of ``endpoint``."""
        limit = self.message_limit(endpoint)
        factory.setProtocolOptions(
            versions=[13],
            webStatus=False,
            utf8validateIncoming=True,
            requireMaskedClientFrames=True,
            maxFramePayloadSize=limit,
            maxMessagePayloadSize=limit,
            failByDrop=False,
            openHandshakeTimeout=self.open_handshake_timeout,
            closeHandshakeTimeout=self.close_handshake_timeout,
            autoPingInterval=0,
            tcpNoDelay=True,
            perMessageCompressionAccept=(
                accept_deflate if endpoint in self.compressed else decline_compression
            ),
        )


class Streams:
    """Every open stream connection: the connection cap, the idle timeout, shutdown."""

    _log = Logger()

    def __init__(
        self,
        clock: Any,
        idle_timeout: float = 90.0,
        max_connections: int = 1024,
        settings: StreamSettings | None = None,
    ) -> None:
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.settings = settings or StreamSettings()
        self.connections: set[StreamProtocol] = set()
        self.accepting = True
        self._may_log = Every(clock, CAP_LOG_EVERY)
        self.refused = 0
        self._sweep = LoopingCall(self._sweep_idle)
        self._sweep.clock = clock

    def opened(self, connection: StreamProtocol) -> None:
        """Count a new connection; the idle sweep runs while any is open."""
        self.connections.add(connection)
        if not self._sweep.running:
            self._sweep.start(min(1.0, self.idle_timeout / 10), now=False)

    def closed(self, connection: StreamProtocol) -> None:
        self.connections.discard(connection)
        if not self.connections and self._sweep.running:
            self._sweep.stop()

    def _sweep_idle(self) -> None:
        """Close connections silent for the idle timeout: one timer for all of them."""
        try:
            limit = self.clock.seconds() - self.idle_timeout
            for connection in [c for c in self.connections if c.last_seen <= limit]:
                connection.close_going_away("idle timeout")
        except Exception:
            self._log.failure("idle sweep failed")

    def admit(self) -> bool:
        """Whether one more connection may open now; refusals are logged sparingly."""
        if self.accepting and len(self.connections) < self.max_connections:
            return True
        self.refused += 1
        if self._may_log():
            self._log.warn(
                "refusing WebSocket upgrades: {open} open, limit {limit} ({refused} refused)",
                open=len(self.connections),
                limit=self.max_connections,
                refused=self.refused,
            )
        return False

    def close_all(self, timeout: float = SHUTDOWN_WAIT) -> defer.Deferred:
        """Send close 1001 ``server shutdown`` to everyone; wait (bounded) for the handshakes."""
        self.accepting = False
        waiting = [c.is_closed for c in self.connections if not c.is_closed.called]
        for connection in list(self.connections):
            connection.close_going_away("server shutdown")
        done = defer.DeferredList(waiting, consumeErrors=True)
        timer = self.clock.callLater(timeout, self._abort_all)
        return done.addBoth(lambda _: timer.cancel() if timer.active() else None)

    def _abort_all(self) -> None:
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.abortConnection()


class StreamFactory(WebSocketServerFactory):
    """A factory owning what its connections share: the streams and the collaborators."""

    def __init__(self, protocol: type, streams: Streams, **collaborators: Any) -> None:
        super().__init__(server=SERVER_NAME.decode())
        self.protocol = protocol
        self.streams = streams
        self.clock = streams.clock
        for name, value in collaborators.items():
            setattr(self, name, value)
        streams.settings.apply(self, protocol.endpoint)


class StreamProtocol(WebSocketServerProtocol):
    """The shared protocol: producer registration, ping/pong, idle timeout, errors."""

    _log = Logger()
    endpoint = ""
    commands: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.paused = False
        self.last_seen = 0.0
        self._stuck_call: Any = None
        self._pong_owed = False
        self._done = False
        self.problem: tuple[str, str, int] | None = None

    # -- lifecycle -----------------------------------------------------------

    def onConnect(self, request: Any) -> None:  # noqa: N802 (Autobahn API)
        self.parse(request)

    def parse(self, request: Any) -> None:
        """Read the upgrade request's path and query; set ``self.problem`` to refuse."""

    def onOpen(self) -> None:  # noqa: N802 (Autobahn API)
        self.last_seen = self.factory.clock.seconds()
        self.factory.streams.opened(self)
        self._cap_send_buffer()
        self._forget_handshake()
        self.transport.unregisterProducer()
        self.transport.registerProducer(self, True)
        if self.problem is not None:
            self.send_error(*self.problem)
            return
        self.opened()

    def opened(self) -> None:
        """The stream starts: send its first frame."""

    def _forget_handshake(self) -> None:
        """Drop the opening handshake's request and response: a connection lives long."""
        self.http_headers = self.http_raw_headers = {}
        self.http_request_data = self.http_response_data = b""
        self.websocket_protocols = []

    def _cap_send_buffer(self) -> None:
        """Bound the kernel's share of a slow client's backlog.

        Linux autotunes a loopback socket's send buffer to megabytes (10,700
        frames went into it before a stuck client paused its stream), which would
        keep a slow client minutes behind before the hub's 256-frame lag bound
        applies; capped, a stuck client lags after about 1,000 frames.
        """
        handle = getattr(self.transport, "getHandle", None)
        if handle is not None:
            size = self.factory.streams.settings.send_buffer
            handle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:  # noqa: N802
        if self._done:
            return
        self._done = True
        if self._stuck_call is not None and self._stuck_call.active():
            self._stuck_call.cancel()
        self.factory.streams.closed(self)
        self.ended()

    def ended(self) -> None:
        """The connection is gone: release what the stream held."""

    @property
    def live(self) -> bool:
        return self.state == self.STATE_OPEN and not self._done

    # -- inbound -----------------------------------------------------------------

    def _touch(self) -> None:
        self.last_seen = self.factory.clock.seconds()

    def onPing(self, payload: bytes) -> None:  # noqa: N802 (Autobahn API)
        self._touch()
        super().onPing(payload)

    def onPong(self, payload: bytes) -> None:  # noqa: N802 (Autobahn API)
        self._touch()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:  # noqa: N802 (Autobahn API)
        self._touch()
        if not self.live:
            return
        if isBinary:
            self.refuse_frame("binary frames are not accepted")
            return
        try:
            frame = json.loads(payload)
        except (ValueError, RecursionError):
            self.refuse_frame("frames must be JSON objects")
            return
        kind = frame.get("type") if isinstance(frame, dict) else None
        if kind == "ping":
            self.pong()
        elif kind in self.commands:
            self.command(kind, frame)
        else:
            self.refuse_frame(f"unknown frame type {kind!r}"[:100])

    def command(self, kind: str, frame: dict[str, Any]) -> None:
        """A client command other than ``ping``."""

    def pong(self) -> None:
        """Answer a ping at once, or once on resume if the client is not reading."""
        if self.paused:
            self._pong_owed = True
        else:
            self.send_json({"type": "pong"})

    # -- outbound ----------------------------------------------------------------

    def send_json(self, frame: Event) -> None:
        """Send one frame of our own, framed once and written at once when uncompressed."""
        payload = encode(frame)
        if self._perMessageCompress is None:
            wire.send(self.transport, prepare_frame(payload).payloadHybi)
        else:
            self.sendMessage(payload)

    def sendMessage(self, payload: bytes, *args: Any, **kwargs: Any) -> None:  # noqa: N802
        """Autobahn applies ``maxMessagePayloadSize`` to what we send as well (and raises
        for a 200 KiB backlog or snapshot); the limit is meant for clients only."""
        limit, self.maxMessagePayloadSize = self.maxMessagePayloadSize, 0
        try:
            super().sendMessage(payload, *args, **kwargs)
        finally:
            self.maxMessagePayloadSize = limit

    def send_error(self, code: str, message: str, close_code: int) -> None:
        """An error frame, then the brief's close code."""
        self.send_json({"type": "error", "code": code, "message": message})
        if close_code >= 3000:
            self.sendClose(close_code, message[:120])
        else:
            self.sendCloseFrame(close_code, message[:120].encode(), isReply=False)

    def refuse_frame(self, message: str) -> None:
        self.send_error("invalid_frame", message, 1008)

    def close_going_away(self, reason: str) -> None:
        """Close with 1001 (``sendClose`` refuses 1001, so send the frame directly)."""
        if self.state == self.STATE_OPEN:
            self.sendCloseFrame(1001, reason.encode(), isReply=False)

    # -- producer ----------------------------------------------------------------

    def pauseProducing(self) -> None:  # noqa: N802 (Twisted API)
        self.paused = True
        if self._stuck_call is None:
            self._stuck_call = self.factory.clock.callLater(STUCK_TIMEOUT, self._stuck)
        self.stream_paused()

    def resumeProducing(self) -> None:  # noqa: N802 (Twisted API)
        self.paused = False
        if self._stuck_call is not None:
            if self._stuck_call.active():
                self._stuck_call.cancel()
            self._stuck_call = None
        if self._pong_owed:
            self._pong_owed = False
            self.send_json({"type": "pong"})
        if self.live:
            self.stream_resumed()

    def stopProducing(self) -> None:  # noqa: N802 (Twisted API)
        self.paused = True

    def stream_paused(self) -> None:
        """The transport's buffer is full: stop producing."""

    def stream_resumed(self) -> None:
        """The transport drained: produce again."""

    def _stuck(self) -> None:
        """Paused for a minute: the peer is gone or stuck; its reconnect gets a snapshot."""
        self._stuck_call = None
        self._log.info("aborting a stream client that read nothing for {s}s", s=STUCK_TIMEOUT)
        self.transport.abortConnection()


class HubStream(StreamProtocol):
    """A snapshot, then the hub's deltas; a lagged subscriber is resynced with a snapshot.

    While the transport accepts data the hub hands each frame straight to
    :meth:`_write_frame` (the subscription's ``deliver``); while it is paused
    frames wait in the subscription's bounded queue, drained in one write on
    resume.
    """

    def __init__(self) -> None:
        super().__init__()
        self._snapshot_owed = False
        self._subscription: Any = None

    def opened(self) -> None:
        self._subscription = self.factory.hub.subscribe(self.accepts)
        self._send_snapshot()
        self._ready(True)

    def _ready(self, ready: bool) -> None:
        """Let the hub hand frames straight to us, or make it queue them."""
        self._subscription.deliver = self._write_frame if ready else None
        self._subscription.drain = self._drain if ready else None

    def accepts(self, event: Event) -> bool:
        return True

    def snapshot(self) -> Event:
        raise NotImplementedError

    def _send_snapshot(self, resync: bool = False) -> None:
        """A fresh snapshot replaces everything queued (it already includes it)."""
        self._subscription.resynced()
        frame = self.snapshot()
        if resync:
            frame["resync"] = True
        self.send_json(frame)

    def resnapshot(self) -> None:
        """Answer a command with a snapshot, now or once the client reads again."""
        if self.paused:
            self._snapshot_owed = True
        else:
            self._send_snapshot()

    def _write_frame(self, frame: PreparedMessage) -> None:
        if self._perMessageCompress is None:
            wire.send(self.transport, frame.payloadHybi)
        else:
            self.sendPreparedMessage(frame)

    def _drain(self) -> None:
        """Send everything queued, in order, in one write."""
        pending = self._subscription.queue.pending
        if not pending:
            return
        frames = list(pending)
        pending.clear()
        if self._perMessageCompress is None:
            wire.send(self.transport, b"".join(f.payloadHybi for f in frames))
        else:
            for frame in frames:
                self.sendPreparedMessage(frame)

    def stream_paused(self) -> None:
        if self._subscription is not None:
            self._ready(False)

    def stream_resumed(self) -> None:
        if self._subscription is None:
            return
        if self._subscription.lagged:
            self._snapshot_owed = False
            self._send_snapshot(resync=True)
        elif self._snapshot_owed:
            self._snapshot_owed = False
            self._send_snapshot()
        self._drain()
        if not self.paused:
            self._ready(True)

    def ended(self) -> None:
        if self._subscription is not None:
            self._ready(False)
            self._subscription.cancel()


class InstancesProtocol(HubStream):
    """``/ws/instances``: instance snapshots and lifecycle deltas."""

    endpoint = INSTANCES
    commands = ("set_include_archived",)

    def parse(self, request: Any) -> None:
        self.include_archived = False

    def accepts(self, event: Event) -> bool:
        return self.include_archived or event["type"] != "instance_deleted"

    def snapshot(self) -> Event:
        return self.factory.registry.snapshot(self.include_archived)

    def command(self, kind: str, frame: dict[str, Any]) -> None:
        value = frame.get("value")
        if not isinstance(value, bool):
            self.refuse_frame("set_include_archived needs a boolean 'value'")
            return
        self.include_archived = value
        self.resnapshot()


def _query(request: Any, name: str) -> str | None:
    values = request.params.get(name)
    return values[0] if values else None


class MessagesProtocol(HubStream):
    """``/ws/messages``: recent message events, then live ones, filtered."""

    endpoint = MESSAGES

    def parse(self, request: Any) -> None:
        self.instance = _query(request, "instance") or None
        self.correlation_id = _query(request, "correlation_id") or None
        for value in (self.instance, self.correlation_id):
            if value is not None and len(value) > 200:
                self.problem = ("bad_request", "filters are at most 200 characters", 4400)

    def accepts(self, event: Event) -> bool:
        if self.instance is not None and self.instance not in (event["from"], event["to"]):
            return False
        return self.correlation_id is None or event["correlation_id"] == self.correlation_id

    def snapshot(self) -> Event:
        return self.factory.messaging.snapshot(self.instance, self.correlation_id)


class LogsProtocol(StreamProtocol):
    """``/ws/instances/NAME/logs``: a backlog, then new complete lines in 100 ms batches."""

    endpoint = LOGS

    def __init__(self) -> None:
        super().__init__()
        self.name = ""
        self.backlog = DEFAULT_BACKLOG
        self._batch: list[str] = []
        self._batch_bytes = 0
        self._timer: Any = None
        self._more: Any = None
        self._following = False

    def parse(self, request: Any) -> None:
        parts = request.path.strip("/").split("/")
        self.name = unquote(parts[2]) if len(parts) == 4 else ""
        raw = _query(request, "backlog")
        if raw is not None:
            try:
                self.backlog = min(int(raw), MAX_BACKLOG)
            except ValueError:
                self.backlog = -1
            if self.backlog < 0:
                self.problem = ("bad_request", "backlog must be a non-negative integer", 4400)

    def opened(self) -> None:
        try:
            instance = self.factory.registry.get(self.name)
        except UnknownInstance:
            self.send_error("instance_not_found", f"No instance named '{self.name}'", 4404)
            return
        path = self.factory.logs.path(instance.name)
        lines, self._cursor = self.factory.tails.follow(path, self, self._pump, self.backlog)
        self._following = True
        self.send_json({"type": "backlog", "lines": lines, "count": len(lines)})
        self._pump()

    def _pump(self) -> None:
        """Read what is new (only while the client keeps up) into the pending batch."""
        self._more = None
        if self.paused or not self.live or not self._following:
            return
        items = self._cursor.read(READ_BUDGET)
        for item in items:
            if item is ROTATED:
                self._flush()
                self.send_json({"type": "rotated"})
            else:
                self._batch.append(item)
                self._batch_bytes += len(item) + 4
                if len(self._batch) >= FRAME_LINES or self._batch_bytes >= FRAME_BYTES:
                    self._flush()
        if items and self._more is None:
            self._more = self.factory.clock.callLater(0, self._pump)
        if self._batch and self._timer is None:
            self._timer = self.factory.clock.callLater(BATCH_WINDOW, self._flush)

    def _flush(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        if self._batch and self.live:
            lines, self._batch, self._batch_bytes = self._batch, [], 0
            self.send_json({"type": "lines", "lines": lines, "count": len(lines)})

    def stream_resumed(self) -> None:
        self._pump()

    def ended(self) -> None:
        for call in (self._timer, self._more):
            if call is not None and call.active():
                call.cancel()
        self._timer = self._more = None
        self._batch = []
        if self._following:
            self._following = False
            self.factory.tails.unfollow(self)


class EchoProtocol(StreamProtocol):
    """``/ws/echo``: every message back as it came, for conformance suites (``--echo``).

    Everything but ``onMessage`` is the shared protocol: the same settings,
    connection cap, idle timeout and shutdown. While the client does not read
    the echoes, the echo stops reading from it, so memory stays bounded.
    """

    endpoint = ECHO

    def onMessage(self, payload: bytes, isBinary: bool) -> None:  # noqa: N802 (Autobahn API)
        self._touch()
        if self.live:
            self.sendMessage(payload, isBinary)

    def stream_paused(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:  # noqa: N802 (Twisted API)
        self.transport.resumeProducing()
        super().resumeProducing()


class StreamResource(WebSocketResource):
    """A stream endpoint: JSON 400 for a plain GET, 503 over the connection cap."""

    def __init__(self, factory: StreamFactory) -> None:
        super().__init__(factory)
        self._streams = factory.streams

    def render(self, request: Any) -> Any:
        if [p for p in request.postpath if p]:
            return JSONError(404, "no such stream").render(request)
        upgrade = (request.getHeader(b"upgrade") or b"").lower()
        if upgrade != b"websocket":
            return JSONError(400, "this is a WebSocket endpoint: send an Upgrade request").render(
                request
            )
        if not self._streams.admit():
            return JSONError(503, "too many stream connections").render(request)
        return super().render(request)


class _Branch(Resource):
    """A path segment of the stream tree; anything unknown under it is a JSON 404."""

    def __init__(self, render_as: Resource | None = None) -> None:
        super().__init__()
        self._render_as = render_as

    def getChild(self, path: bytes, request: Any) -> Resource:  # noqa: N802 (Twisted API)
        if path == b"" and self._render_as is not None and not request.postpath:
            return self._render_as
        return JSONError(404, "no such stream")

    def render(self, request: Any) -> Any:
        if self._render_as is None:
            return JSONError(404, "no such stream").render(request)
        return self._render_as.render(request)


class _InstanceLogs(Resource):
    """``/ws/instances/NAME``: only its ``logs`` child exists."""

    def __init__(self, logs: Resource) -> None:
        super().__init__()
        self._logs = logs

    def getChild(self, path: bytes, request: Any) -> Resource:  # noqa: N802 (Twisted API)
        return self._logs if path == b"logs" else JSONError(404, "no such stream")

    def render(self, request: Any) -> bytes:
        return JSONError(404, "no such stream").render(request)


class _Instances(_Branch):
    """``/ws/instances`` itself, and ``/ws/instances/NAME/logs`` below it."""

    def __init__(self, instances: Resource, logs: Resource) -> None:
        super().__init__(instances)
        self._logs = logs

    def getChild(self, path: bytes, request: Any) -> Resource:  # noqa: N802 (Twisted API)
        if path == b"":
            return super().getChild(path, request)
        return _InstanceLogs(self._logs)


def build_streams(
    streams: Streams,
    registry: Any,
    instances_hub: Any,
    messaging: Any,
    messages_hub: Any,
    logs: Any,
    tails: Any,
    echo: bool = False,
) -> Resource:
    """The ``/ws/`` resource tree; ``/ws/echo`` only when ``echo`` is set."""
    instances = StreamResource(
        StreamFactory(InstancesProtocol, streams, registry=registry, hub=instances_hub)
    )
    logs_resource = StreamResource(
        StreamFactory(LogsProtocol, streams, registry=registry, logs=logs, tails=tails)
    )
    messages = StreamResource(
        StreamFactory(MessagesProtocol, streams, messaging=messaging, hub=messages_hub)
    )
    root = _Branch()
    root.putChild(b"instances", _Instances(instances, logs_resource))
    root.putChild(b"messages", _Branch(messages))
    if echo:
        root.putChild(b"echo", _Branch(StreamResource(StreamFactory(EchoProtocol, streams))))
    return root
