"""The queries, one class per group of tables: instances, routing rules, messages.

Each class holds the shared connection and nothing else; transactions are the
:class:`~cpstream.domain.store.Store`'s.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from cpstream.domain.errors import Conflict


class DuplicateKey(Conflict):
    """A write broke a uniqueness rule the database enforces; ``field`` says which."""

    def __init__(self, field: str) -> None:
        super().__init__(f"{field} is already taken")
        self.field = field


class InstanceRows:
    """The ``instances`` table."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def load(self) -> list[dict[str, Any]]:
        """Every instance row, archived ones included, oldest first."""
        rows = self._db.execute("SELECT * FROM instances ORDER BY created_at, rowid")
        return [_instance_row(row) for row in rows]

    def insert(self, record: dict[str, Any]) -> None:
        """Insert a new instance row; :class:`DuplicateKey` if its name or port is taken."""
        row = dict(record, command=json.dumps(record["command"]), env=json.dumps(record["env"]))
        columns = ", ".join(row)
        marks = ", ".join(f":{key}" for key in row)
        with _duplicates():
            self._db.execute(f"INSERT INTO instances ({columns}) VALUES ({marks})", row)

    def update(self, instance_id: str, **fields: Any) -> None:
        """Change some columns of one instance; :class:`DuplicateKey` on a taken name or port."""
        assignments = ", ".join(f"{key} = :{key}" for key in fields)
        with _duplicates():
            self._db.execute(
                f"UPDATE instances SET {assignments} WHERE id = :_id", dict(fields, _id=instance_id)
            )

    def delete(self, instance_id: str) -> None:
        """Remove one instance row for good."""
        self._db.execute("DELETE FROM instances WHERE id = ?", (instance_id,))


class RuleRows:
    """The ``routing_rules`` table."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def insert(self, rule: dict[str, Any]) -> None:
        """Add a routing rule; :class:`DuplicateKey` if the same route already exists."""
        try:
            self._db.execute(
                "INSERT INTO routing_rules (id, from_instance, to_instance, type_pattern,"
                " max_retries, ttl_secs, created_at) VALUES (:id, :from_instance, :to_instance,"
                " :type_pattern, :max_retries, :ttl_secs, :created_at)",
                rule,
            )
        except sqlite3.IntegrityError as e:
            raise DuplicateKey("rule") from e

    def all(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT * FROM routing_rules ORDER BY created_at, rowid")
        return [dict(row) for row in rows]

    def between(self, from_instance: str, to_instance: str) -> list[dict[str, Any]]:
        """Rules from one instance to another."""
        rows = self._db.execute(
            "SELECT * FROM routing_rules WHERE from_instance = ? AND to_instance = ?",
            (from_instance, to_instance),
        )
        return [dict(row) for row in rows]

    def delete(self, rule_id: str) -> bool:
        cursor = self._db.execute("DELETE FROM routing_rules WHERE id = ?", (rule_id,))
        return cursor.rowcount > 0


class MessageRows:
    """The ``messages`` table, its idempotency keys and its append-only event log."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def insert(self, message: dict[str, Any]) -> None:
        row = dict(message, payload=json.dumps(message["payload"]))
        columns = ", ".join(row)
        marks = ", ".join(f":{key}" for key in row)
        self._db.execute(f"INSERT INTO messages ({columns}) VALUES ({marks})", row)

    def update(self, message_id: str, **fields: Any) -> None:
        assignments = ", ".join(f"{key} = :{key}" for key in fields)
        self._db.execute(
            f"UPDATE messages SET {assignments} WHERE id = :_id", dict(fields, _id=message_id)
        )

    def get(self, message_id: str) -> dict[str, Any] | None:
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

    def due(self, status: str, column: str, now: str, limit: int) -> list[dict[str, Any]]:
        """Messages in ``status`` whose ``column`` time has passed, oldest first."""
        assert column in ("available_at", "expires_at", "lease_expires_at"), column
        rows = self._db.execute(
            f"SELECT * FROM messages WHERE status = ? AND {column} <= ?"
            f" ORDER BY {column}, rowid LIMIT ?",
            (status, now, limit),
        )
        return [_message_row(row) for row in rows]

    def search(
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

    def idempotent(self, from_instance: str, key: str, since: str) -> str | None:
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
def _duplicates() -> Iterator[None]:
    try:
        yield
    except sqlite3.IntegrityError as e:
        message = str(e)
        if "instances.name" in message:
            raise DuplicateKey("name") from e
        if "instances.port" in message:
            raise DuplicateKey("port") from e
        raise
