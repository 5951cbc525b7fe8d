"""The SQLite store: schema, WAL, and constraints the database itself enforces."""

from __future__ import annotations

import sqlite3

import pytest

from cpstream.domain.schema import MIGRATIONS
from cpstream.domain.store import Store
from cpstream.domain.tables import DuplicateKey as Conflict


def record(name: str, port: int, archived_at: str | None = None, **extra: object) -> dict:
    return {
        "id": f"id-{name}-{port}-{archived_at}",
        "name": name,
        "port": port,
        "command": ["true"],
        "env": {},
        "health": "process",
        "restart": "never",
        "status": "stopped",
        "pid": None,
        "created_at": "2026-01-01T00:00:00.000000Z",
        "started_at": None,
        "archived_at": archived_at,
        **extra,
    }


def test_open_creates_schema_in_wal_mode(tmp_path):
    """A new file gets the latest schema version and WAL journaling."""
    store = Store.open(tmp_path / "cp.db")
    assert store.schema_version == len(MIGRATIONS)
    mode = sqlite3.connect(tmp_path / "cp.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    store.close()


def test_reopen_keeps_rows_and_does_not_migrate_again(tmp_path):
    """Reopening an existing file keeps its rows and its version."""
    store = Store.open(tmp_path / "cp.db")
    store.instances.insert(record("a", 18801))
    store.close()
    again = Store.open(tmp_path / "cp.db")
    assert [r["name"] for r in again.instances.load()] == ["a"]
    assert again.schema_version == len(MIGRATIONS)
    again.close()


def test_active_name_is_unique(tmp_path):
    """Two active instances cannot share a name."""
    store = Store.open(tmp_path / "cp.db")
    store.instances.insert(record("a", 18801))
    with pytest.raises(Conflict, match="name"):
        store.instances.insert(record("a", 18802))


def test_active_port_is_unique(tmp_path):
    """Two active instances cannot share a port."""
    store = Store.open(tmp_path / "cp.db")
    store.instances.insert(record("a", 18801))
    with pytest.raises(Conflict, match="port"):
        store.instances.insert(record("b", 18801))


def test_archived_rows_do_not_hold_names_or_ports(tmp_path):
    """An archived instance frees its name and port for a new active one."""
    store = Store.open(tmp_path / "cp.db")
    store.instances.insert(record("a", 18801, archived_at="2026-01-01T00:00:01.000000Z"))
    store.instances.insert(record("a", 18801))
    assert len(store.instances.load()) == 2


def test_unarchive_into_a_taken_name_is_refused(tmp_path):
    """Clearing archived_at on a row whose name is active again is a conflict."""
    store = Store.open(tmp_path / "cp.db")
    old = record("a", 18801, archived_at="2026-01-01T00:00:01.000000Z")
    store.instances.insert(old)
    store.instances.insert(record("a", 18802))
    with pytest.raises(Conflict, match="name"):
        store.instances.update(old["id"], archived_at=None)


def test_constraints_hold_for_raw_sql(tmp_path):
    """The uniqueness rules live in the database, not only in Python."""
    Store.open(tmp_path / "cp.db").instances.insert(record("a", 18801))
    raw = sqlite3.connect(tmp_path / "cp.db")
    with pytest.raises(sqlite3.IntegrityError):
        raw.execute(
            "INSERT INTO instances (id, name, port, command, env, health, restart, status,"
            " created_at) VALUES ('x', 'a', 18999, '[]', '{}', 'http', 'never', 'stopped', 'now')"
        )


def test_failed_transaction_leaves_no_rows(tmp_path):
    """An error inside a transaction rolls back everything it wrote."""
    store = Store.open(tmp_path / "cp.db")
    with pytest.raises(Conflict):
        with store.transaction():
            store.instances.insert(record("a", 18801))
            store.instances.insert(record("a", 18802))
    assert store.instances.load() == []


def test_a_transaction_inside_another_joins_it(tmp_path):
    """Nested transactions are one: an error anywhere rolls everything back."""
    store = Store.open(tmp_path / "cp.db")
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.instances.insert(record("a", 18801))
            with store.transaction():
                store.instances.insert(record("b", 18802))
            raise RuntimeError("undo both")
    assert store.instances.load() == []
    with store.transaction():
        with store.transaction():
            store.instances.insert(record("c", 18803))
    assert [r["name"] for r in store.instances.load()] == ["c"]
    store.close()


def test_ids_are_time_ordered_uuids():
    """New ids are valid version-7 UUIDs that sort by creation time (index-friendly)."""
    import uuid

    from cpstream.domain.ids import new_id

    ids = [new_id() for _ in range(2000)]
    assert all(uuid.UUID(i).version == 7 for i in ids) and len(set(ids)) == 2000
    assert [i[:13] for i in ids] == sorted(i[:13] for i in ids)
