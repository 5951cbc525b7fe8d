"""``/ws/instances/NAME/logs``: a backlog, then new complete lines in 100 ms batches."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from cpstream.domain import frames
from cpstream.domain.instances import UnknownInstance
from cpstream.domain.logfiles import LogFiles
from cpstream.domain.logtail import ROTATED, BadCursor, Cursor, LogTails
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
        self.resume_from: str | None = None

    def parse(self, request: Any) -> None:
        parts = request.path.strip("/").split("/")
        self.name = unquote(parts[2]) if len(parts) == 4 else ""
        self.resume_from = query(request, "cursor")
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
        path = self.factory.logs.path(instance)
        tails = self.factory.tails
        resumed = None
        if self.resume_from is not None:
            try:
                self._cursor = tails.resume(path, self, self._pump, self.resume_from)
            except BadCursor as e:
                self.send_error("bad_request", e.message, 4400)
                return
            resumed = self._cursor is not None
        if self._cursor is None:
            lines, self._cursor = tails.follow(path, self, self._pump, self.backlog)
        else:
            lines = []
        self._following = True
        self.send_json(frames.backlog(lines, tails.token(self._cursor.position()), resumed))
        self._pump()

    def _pump(self) -> None:
        """Read what is new (only while the client keeps up) into the pending batch.

        A batch's frame carries the cursor right after its last line, so a batch
        that would overflow a frame is sent first, with the position before this read.
        """
        self._more = None
        if self.paused or not self.live or not self._following:
            return
        assert self._cursor is not None
        before = self._cursor.position()
        items = self._cursor.read(READ_BUDGET, FRAME_LINES)
        new = [item for item in items if isinstance(item, str)]
        size = sum(len(line) + 4 for line in new)
        if self._batch and (
            len(self._batch) + len(new) > FRAME_LINES or self._batch_bytes + size > FRAME_BYTES
        ):
            self._flush(before)
        self._batch += new
        self._batch_bytes += size
        markers = [item for item in items if not isinstance(item, str)]
        if markers or len(self._batch) >= FRAME_LINES or self._batch_bytes >= FRAME_BYTES:
            self._flush()
        for marker in markers:
            if marker is ROTATED:
                self.send_json(frames.rotated())
            else:
                self.send_json(frames.gap(marker.reason, marker.lost_bytes))
        if items and self._more is None:
            self._more = self.factory.clock.callLater(0, self._pump)
        if self._batch and self._timer is None:
            self._timer = self.factory.clock.callLater(BATCH_WINDOW, self._flush)

    def _flush(self, position: tuple[int, int, bytes] | None = None) -> None:
        """Send the batch, with the cursor right after its last line (by default, now)."""
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        if self._batch and self.live:
            assert self._cursor is not None
            batch, self._batch, self._batch_bytes = self._batch, [], 0
            token = self.factory.tails.token(position or self._cursor.position())
            self.send_json(frames.lines(batch, token))

    def stream_resumed(self) -> None:
        self._pump()

    def log_removed(self) -> None:
        """The instance was deleted, its logs with it."""
        if self.live:
            self.send_error("instance_not_found", f"Instance '{self.name}' was deleted", 4404)

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
