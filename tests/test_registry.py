"""The instance table: validation, storage and exactly one event per change."""

from __future__ import annotations

import pytest

from cpstream.domain.errors import Conflict
from cpstream.domain.instances import IllegalTransition, InvalidInstance, UnknownInstance
from cpstream.domain.registry import Registry
from tests.support import Recorder


@pytest.fixture
def clock(world):
    return world.clock


@pytest.fixture
def store(world):
    return world.store


@pytest.fixture
def hub(world):
    return world.hub


@pytest.fixture
def registry(world):
    return world.registry


def test_create_stores_and_publishes(registry, hub, store):
    """Create writes the row and publishes instance_created with seq and timestamp."""
    events = Recorder(hub)
    instance = registry.create("a1", port=18850)
    assert events.frames == [
        {
            "type": "instance_created",
            "name": "a1",
            "id": instance.id,
            "port": 18850,
            "status": "stopped",
            "usage": None,
            "restarts": 0,
            "last_exit": None,
            "seq": 1,
            "timestamp": "2026-09-21T14:13:20.000000Z",
        }
    ]
    assert store.instances.load()[0]["id"] == instance.id
    assert instance.command == ["agent"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "-bad"},
        {"name": ""},
        {"name": "a" * 65},
        {"name": "has space"},
        {"name": 7},
        {"name": "ok", "port": 80},
        {"name": "ok", "port": 70000},
        {"name": "ok", "port": "18801"},
        {"name": "ok", "command": []},
        {"name": "ok", "command": "echo hi"},
        {"name": "ok", "env": {"A": 1}},
        {"name": "ok", "health": "tcp"},
        {"name": "ok", "restart": "always"},
    ],
)
def test_create_rejects_bad_input_without_writing(registry, hub, store, kwargs):
    """Invalid names, ports, commands and policies are refused and nothing is stored."""
    events = Recorder(hub)
    with pytest.raises(InvalidInstance):
        registry.create(**kwargs)
    assert store.instances.load() == [] and events.frames == []


def test_ports_are_allocated_from_the_range(registry):
    """Without a port, the lowest free one from 18801 is used."""
    assert registry.create("a").port == 18801
    assert registry.create("b", port=18802).port == 18802
    assert registry.create("c").port == 18803


def test_taken_name_and_port_conflict(registry):
    """A taken active name or port is a conflict."""
    registry.create("a", port=18850)
    with pytest.raises(Conflict, match="name"):
        registry.create("a")
    with pytest.raises(Conflict, match="port"):
        registry.create("b", port=18850)


def test_status_change_publishes_once(registry, hub):
    """A status change publishes status_changed; repeating it publishes nothing."""
    instance = registry.create("a")
    events = Recorder(hub)
    registry.set_status(instance, "starting", pid=42, started_at="t")
    registry.set_status(instance, "starting", pid=42)
    assert events.types == ["status_changed"]
    assert events.frames[0]["pid"] == 42 and events.frames[0]["status"] == "starting"
    registry.set_status(instance, "stopped")
    assert events.frames[-1]["pid"] is None and instance.started_at is None


def test_archive_unarchive_delete_publish(registry, hub, store):
    """Archive, unarchive and delete each publish their own event."""
    instance = registry.create("a")
    events = Recorder(hub)
    registry.archive(instance)
    registry.unarchive(instance)
    registry.archive(instance)
    registry.delete(instance)
    assert events.types == [
        "instance_archived",
        "instance_unarchived",
        "instance_archived",
        "instance_deleted",
    ]
    assert store.instances.load() == []
    with pytest.raises(UnknownInstance):
        registry.get("a")


def test_illegal_transitions(registry):
    """Deleting an active instance or archiving a live one is refused."""
    instance = registry.create("a")
    with pytest.raises(IllegalTransition):
        registry.delete(instance)
    registry.set_status(instance, "running", pid=1)
    with pytest.raises(IllegalTransition):
        registry.archive(instance)


def test_get_falls_back_to_the_archived_instance(registry):
    """A name with no active instance resolves to its latest archived one."""
    instance = registry.create("a")
    registry.archive(instance)
    assert registry.get("a") is instance
    assert registry.find("a") is None
    replacement = registry.create("a")
    assert registry.get("a") is replacement


def test_unarchive_into_taken_name_changes_nothing(registry, hub):
    """Unarchiving when the name is taken again is a conflict and publishes nothing."""
    old = registry.create("a")
    registry.archive(old)
    registry.create("a")
    events = Recorder(hub)
    with pytest.raises(Conflict):
        registry.unarchive(old)
    assert old.archived and events.frames == []


def test_clone_copies_command_and_env(registry):
    """A clone gets a new id, name and port and the source's command and env."""
    source = registry.create("a", command=["x", "y"], env={"K": "V"}, health="process")
    copy = registry.clone(source, "b")
    assert (copy.command, copy.env, copy.health) == (["x", "y"], {"K": "V"}, "process")
    assert copy.id != source.id and copy.port != source.port


def test_state_survives_reload(registry, store, hub, clock):
    """A new registry on the same store sees the same instances and statuses."""
    instance = registry.create("a")
    registry.set_status(instance, "running", pid=99, started_at="t")
    again = Registry(store, hub, clock, ["agent"])
    loaded = again.get("a")
    assert (loaded.status, loaded.pid, loaded.started_at) == ("running", 99, "t")
