"""Every open stream connection: the connection cap, the idle sweep, shutdown."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from cpstream.domain.hub import wire_size
from cpstream.domain.meter import Meter
from cpstream.domain.ratelimit import Every
from cpstream.streams.settings import StreamSettings

if TYPE_CHECKING:
    from cpstream.streams.protocol import StreamProtocol

SHUTDOWN_WAIT = 2.0
CAP_LOG_EVERY = 10.0


class Streams:
    """Every open stream connection: the connection cap, the idle timeout, shutdown."""

    _log = Logger()

    def __init__(
        self,
        clock: Any,
        idle_timeout: float = 90.0,
        max_connections: int = 1024,
        settings: StreamSettings | None = None,
        meter: Meter | None = None,
    ) -> None:
        self.clock = clock
        self.meter = meter if meter is not None else Meter()
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.settings = settings or StreamSettings()
        self.connections: set[StreamProtocol] = set()
        self.accepting = True
        # why no stream may open yet (a gateway before its first load), or None
        self.not_ready: str | None = None
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

    def sent(self, endpoint: str, frames: Sequence[Any]) -> None:
        """Count frames a connection wrote itself (snapshots, replays, log batches...): the
        hubs count the frames they fan out, once per round."""
        self.meter.count(("stream_frames", endpoint), len(frames))
        self.meter.count(("stream_bytes", endpoint), sum(wire_size(f) for f in frames))

    def by_endpoint(self) -> dict[str, int]:
        """Open connections per endpoint."""
        counts: dict[str, int] = {}
        for connection in self.connections:
            counts[connection.endpoint] = counts.get(connection.endpoint, 0) + 1
        return counts

    def admit(self) -> bool:
        """Whether one more connection may open now; refusals are logged sparingly."""
        if self.not_ready is not None:
            return False
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
            connection.abort("no closing handshake before the server stopped")
