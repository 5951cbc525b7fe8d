"""The SQLite registry: one WAL-mode file, schema versions, and the queries.

Every function here is short and synchronous (it runs on the reactor thread);
callers pass ``now`` as an ISO 8601 string so that tests control time.
Constraints that matter (unique active names and ports, append-only message
events) are enforced by the database itself, not only by Python checks.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Each entry upgrades the schema by one version; never edit a released entry.
MIGRATIONS: list[str] = [
    # 1: instances
    """
    CREATE TABLE instances (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        port        INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
        command     TEXT NOT NULL,
        env         TEXT NOT NULL DEFAULT '{}',
        health      TEXT NOT NULL CHECK (health IN ('http', 'process')),
        restart     TEXT NOT NULL CHECK (restart IN ('on-failure', 'never')),
        status      TEXT NOT NULL,
        pid         INTEGER,
        created_at  TEXT NOT NULL,
        started_at  TEXT,
        archived_at TEXT
    );
    CREATE UNIQUE INDEX instances_active_name ON instances(name) WHERE archived_at IS NULL;
    CREATE UNIQUE INDEX instances_active_port ON instances(port) WHERE archived_at IS NULL;
    """,
]


class Conflict(Exception):
    """A write broke a uniqueness rule the database enforces."""


class Store:
    """The control plane's SQLite file; open with :meth:`open`."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self.path = path

    @classmethod
    def open(cls, path: Path) -> Store:
        """Open (creating if needed) the database at ``path`` and migrate it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=2000")
        store = cls(db, path)
        store._migrate()
        return store

    def close(self) -> None:
        """Checkpoint the WAL and close the file."""
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._db.close()

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        version = self.schema_version
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with self.transaction() as db:
                for statement in _statements(script):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version={number}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run the block in one immediate transaction; roll back on any error."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")

    # -- instances ---------------------------------------------------------

    def load_instances(self) -> list[dict[str, Any]]:
        """Every instance row, archived ones included, oldest first."""
        rows = self._db.execute("SELECT * FROM instances ORDER BY created_at, rowid")
        return [_instance_row(row) for row in rows]

    def insert_instance(self, record: dict[str, Any]) -> None:
        """Insert a new instance row; :class:`Conflict` if its name or port is taken."""
        row = dict(record, command=json.dumps(record["command"]), env=json.dumps(record["env"]))
        columns = ", ".join(row)
        marks = ", ".join(f":{key}" for key in row)
        with _conflicts():
            self._db.execute(f"INSERT INTO instances ({columns}) VALUES ({marks})", row)

    def update_instance(self, instance_id: str, **fields: Any) -> None:
        """Change some columns of one instance; :class:`Conflict` on a taken name or port."""
        assignments = ", ".join(f"{key} = :{key}" for key in fields)
        with _conflicts():
            self._db.execute(
                f"UPDATE instances SET {assignments} WHERE id = :_id", dict(fields, _id=instance_id)
            )

    def delete_instance(self, instance_id: str) -> None:
        """Remove one instance row for good."""
        self._db.execute("DELETE FROM instances WHERE id = ?", (instance_id,))


def _instance_row(row: sqlite3.Row) -> dict[str, Any]:
    record = dict(row)
    record["command"] = json.loads(record["command"])
    record["env"] = json.loads(record["env"])
    return record


@contextmanager
def _conflicts() -> Iterator[None]:
    try:
        yield
    except sqlite3.IntegrityError as e:
        message = str(e)
        if "instances.name" in message:
            raise Conflict("name") from e
        if "instances.port" in message:
            raise Conflict("port") from e
        raise


def _statements(script: str) -> list[str]:
    """Split a migration script into complete statements (triggers included)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements
