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


class MetaRows:
    """The ``meta`` table: the database's epoch, its secret, retention watermarks."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def get(self, key: str) -> str:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise KeyError(key)
        return str(row[0])

    def set(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )


def _last_id(db: sqlite3.Connection, table: str) -> int:
    """The last id an AUTOINCREMENT table handed out (never reused, even after deletes)."""
    row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
    return int(row[0]) if row else 0


@contextmanager
def pruning(db: sqlite3.Connection) -> Iterator[None]:
    """Inside a transaction: allow deletes from the append-only event logs for the block."""
    db.execute("INSERT INTO pruning (active) VALUES (1)")
    try:
        yield
    finally:
        db.execute("DELETE FROM pruning")


class InstanceEventRows:
    """The append-only ``instance_events`` table: every instance event, with its seq (id)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def append(
        self, instance_id: str, name: str, kind: str, data: dict[str, Any], timestamp: str
    ) -> int:
        cursor = self._db.execute(
            "INSERT INTO instance_events (instance_id, name, type, data, timestamp)"
            " VALUES (?, ?, ?, ?, ?)",
            (instance_id, name, kind, json.dumps(data, separators=(",", ":")), timestamp),
        )
        return int(cursor.lastrowid)

    def last_id(self) -> int:
        return _last_id(self._db, "instance_events")

    def after(self, since: int, limit: int) -> list[dict[str, Any]]:
        """Events with an id above ``since``, oldest first, at most ``limit``."""
        rows = self._db.execute(
            "SELECT * FROM instance_events WHERE id > ? ORDER BY id LIMIT ?", (since, limit)
        )
        return [_event_row(row) for row in rows]

    def of_instance(
        self, instance_id: str, limit: int, before: int | None = None
    ) -> list[dict[str, Any]]:
        """One instance's events, newest first, below ``before`` when given."""
        rows = self._db.execute(
            "SELECT * FROM instance_events WHERE instance_id = ? AND id < ?"
            " ORDER BY id DESC LIMIT ?",
            (instance_id, before if before is not None else 2**63 - 1, limit),
        )
        return [_event_row(row) for row in rows]

    def prune(self, cutoff: str, limit: int) -> int:
        """Delete up to ``limit`` events older than ``cutoff``; the highest id deleted (0: none)."""
        ids = [
            row[0]
            for row in self._db.execute(
                "SELECT id FROM instance_events WHERE timestamp < ? ORDER BY timestamp LIMIT ?",
                (cutoff, limit),
            )
        ]
        if not ids:
            return 0
        with pruning(self._db):
            self._db.executemany("DELETE FROM instance_events WHERE id = ?", [(i,) for i in ids])
        return max(ids)


def _event_row(row: sqlite3.Row) -> dict[str, Any]:
    record = dict(row)
    record["data"] = json.loads(record["data"])
    return record


class SessionRows:
    """The ``ended_sessions`` table: browser sessions ended by a logout before they expired."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def end(self, session_id: str, expires_at: str) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO ended_sessions (id, expires_at) VALUES (?, ?)",
            (session_id, expires_at),
        )

    def ended(self, session_id: str) -> bool:
        row = self._db.execute("SELECT 1 FROM ended_sessions WHERE id = ?", (session_id,))
        return row.fetchone() is not None

    def all(self) -> list[str]:
        """Every ended session's id (for gateways, which refuse them too)."""
        return [row[0] for row in self._db.execute("SELECT id FROM ended_sessions")]

    def prune(self, now: str) -> None:
        """Forget ended sessions that would have expired anyway."""
        self._db.execute("DELETE FROM ended_sessions WHERE expires_at < ?", (now,))


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
        row = _encoded(record)
        columns = ", ".join(row)
        marks = ", ".join(f":{key}" for key in row)
        with _duplicates():
            self._db.execute(f"INSERT INTO instances ({columns}) VALUES ({marks})", row)

    def update(self, instance_id: str, **fields: Any) -> None:
        """Change some columns of one instance; :class:`DuplicateKey` on a taken name or port."""
        assignments = ", ".join(f"{key} = :{key}" for key in fields)
        with _duplicates():
            self._db.execute(
                f"UPDATE instances SET {assignments} WHERE id = :_id",
                dict(_encoded(fields), _id=instance_id),
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

    def oldest_queued(self, to_instance: str, count: int = 1) -> list[dict[str, Any]]:
        """The next ``count`` messages of an inbox, oldest first."""
        rows = self._db.execute(
            "SELECT * FROM messages WHERE to_instance = ? AND status = 'queued'"
            " ORDER BY created_at, rowid LIMIT ?",
            (to_instance, count),
        )
        return [_message_row(row) for row in rows]

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

    def count_by_status(self) -> dict[str, int]:
        """How many messages are in each status present (one pass over an index)."""
        rows = self._db.execute("SELECT status, count(*) FROM messages GROUP BY status")
        return {status: count for status, count in rows}

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

    def append_event(
        self, message: dict[str, Any], event: str, detail: str | None, now: str
    ) -> int:
        """Log one transition of ``message``, with its routing; its id is the event's seq."""
        cursor = self._db.execute(
            "INSERT INTO message_events (message_id, event, detail, timestamp, from_instance,"
            " to_instance, message_type, correlation_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                message["id"],
                event,
                detail,
                now,
                message["from_instance"],
                message["to_instance"],
                message["message_type"],
                message["correlation_id"],
            ),
        )
        return int(cursor.lastrowid)

    def last_event_id(self) -> int:
        return _last_id(self._db, "message_events")

    def events_after(self, since: int, limit: int) -> list[dict[str, Any]]:
        """Events with an id above ``since``, oldest first, at most ``limit``."""
        rows = self._db.execute(
            "SELECT * FROM message_events WHERE id > ? ORDER BY id LIMIT ?", (since, limit)
        )
        return [dict(row) for row in rows]

    def events_of(self, message_id: str) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT event, detail, timestamp FROM message_events WHERE message_id = ? ORDER BY id",
            (message_id,),
        )
        return [dict(row) for row in rows]

    def recent_events(
        self, instance: str | None, correlation_id: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """The last ``limit`` events matching the filters, oldest first; every filter is
        served by an index (``message_events_from``/``_to``/``_correlation``)."""
        columns = (
            "id, message_id, event, from_instance, to_instance, message_type,"
            " correlation_id, detail, timestamp"
        )
        if correlation_id is not None:
            where, args = "correlation_id = ?", [correlation_id]
            if instance is not None:
                where += " AND (from_instance = ? OR to_instance = ?)"
                args += [instance, instance]
            sql = f"SELECT {columns} FROM message_events WHERE {where} ORDER BY id DESC LIMIT ?"
            rows = self._db.execute(sql, (*args, limit))
        elif instance is not None:
            newest = "SELECT {c} FROM message_events WHERE {k} = ? ORDER BY id DESC LIMIT ?"
            sql = (
                f"SELECT * FROM ({newest.format(c=columns, k='from_instance')})"
                f" UNION SELECT * FROM ({newest.format(c=columns, k='to_instance')})"
                " ORDER BY id DESC LIMIT ?"
            )
            rows = self._db.execute(sql, (instance, limit, instance, limit, limit))
        else:
            sql = f"SELECT {columns} FROM message_events ORDER BY id DESC LIMIT ?"
            rows = self._db.execute(sql, (limit,))
        return [dict(row) for row in reversed(rows.fetchall())]

    def prune(self, cutoff: str, limit: int) -> int:
        """Delete up to ``limit`` terminal messages (acknowledged or dead) last changed
        before ``cutoff``, with their events and keys; the highest event id deleted."""
        ids = [
            row[0]
            for row in self._db.execute(
                "SELECT id FROM messages WHERE status IN ('acknowledged', 'dead_letter')"
                " AND updated_at < ? LIMIT ?",
                (cutoff, limit),
            )
        ]
        if not ids:
            return 0
        marks = ", ".join("?" * len(ids))
        row = self._db.execute(
            f"SELECT max(id) FROM message_events WHERE message_id IN ({marks})", ids
        ).fetchone()
        with pruning(self._db):
            self._db.execute(f"DELETE FROM message_events WHERE message_id IN ({marks})", ids)
            self._db.execute(f"DELETE FROM idempotency_keys WHERE message_id IN ({marks})", ids)
            self._db.execute(f"DELETE FROM messages WHERE id IN ({marks})", ids)
        return int(row[0] or 0)


def _message_row(row: sqlite3.Row, payload: bool = True) -> dict[str, Any]:
    record = dict(row)
    if payload:
        record["payload"] = json.loads(record["payload"])
    else:
        del record["payload"]
    return record


INSTANCE_JSON_COLUMNS = ("command", "env", "last_exit")


def _encoded(fields: dict[str, Any]) -> dict[str, Any]:
    """Instance columns as stored: the JSON ones as text (``None`` stays NULL)."""
    return {
        key: json.dumps(value) if key in INSTANCE_JSON_COLUMNS and value is not None else value
        for key, value in fields.items()
    }


def _instance_row(row: sqlite3.Row) -> dict[str, Any]:
    record = dict(row)
    for key in INSTANCE_JSON_COLUMNS:
        if record[key] is not None:
            record[key] = json.loads(record[key])
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
