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
    # 2: messaging
    """
    CREATE TABLE routing_rules (
        id            TEXT PRIMARY KEY,
        from_instance TEXT NOT NULL,
        to_instance   TEXT NOT NULL,
        type_pattern  TEXT NOT NULL,
        max_retries   INTEGER NOT NULL CHECK (max_retries >= 0),
        ttl_secs      INTEGER NOT NULL CHECK (ttl_secs > 0),
        created_at    TEXT NOT NULL,
        UNIQUE (from_instance, to_instance, type_pattern)
    );
    CREATE TABLE messages (
        id               TEXT PRIMARY KEY,
        from_instance    TEXT NOT NULL,
        to_instance      TEXT NOT NULL,
        message_type     TEXT NOT NULL,
        payload          TEXT NOT NULL,
        correlation_id   TEXT,
        idempotency_key  TEXT,
        hop_count        INTEGER NOT NULL CHECK (hop_count >= 0),
        status           TEXT NOT NULL CHECK (status IN ('queued', 'delivered',
                           'acknowledged', 'retry_scheduled', 'dead_letter')),
        attempts         INTEGER NOT NULL DEFAULT 0,
        max_retries      INTEGER NOT NULL,
        ttl_secs         INTEGER NOT NULL,
        created_at       TEXT NOT NULL,
        updated_at       TEXT NOT NULL,
        expires_at       TEXT NOT NULL,
        available_at     TEXT NOT NULL,
        lease_expires_at TEXT
    );
    CREATE INDEX messages_inbox ON messages(to_instance, status, created_at);
    CREATE INDEX messages_from ON messages(from_instance, created_at);
    CREATE INDEX messages_status ON messages(status, available_at);
    CREATE INDEX messages_correlation ON messages(correlation_id);
    CREATE TABLE idempotency_keys (
        from_instance TEXT NOT NULL,
        key           TEXT NOT NULL,
        message_id    TEXT NOT NULL REFERENCES messages(id),
        created_at    TEXT NOT NULL,
        PRIMARY KEY (from_instance, key)
    );
    CREATE TABLE message_events (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        message_id TEXT NOT NULL REFERENCES messages(id),
        event      TEXT NOT NULL,
        detail     TEXT,
        timestamp  TEXT NOT NULL
    );
    CREATE INDEX message_events_message ON message_events(message_id, id);
    CREATE TRIGGER message_events_no_update BEFORE UPDATE ON message_events
    BEGIN
        SELECT RAISE(ABORT, 'message_events is append-only');
    END;
    CREATE TRIGGER message_events_no_delete BEFORE DELETE ON message_events
    BEGIN
        SELECT RAISE(ABORT, 'message_events is append-only');
    END;
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

    # -- routing rules -------------------------------------------------------

    def insert_rule(self, rule: dict[str, Any]) -> None:
        """Add a routing rule; :class:`Conflict` if the same route already exists."""
        try:
            self._db.execute(
                "INSERT INTO routing_rules (id, from_instance, to_instance, type_pattern,"
                " max_retries, ttl_secs, created_at) VALUES (:id, :from_instance, :to_instance,"
                " :type_pattern, :max_retries, :ttl_secs, :created_at)",
                rule,
            )
        except sqlite3.IntegrityError as e:
            raise Conflict("rule") from e

    def rules(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT * FROM routing_rules ORDER BY created_at, rowid")
        return [dict(row) for row in rows]

    def routes(self, from_instance: str, to_instance: str) -> list[dict[str, Any]]:
        """Rules from one instance to another."""
        rows = self._db.execute(
            "SELECT * FROM routing_rules WHERE from_instance = ? AND to_instance = ?",
            (from_instance, to_instance),
        )
        return [dict(row) for row in rows]

    def delete_rule(self, rule_id: str) -> bool:
        cursor = self._db.execute("DELETE FROM routing_rules WHERE id = ?", (rule_id,))
        return cursor.rowcount > 0

    # -- messages --------------------------------------------------------------

    def insert_message(self, message: dict[str, Any]) -> None:
        row = dict(message, payload=json.dumps(message["payload"]))
        columns = ", ".join(row)
        marks = ", ".join(f":{key}" for key in row)
        self._db.execute(f"INSERT INTO messages ({columns}) VALUES ({marks})", row)

    def update_message(self, message_id: str, **fields: Any) -> None:
        assignments = ", ".join(f"{key} = :{key}" for key in fields)
        self._db.execute(
            f"UPDATE messages SET {assignments} WHERE id = :_id", dict(fields, _id=message_id)
        )

    def message(self, message_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
        return _message_row(row) if row else None

    def oldest_queued(self, to_instance: str) -> dict[str, Any] | None:
        """The next message for an inbox, oldest first."""
        row = self._db.execute(
            "SELECT * FROM messages WHERE to_instance = ? AND status = 'queued'"
            " ORDER BY created_at, rowid LIMIT 1",
            (to_instance,),
        ).fetchone()
        return _message_row(row) if row else None

    def messages_due(self, status: str, column: str, now: str, limit: int) -> list[dict[str, Any]]:
        """Messages in ``status`` whose ``column`` time has passed, oldest first."""
        assert column in ("available_at", "expires_at", "lease_expires_at"), column
        rows = self._db.execute(
            f"SELECT * FROM messages WHERE status = ? AND {column} <= ?"
            f" ORDER BY {column}, rowid LIMIT ?",
            (status, now, limit),
        )
        return [_message_row(row) for row in rows]

    def search_messages(
        self,
        instance: str | None = None,
        correlation_id: str | None = None,
        status: str | None = None,
        message_type: str | None = None,
        direction: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Messages matching every given filter, newest first, without payloads."""
        where, args = [], []
        if instance is not None:
            if direction == "in":
                where.append("to_instance = ?")
                args.append(instance)
            elif direction == "out":
                where.append("from_instance = ?")
                args.append(instance)
            else:
                where.append("(from_instance = ? OR to_instance = ?)")
                args += [instance, instance]
        for column, value in (
            ("correlation_id", correlation_id),
            ("status", status),
            ("message_type", message_type),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._db.execute(
            f"SELECT * FROM messages {clause} ORDER BY created_at DESC, rowid DESC LIMIT ?",
            (*args, limit),
        )
        return [_message_row(row, payload=False) for row in rows]

    def idempotent_message(self, from_instance: str, key: str, since: str) -> str | None:
        """The message id sent under this key by this sender since ``since``, if any."""
        row = self._db.execute(
            "SELECT message_id FROM idempotency_keys"
            " WHERE from_instance = ? AND key = ? AND created_at > ?",
            (from_instance, key, since),
        ).fetchone()
        return row[0] if row else None

    def remember_key(self, from_instance: str, key: str, message_id: str, now: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO idempotency_keys (from_instance, key, message_id, created_at)"
            " VALUES (?, ?, ?, ?)",
            (from_instance, key, message_id, now),
        )

    def append_event(self, message_id: str, event: str, detail: str | None, now: str) -> int:
        cursor = self._db.execute(
            "INSERT INTO message_events (message_id, event, detail, timestamp) VALUES (?, ?, ?, ?)",
            (message_id, event, detail, now),
        )
        return int(cursor.lastrowid)

    def events_of(self, message_id: str) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT event, detail, timestamp FROM message_events WHERE message_id = ? ORDER BY id",
            (message_id,),
        )
        return [dict(row) for row in rows]

    def recent_events(
        self, instance: str | None, correlation_id: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """The last ``limit`` events matching the filters, oldest first, with message metadata."""
        where, args = [], []
        if instance is not None:
            where.append("(m.from_instance = ? OR m.to_instance = ?)")
            args += [instance, instance]
        if correlation_id is not None:
            where.append("m.correlation_id = ?")
            args.append(correlation_id)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._db.execute(
            "SELECT e.message_id, e.event, m.from_instance, m.to_instance, m.message_type,"
            " m.correlation_id, e.detail, e.timestamp FROM message_events e"
            f" JOIN messages m ON m.id = e.message_id {clause} ORDER BY e.id DESC LIMIT ?",
            (*args, limit),
        )
        return [dict(row) for row in reversed(rows.fetchall())]


def _message_row(row: sqlite3.Row, payload: bool = True) -> dict[str, Any]:
    record = dict(row)
    if payload:
        record["payload"] = json.loads(record["payload"])
    else:
        del record["payload"]
    return record


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
