"""The WAL checkpoint, moved off the reactor thread.

SQLite's automatic checkpoint runs inside whichever COMMIT takes the WAL past 1,000
pages, and fsyncs the database file there: measured on this machine, a 5–14 ms stall
of the reactor every few hundred events, during which every client's frame for that
event waits (the 1,000-viewer p99 tail of issue 14). The store's own connection turns
it off (``Store.open(autocheckpoint=False)``) and this service checkpoints from the
reactor's thread pool on a connection of its own: PASSIVE, which never makes the
writer wait. A WAL that still grows past ``cap`` pages (writes with no pause at all)
is checkpointed with TRUNCATE, which does make writers wait, so it stays bounded.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from twisted.application.internet import TimerService
from twisted.internet import defer, threads
from twisted.logger import Logger

INTERVAL = 1.0
CAP = 16_384  # pages: 64 MiB of WAL at SQLite's 4 KiB page


class Checkpointer(TimerService):
    """Checkpoints the database at ``path`` every ``interval`` seconds, in a pool thread."""

    log = Logger()

    def __init__(
        self, path: Path, reactor: Any, interval: float = INTERVAL, cap: int = CAP
    ) -> None:
        super().__init__(interval, self._tick)
        self.clock = reactor
        self._reactor = reactor
        self._path = path
        self._cap = cap
        self._db: sqlite3.Connection | None = None
        self.checkpoints = 0
        self.truncated = 0

    def _tick(self) -> defer.Deferred:
        """One checkpoint; the next tick waits for it (TimerService does)."""
        pool = self._reactor.getThreadPool()
        done = threads.deferToThreadPool(self._reactor, pool, self.checkpoint)
        done.addErrback(lambda failure: self.log.failure("WAL checkpoint failed", failure))
        return done

    def checkpoint(self) -> tuple[int, int, int]:
        """PASSIVE (TRUNCATE past the cap): SQLite's ``(busy, log pages, checkpointed)``.

        Runs in a pool thread; the sqlite3 module releases the GIL while SQLite works.
        """
        if self._db is None:
            self._db = sqlite3.connect(
                str(self._path), isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA busy_timeout=2000")
        result = tuple(self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone())
        self.checkpoints += 1
        if result[1] > self._cap:
            result = tuple(self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone())
            self.truncated += 1
        return result  # type: ignore[return-value]

    def stopService(self) -> defer.Deferred:  # noqa: N802 (Twisted API)
        """Stop ticking, wait for a checkpoint under way, then close the connection."""
        stopped = defer.maybeDeferred(super().stopService) if self.running else defer.succeed(None)
        stopped.addCallback(lambda _: self._close())
        return stopped

    def _close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()
