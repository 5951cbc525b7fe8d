"""The wire protocol of the streams under ``/ws/``, and the protocol every stream shares.

The contract
    On ``/ws/instances`` and ``/ws/messages`` every event the client's filter
    accepts arrives once, in ``seq`` order -- or the client receives a
    ``snapshot`` with ``"resync": true`` and a ``reason``, after which deltas
    continue from that snapshot's ``seq``. There is no third outcome: not for a
    paused client, not for a reading client hit by any burst, not after any
    number of lags. ``seq`` is the id of the event's row in an append-only table
    (``instance_events``, ``message_events``), so it survives restarts; with a
    filter it has gaps by design. ``epoch`` names the database. A log viewer
    receives every line written to the log exactly once, in order, across
    rotations, the size cap and any distance behind -- or an explicit ``gap``.

Wire protocol (JSON text frames, each with a ``type``):

``/ws/instances[?since=S&epoch=E]``
    server: ``snapshot {instances, include_archived, seq, epoch[, resync, reason]}``
    first, then ``status_changed {name, id, status, pid, started_at[, exit]}``,
    ``instance_created {name, id, port, status[, cloned_from]}``,
    ``instance_archived {name, id}``, ``instance_unarchived {name, id, port,
    status}``, ``instance_deleted {name, id}``, each with ``seq`` and
    ``timestamp``. client: ``set_include_archived {value}`` (answered by a snapshot).
``/ws/messages?instance=&correlation_id=[&since=S&epoch=E]``
    server: ``snapshot {recent_events, seq, epoch[, resync, reason]}`` (the last
    100 matching events, oldest first), then ``message_event {message_id, event,
    from, to, message_type, correlation_id, detail, seq, timestamp}``. Never a payload.
Resuming either (``since``/``epoch``)
    when ``E`` is this database's epoch and every event after ``S`` is retained,
    the first frame is ``resumed {since, seq, epoch}``, then the missed events the
    filter accepts (with their own ``seq`` and ``timestamp``), then live ones, no
    duplicate and no gap at the seam. Otherwise a ``snapshot`` with ``resync``
    and ``reason`` ``epoch``, ``expired`` (pruned, or too many to replay) or
    ``future``. A ``since`` that is not an integer: ``error bad_request``, close 4400.
``/ws/instances/NAME/logs?backlog=N`` or ``?cursor=C``
    server: ``backlog {lines, count, cursor}`` (N default 100, clamped to 1000),
    then ``lines {lines, count, cursor}`` in 100 ms batches, ``rotated`` when the
    file rotates (by rename, or by the size cap), and ``gap {reason, lost_bytes}``
    (then ``rotated``) when bytes the viewer had not read are gone. A frame's
    ``cursor`` is the position right after its last line; ``?cursor=C`` resumes
    right after it, across rotated files still on disk, with ``backlog {lines: [],
    resumed: true}``, or ``backlog {..., resumed: false, gap: true}`` and the
    normal tail when C is no longer on disk. Unknown NAME: ``error
    instance_not_found`` then close 4404; a bad N or a cursor that is not ours:
    ``error bad_request`` then close 4400.
``/ws/echo`` (only with ``--echo``: a test aid for conformance suites)
    every text or binary message is sent back as it came; no JSON, no ``ping``.
Every stream
    client ``ping`` -> server ``pong``. Any inbound frame resets the idle timer;
    silence for ``--idle-timeout`` closes with 1001 ``idle timeout``; shutdown
    closes with 1001 ``server shutdown``. A binary, non-JSON or unknown frame
    gets ``error invalid_frame`` and close 1008; a client message over 64 KiB
    closes with 1009. No data frame follows the server's Close frame.

Each connection is a streaming producer on its transport: it writes only
while the transport is not paused, so a client that stops reading costs a
bounded amount of memory (see :mod:`cpstream.domain.hub` and
:mod:`cpstream.domain.logtail`). The endpoints' protocols live beside this
module: :mod:`.hubstreams` (instances, messages), :mod:`.logstream`, :mod:`.echo`.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import PreparedMessage
from twisted.logger import Logger

from cpstream.domain import frames
from cpstream.domain.hub import Event, encode
from cpstream.streams import wire
from cpstream.streams.connections import Streams
from cpstream.streams.settings import prepare_frame

STUCK_TIMEOUT = 60.0


def _socket_of(transport: Any) -> socket.socket | None:
    """The TCP socket under a transport (through TLS, whose handle is not a socket)."""
    for _ in range(4):
        handle = getattr(transport, "socket", None)
        if isinstance(handle, socket.socket):
            return handle
        transport = getattr(transport, "transport", None)
        if transport is None:
            return None
    return None


class ClockTimer:
    """Autobahn's timer interface (``txaio.IBatchedTimer``) on the injected clock.

    Autobahn's factory builds its own on txaio's global loop; ours replaces it,
    so the opening and closing handshake timeouts run on the injected reactor
    (``tests/test_stream_protocols.py`` checks that they do).
    """

    def __init__(self, clock: Any) -> None:
        self._clock = clock

    def call_later(self, delay: float, fun: Any, *args: Any, **kwargs: Any) -> Any:
        return self._clock.callLater(delay, fun, *args, **kwargs)


class StreamFactory(WebSocketServerFactory):
    """The base of every stream's factory: the connection bookkeeping and the settings.

    Each endpoint's factory subclasses it with the collaborators its protocol
    needs, as typed attributes.
    """

    protocol: type[StreamProtocol]

    def __init__(self, streams: Streams) -> None:
        super().__init__(server=streams.settings.server, reactor=streams.clock)
        self._batched_timer = ClockTimer(streams.clock)
        self.streams = streams
        self.clock = streams.clock
        streams.settings.apply(self, self.protocol.endpoint)


class StreamProtocol(WebSocketServerProtocol):
    """The shared protocol: producer registration, ping/pong, idle timeout, errors."""

    _log = Logger()
    endpoint = ""
    commands: tuple[str, ...] = ()
    factory: StreamFactory

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
        sock = _socket_of(self.transport)
        if sock is not None:
            size = self.factory.streams.settings.send_buffer
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)

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
            self.send_json(frames.pong())

    # -- outbound ----------------------------------------------------------------

    def write_frames(self, prepared: Sequence[PreparedMessage]) -> None:
        """The one write path: prepared frames in order, in one write when uncompressed.

        Nothing is written once the connection is no longer open: after our Close
        frame, no data frame may follow (RFC 6455 5.5.1).
        """
        if self.state != self.STATE_OPEN:
            return
        if self._perMessageCompress is None:
            if len(prepared) == 1:
                wire.send(self.transport, prepared[0].payloadHybi)
            else:
                wire.send(self.transport, b"".join(f.payloadHybi for f in prepared))
        else:
            for frame in prepared:
                self.sendPreparedMessage(frame)

    def send_json(self, frame: Event) -> None:
        """Send one frame of our own."""
        self.write_own((prepare_frame(encode(frame)),))

    def write_own(self, prepared: Sequence[PreparedMessage]) -> None:
        """Write frames this connection made itself (not a hub's), counted per endpoint."""
        if self.state == self.STATE_OPEN:
            self.factory.streams.sent(self.endpoint, prepared)
        self.write_frames(prepared)

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
        self.send_json(frames.error(code, message))
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
            self.send_json(frames.pong())
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
        self.abort(f"read nothing for {STUCK_TIMEOUT:g}s")

    def abort(self, why: str) -> None:
        """Drop the connection now, once: through Autobahn, so its own timers know (a second
        abort of a TLS transport raises)."""
        if self.transport is None or self.state == self.STATE_CLOSED:
            return
        self.wasClean = False
        self.wasNotCleanReason = why
        self.dropConnection(abort=True)
