"""Restarts and the last exit of an instance: counted, published, stored, and reloaded."""

from __future__ import annotations

import os

import pytest_twisted

from tests.support import World, wait_for
from tests.test_supervisor import CRASHER, group_members


def last_status_frame(supervised: World, name: str) -> dict:
    return [f for f in supervised.instance_frames.frames if f.get("name") == name][-1]


@pytest_twisted.ensureDeferred
async def test_a_crash_is_counted_and_its_exit_code_kept(supervised):
    """Every start after the first is a restart (automatic ones included); the exit code of
    each crash is the last exit, stamped with its event's time, and stored."""
    instance = supervised.registry.create("c", health="process", command=CRASHER)
    supervised.supervisor.start(instance)
    assert instance.restarts == 0 and instance.last_exit is None
    await wait_for(lambda: instance.status == "crashed")
    frame = last_status_frame(supervised, "c")
    assert instance.last_exit == {"code": 3, "at": frame["timestamp"]}
    assert frame["last_exit"] == instance.last_exit and frame["restarts"] == 0
    supervised.clock.advance(1.0)  # the automatic restart
    assert instance.status == "starting" and instance.restarts == 1
    assert last_status_frame(supervised, "c")["restarts"] == 1
    await wait_for(lambda: instance.status == "crashed")
    supervised.supervisor.start(instance)  # an operator's start counts too
    assert instance.restarts == 2
    await wait_for(lambda: instance.status == "crashed")
    reloaded = supervised.new_registry().get("c")
    assert (reloaded.restarts, reloaded.last_exit) == (2, instance.last_exit)


@pytest_twisted.ensureDeferred
async def test_kill_9_is_a_signal_exit_and_a_stop_is_recorded_too(supervised):
    """A child killed by SIGKILL ends with {"signal": 9}; a clean stop (SIGTERM) records its
    own exit; a new start after a stop is a restart."""
    instance = supervised.registry.create("k", health="process", restart="never")
    supervised.supervisor.start(instance)
    await wait_for(lambda: group_members(instance.pid))
    os.killpg(instance.pid, 9)
    await wait_for(lambda: instance.status == "crashed")
    assert instance.last_exit["signal"] == 9 and set(instance.last_exit) == {"signal", "at"}
    supervised.supervisor.start(instance)
    supervised.clock.advance(1.0)
    assert instance.status == "running" and instance.restarts == 1
    await supervised.supervisor.stop(instance)
    assert instance.last_exit["signal"] == 15
    assert supervised.new_registry().get("k").last_exit == instance.last_exit


@pytest_twisted.ensureDeferred
async def test_an_adopted_child_that_vanished_has_an_unknown_exit(supervised):
    """A child gone while no control plane watched it ended in a way nobody saw: the last exit
    is null, not the previous run's."""
    instance = supervised.registry.create("g", health="process", restart="never", command=CRASHER)
    supervised.supervisor.start(instance)
    await wait_for(lambda: instance.status == "crashed")
    assert instance.last_exit is not None
    await supervised.supervisor.stopService()
    registry = supervised.new_registry()
    again = registry.get("g")
    registry._rows.update(again.id, status="running", pid=2**22 + 7)  # a pid that is not ours
    registry = supervised.new_registry()
    supervised.registry = registry
    supervised.new_supervisor(registry)
    assert registry.get("g").status == "crashed"
    assert registry.get("g").last_exit is None


def test_a_database_from_before_upgrades_with_no_restarts_and_no_exit(tmp_path):
    """Schema 5 on a version-4 file: its instances load with 0 restarts and no last exit."""
    import sqlite3

    from twisted.internet.task import Clock

    from cpstream.domain.hub import Hub
    from cpstream.domain.registry import Registry
    from cpstream.domain.schema import MIGRATIONS, statements
    from cpstream.domain.store import Store

    path = tmp_path / "cp.db"
    db = sqlite3.connect(path)
    for number, script in enumerate(MIGRATIONS[:4], start=1):
        for statement in statements(script):
            db.execute(statement)
        db.execute(f"PRAGMA user_version={number}")
    db.execute(
        "INSERT INTO instances (id, name, port, command, env, health, restart, status, pid,"
        " created_at) VALUES ('i1', 'old', 18801, '[\"x\"]', '{}', 'http', 'never', 'crashed',"
        " NULL, '2026-01-01T00:00:00.000000Z')"
    )
    db.commit()
    db.close()
    store = Store.open(path)
    try:
        old = Registry(store, Hub(Clock()), Clock(), ["x"]).get("old")
        assert (store.schema_version, old.restarts, old.last_exit) == (len(MIGRATIONS), 0, None)
    finally:
        store.close()
