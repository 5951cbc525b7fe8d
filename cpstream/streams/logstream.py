"""``/ws/instances/NAME/logs``: a backlog, then new complete lines in 100 ms batches."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from cpstream.domain import frames
from cpstream.domain.instances import UnknownInstance
from cpstream.domain.logfiles import LogFiles
from cpstream.domain.logtail import ROTATED, Cursor, LogTails
from cpstream.domain.registry import Registry
from cpstream.streams.connections import Streams
from cpstream.streams.hubstreams import query
from cpstream.streams.protocol import StreamFactory, StreamProtocol
from cpstream.streams.settings import LOGS

BATCH_WINDOW = 0.1
DEFAULT_BACKLOG = 100
MAX_BACKLOG = 1000
FRAME_LINES = 2000
FRAME_BYTES = 512 * 1024
READ_BUDGET = 512 * 1024


class LogsProtocol(StreamProtocol):
    """A log viewer: reads its own cursor only while its transport is writable."""

    endpoint = LOGS
    factory: LogsFactory

    def __init__(self) -> None:
        super().__init__()
        self.name = ""
        self.backlog = DEFAULT_BACKLOG
        self._batch: list[str] = []
        self._batch_bytes = 0
        self._timer: Any = None
        self._more: Any = None
        self._following = False
        self._cursor: Cursor | None = None

    def parse(self, request: Any) -> None:
        parts = request.path.strip("/").split("/")
        self.name = unquote(parts[2]) if len(parts) == 4 else ""
        raw = query(request, "backlog")
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
        self.send_json(frames.backlog(lines))
        self._pump()

    def _pump(self) -> None:
        """Read what is new (only while the client keeps up) into the pending batch."""
        self._more = None
        if self.paused or not self.live or not self._following:
            return
        assert self._cursor is not None
        items = self._cursor.read(READ_BUDGET)
        for item in items:
            if item is ROTATED:
                self._flush()
                self.send_json(frames.rotated())
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
            batch, self._batch, self._batch_bytes = self._batch, [], 0
            self.send_json(frames.lines(batch))

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


class LogsFactory(StreamFactory):
    """The log stream's factory: where instances and their log files are, and the tailers."""

    protocol = LogsProtocol

    def __init__(
        self, streams: Streams, registry: Registry, logs: LogFiles, tails: LogTails
    ) -> None:
        super().__init__(streams)
        self.registry = registry
        self.logs = logs
        self.tails = tails
