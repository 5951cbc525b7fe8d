"""Following a stream under ``/ws/`` across dropped connections and daemon restarts.

The same rules as the dashboard's (``web/static/js/live.js``): reconnect after
a jittered backoff (1, 2, 4, 8, 16, then 30 s; half to all of each step), start
over at the first step once a frame arrives, and give up only when the server
says the request itself is wrong (close 1008, 4400, 4404, or an upgrade refused
with 401, 403 or 404). Where to resume is a :class:`Resume`: ``since``/``epoch``
on ``/ws/instances`` and ``/ws/messages``, ``cursor`` on a log.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateResponseAccept
from twisted.internet import defer, task

from cpstream.cli.client import USER_AGENT, Client, reason_of

BACKOFF_STEPS = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
TERMINAL_CLOSE_CODES = frozenset({1008, 4400, 4404})
TERMINAL_HTTP_CODES = frozenset({400, 401, 403, 404})
CONNECT_TIMEOUT = 10  # TCP connect
OPEN_HANDSHAKE_TIMEOUT = 10.0  # from TCP up to the 101
CLOSE_HANDSHAKE_TIMEOUT = 2.0
# WebSocket pings keep the daemon's idle timeout (90 s by default) from closing a quiet
# stream, and find a dead peer: no pong within PING_TIMEOUT drops the connection.
PING_EVERY = 20.0
PING_TIMEOUT = 20.0


def backoff_delay(failures: int, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after the ``failures``-th consecutive failure (1-based), jittered."""
    if failures < 1:
        raise ValueError(f"failures must be at least 1, not {failures}")
    base = BACKOFF_STEPS[min(failures, len(BACKOFF_STEPS)) - 1]
    return base * (0.5 + rand() * 0.5)


class Resume:
    """Where a stream resumes after a reconnect (``Resume`` in live.js).

    ``seq`` streams remember the seq and epoch of a ``snapshot`` or ``resumed``
    frame and the seq of each delta after it; ``cursor`` streams (logs) the last
    ``cursor``.
    """

    def __init__(self, kind: str) -> None:
        if kind not in ("seq", "cursor"):
            raise ValueError(f"unknown resume kind {kind!r}")
        self.kind = kind
        self.reset()

    def reset(self) -> None:
        self.seq: int | None = None
        self.epoch: str | None = None
        self.cursor: str | None = None

    def see(self, frame: dict[str, Any]) -> None:
        """Note what a server frame says about the position."""
        if self.kind == "cursor":
            if isinstance(frame.get("cursor"), str):
                self.cursor = frame["cursor"]
            return
        seq = frame.get("seq")
        seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
        if frame.get("type") in ("snapshot", "resumed"):
            self.epoch = frame.get("epoch")
            self.seq = seq
        elif seq is not None and self.seq is not None:
            self.seq = max(self.seq, seq)

    def params(self) -> dict[str, Any]:
        """The query parameters that resume from here (none without a position)."""
        if self.kind == "cursor":
            return {} if self.cursor is None else {"cursor": self.cursor}
        if self.seq is None or self.epoch is None:
            return {}
        return {"since": self.seq, "epoch": self.epoch}


class StreamRefused(Exception):
    """The server refused the stream for good (a bad request, an unknown instance, the
    credentials): reconnecting cannot help (exit 1)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message


class Outcome:
    """How one connection ended."""

    def __init__(self) -> None:
        self.opened = False
        self.close_code: int | None = None
        self.reason = ""
        self.http_code: int | None = None
        self.error: str | None = None

    @property
    def terminal(self) -> bool:
        return self.close_code in TERMINAL_CLOSE_CODES or self.http_code in TERMINAL_HTTP_CODES

    def describe(self) -> str:
        if self.http_code is not None:
            return f"the upgrade was refused: {self.http_code} {self.error or self.reason}"
        if not self.opened:
            return self.reason or "could not connect"
        if self.close_code not in (None, 1006):
            detail = f"{self.close_code} {self.reason}".strip()
            return f"closed by the server ({detail})"
        return "connection lost"


class _Protocol(WebSocketClientProtocol):
    factory: _Factory

    def onOpen(self) -> None:  # noqa: N802 (Autobahn API)
        self.factory.outcome.opened = True
        self.factory.follower._opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:  # noqa: N802 (Autobahn API)
        if isBinary:
            return
        try:
            frame = json.loads(payload)
        except ValueError:
            return
        if isinstance(frame, dict):
            self.factory.follower._frame(frame)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:  # noqa: N802
        outcome = self.factory.outcome
        if outcome.opened:
            outcome.close_code = self.remoteCloseCode if self.remoteCloseCode else code
            outcome.reason = self.remoteCloseReason or reason or ""
        else:
            outcome.reason = reason or ""
            self._refusal(outcome)
        self.factory.ended(outcome)

    def _refusal(self, outcome: Outcome) -> None:
        """The HTTP status and JSON error of a refused upgrade, when there was an answer."""
        status_line = getattr(self, "http_status_line", None)
        parts = status_line.split() if isinstance(status_line, str) else []
        if len(parts) < 2 or not parts[1].isdigit() or parts[1] == "101":
            return
        outcome.http_code = int(parts[1])
        outcome.reason = " ".join(parts[2:])
        _, _, body = (getattr(self, "data", b"") or b"").partition(b"\r\n\r\n")
        try:
            answer = json.loads(body)
        except ValueError:
            return
        if isinstance(answer, dict) and isinstance(answer.get("error"), str):
            outcome.error = answer["error"]


class _Factory(WebSocketClientFactory):
    protocol = _Protocol

    def __init__(self, follower: Follower, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.follower = follower
        self.outcome = Outcome()
        self.done: defer.Deferred[Outcome] = defer.Deferred()

    def ended(self, outcome: Outcome) -> None:
        if not self.done.called:
            self.done.callback(outcome)

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:  # noqa: N802
        self.outcome.reason = reason_of(reason.value)
        self.ended(self.outcome)


class Follower:
    """One stream, followed until the server refuses it for good (or the program stops).

    ``on_frame`` gets every frame but ``pong`` and ``error``; ``on_open`` the protocol
    when a connection opens (to send a command); ``notice`` one-line reports about
    the connection (lost, reconnecting, connected).
    """

    def __init__(
        self,
        reactor: Any,
        client: Client,
        path: str,
        params: dict[str, Any],
        resume: Resume,
        on_frame: Callable[[dict[str, Any]], None],
        notice: Callable[[str], None],
        on_open: Callable[[Any], None] | None = None,
        compress: bool = False,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.reactor = reactor
        self.client = client
        self.path = path
        self.params = params
        self.resume = resume
        self.on_frame = on_frame
        self.notice = notice
        self.on_open = on_open
        self.compress = compress
        self.rand = rand
        self.failures = 0
        self.connections = 0
        self.stopping = False
        self._error: dict[str, Any] | None = None
        reactor.addSystemEventTrigger("before", "shutdown", self._stop)

    def _stop(self) -> None:
        """The program is ending (Ctrl-C): the connection about to drop is no news."""
        self.stopping = True

    def url(self) -> str:
        """The stream's URL with the resume parameters, when there is a position."""
        return self.client.stream_url(self.path, {**self.params, **self.resume.params()})

    async def run(self) -> None:
        """Connect, follow, reconnect until the program ends; :class:`StreamRefused` when
        the server refuses the stream for good."""
        while True:
            outcome = await self._connect()
            if self.stopping:
                return
            if outcome.terminal:
                raise self._refused(outcome)
            self.failures += 1
            delay = backoff_delay(self.failures, self.rand)
            self.notice(f"{outcome.describe()}; reconnecting in {delay:.1f} s")
            await task.deferLater(self.reactor, delay, lambda: None)

    def _refused(self, outcome: Outcome) -> StreamRefused:
        if outcome.http_code is not None:
            return StreamRefused(outcome.http_code, outcome.error or outcome.reason)
        message = self._error.get("message") if self._error else None
        return StreamRefused(outcome.close_code or 0, str(message or outcome.reason))

    def _connect(self) -> defer.Deferred[Outcome]:
        self._error = None
        factory = _Factory(
            self,
            self.url(),
            headers=self.client.headers(),
            useragent=USER_AGENT,
            reactor=self.reactor,
        )
        factory.setProtocolOptions(
            openHandshakeTimeout=OPEN_HANDSHAKE_TIMEOUT,
            closeHandshakeTimeout=CLOSE_HANDSHAKE_TIMEOUT,
            autoPingInterval=PING_EVERY,
            autoPingTimeout=PING_TIMEOUT,
        )
        if self.compress:
            factory.setProtocolOptions(
                perMessageCompressionOffers=[PerMessageDeflateOffer()],
                perMessageCompressionAccept=PerMessageDeflateResponseAccept,
            )
        if factory.isSecure:
            from twisted.internet import ssl

            self.reactor.connectSSL(
                factory.host,
                factory.port,
                factory,
                ssl.optionsForClientTLS(factory.host),
                timeout=CONNECT_TIMEOUT,
            )
        else:
            self.reactor.connectTCP(factory.host, factory.port, factory, timeout=CONNECT_TIMEOUT)
        return factory.done

    def _opened(self, protocol: Any) -> None:
        self.connections += 1
        where = self.client.stream_url(self.path, self.params)
        if self.connections == 1:
            self.notice(f"connected to {where}")
        elif self.resume.params():
            self.notice(f"reconnected to {where}, resuming")
        else:
            self.notice(f"reconnected to {where}")
        if self.on_open is not None:
            self.on_open(protocol)

    def _frame(self, frame: dict[str, Any]) -> None:
        self.failures = 0
        kind = frame.get("type")
        if kind == "pong":
            return
        if kind == "error":
            self._error = frame
            return
        self.on_frame(frame)
        self.resume.see(frame)


def send_frame(protocol: Any, frame: dict[str, Any]) -> None:
    """Send one JSON command on an open stream."""
    protocol.sendMessage(json.dumps(frame).encode())
