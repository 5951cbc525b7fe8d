"""The database schema: one migration per version, applied in order on open."""

from __future__ import annotations

import sqlite3

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
    # 3: stream integrity: the database's epoch and secret, instance history, message
    # events that carry their message's routing (so filtered reads use an index), and
    # retention (the only deletes the append-only logs allow happen while `pruning`
    # has a row, inside the pruner's transaction).
    """
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    INSERT INTO meta (key, value) VALUES
        ('epoch', lower(hex(randomblob(8)))),
        ('secret', lower(hex(randomblob(32)))),
        ('pruned:instance_events', '0'),
        ('pruned:message_events', '0');
    CREATE TABLE pruning (active INTEGER NOT NULL);
    CREATE TABLE instance_events (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        instance_id TEXT NOT NULL,
        name        TEXT NOT NULL,
        type        TEXT NOT NULL,
        data        TEXT NOT NULL DEFAULT '{}',
        timestamp   TEXT NOT NULL
    );
    CREATE INDEX instance_events_instance ON instance_events(instance_id, id);
    CREATE INDEX instance_events_time ON instance_events(timestamp);
    CREATE TRIGGER instance_events_no_update BEFORE UPDATE ON instance_events
    BEGIN
        SELECT RAISE(ABORT, 'instance_events is append-only');
    END;
    CREATE TRIGGER instance_events_no_delete BEFORE DELETE ON instance_events
    WHEN NOT EXISTS (SELECT 1 FROM pruning)
    BEGIN
        SELECT RAISE(ABORT, 'instance_events is append-only');
    END;
    DROP TRIGGER message_events_no_update;
    DROP TRIGGER message_events_no_delete;
    ALTER TABLE message_events ADD COLUMN from_instance TEXT;
    ALTER TABLE message_events ADD COLUMN to_instance TEXT;
    ALTER TABLE message_events ADD COLUMN message_type TEXT;
    ALTER TABLE message_events ADD COLUMN correlation_id TEXT;
    UPDATE message_events SET
        from_instance = (SELECT m.from_instance FROM messages m WHERE m.id = message_id),
        to_instance = (SELECT m.to_instance FROM messages m WHERE m.id = message_id),
        message_type = (SELECT m.message_type FROM messages m WHERE m.id = message_id),
        correlation_id = (SELECT m.correlation_id FROM messages m WHERE m.id = message_id);
    CREATE INDEX message_events_from ON message_events(from_instance, id);
    CREATE INDEX message_events_to ON message_events(to_instance, id);
    CREATE INDEX message_events_correlation ON message_events(correlation_id, id);
    CREATE INDEX messages_terminal ON messages(status, updated_at);
    CREATE TRIGGER message_events_no_update BEFORE UPDATE ON message_events
    BEGIN
        SELECT RAISE(ABORT, 'message_events is append-only');
    END;
    CREATE TRIGGER message_events_no_delete BEFORE DELETE ON message_events
    WHEN NOT EXISTS (SELECT 1 FROM pruning)
    BEGIN
        SELECT RAISE(ABORT, 'message_events is append-only');
    END;
    """,
    # 4: access control: each instance's agent token (its SHA-256), each delivery's lease,
    # and browser sessions ended by a logout.
    """
    ALTER TABLE instances ADD COLUMN token_hash TEXT;
    CREATE UNIQUE INDEX instances_token ON instances(token_hash) WHERE token_hash IS NOT NULL;
    ALTER TABLE messages ADD COLUMN lease_id TEXT;
    CREATE TABLE ended_sessions (
        id         TEXT PRIMARY KEY,
        expires_at TEXT NOT NULL
    );
    """,
    # 5: observability: how often each instance was started (its restarts are every start
    # after the first) and how its child last ended (JSON: {"code"|"signal": N, "at": T}).
    """
    ALTER TABLE instances ADD COLUMN starts INTEGER NOT NULL DEFAULT 0 CHECK (starts >= 0);
    ALTER TABLE instances ADD COLUMN last_exit TEXT;
    """,
]


def statements(script: str) -> list[str]:
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
