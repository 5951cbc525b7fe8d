"""The SQLite file: one WAL-mode connection, schema versions, transactions.

Every query is short and synchronous (it runs on the reactor thread);
callers pass ``now`` as an ISO 8601 string so that tests control time. The
queries live in one class per group of tables (:mod:`cpstream.domain.tables`),
reached as ``store.meta``, ``store.instances``, ``store.instance_events``,
``store.rules`` and ``store.messages``.
Constraints that matter (unique active names and ports, append-only message
events) are enforced by the database itself, not only by Python checks.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cpstream.domain.schema import MIGRATIONS, statements
from cpstream.domain.tables import (
    InstanceEventRows,
    InstanceRows,
    MessageRows,
    MetaRows,
    RuleRows,
    SessionRows,
)


class Store:
    """The control plane's SQLite file; open with :meth:`open`."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        self.closed = False
        self._committed: list[Callable[[], None]] = []
        self._later: list[Callable[[], None]] = []
        self.meta = MetaRows(db)
        self.instances = InstanceRows(db)
        self.instance_events = InstanceEventRows(db)
        self.rules = RuleRows(db)
        self.messages = MessageRows(db)
        self.sessions = SessionRows(db)

    @classmethod
    def open(cls, path: Path, autocheckpoint: bool = True) -> Store:
        """Open (creating if needed) the database at ``path`` and migrate it; without
        ``autocheckpoint`` no COMMIT checkpoints (a :class:`Checkpointer` does, in a thread)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=2000")
        # Reads through a memory map and a larger page cache: fewer system calls per query.
        db.execute("PRAGMA mmap_size=268435456")
        db.execute("PRAGMA cache_size=-65536")
        if not autocheckpoint:
            db.execute("PRAGMA wal_autocheckpoint=0")
        store = cls(db, path)
        store.migrate()
        return store

    def close(self) -> None:
        """Checkpoint the WAL and close the file (once; closing again does nothing)."""
        if self.closed:
            return
        self.closed = True
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._db.close()

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self) -> None:
        """Apply every migration newer than the file's version, each in its own transaction."""
        version = self.schema_version
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with self.transaction() as db:
                for statement in statements(script):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version={number}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run the block in one immediate transaction; roll back on any error. Inside
        another transaction the block simply joins it (the outer one commits)."""
        if self._db.in_transaction:
            yield self._db
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            self._committed.clear()
            self._later.clear()
            raise
        self._db.execute("COMMIT")
        done, self._committed = self._committed, []
        later, self._later = self._later, []
        for callback in done + later:
            callback()

    def on_commit(self, callback: Callable[[], None], last: bool = False) -> None:
        """Run ``callback`` once the transaction under way commits (never if it rolls
        back), or now outside one: what a change publishes follows what it stored.
        ``last`` callbacks run after all the others (wake receivers only once every
        event of the transaction is published: a woken receiver's lease publishes more)."""
        if self._db.in_transaction:
            (self._later if last else self._committed).append(callback)
        else:
            callback()
