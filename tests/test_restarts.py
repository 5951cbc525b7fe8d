"""Restarts and the last exit of an instance: counted, published, stored, and reloaded."""

from __future__ import annotations

import os

import pytest
import pytest_twisted

from tests.support import SLEEPER, World, wait_for
from tests.test_supervisor import CRASHER, group_members


@pytest.fixture
def world(tmp_path):
    made = World(tmp_path, command=SLEEPER)
    made.supervisor = made.new_supervisor()
    yield made
    made.close()


def last_status_frame(world: World, name: str) -> dict:
    return [f for f in world.instance_frames.frames if f.get("name") == name][-1]


@pytest_twisted.ensureDeferred
async def test_a_crash_is_counted_and_its_exit_code_kept(world):
    """Every start after the first is a restart (automatic ones included); the exit code of
    each crash is the last exit, stamped with its event's time, and stored."""
    instance = world.registry.create("c", health="process", command=CRASHER)
    world.supervisor.start(instance)
    assert instance.restarts == 0 and instance.last_exit is None
    await wait_for(lambda: instance.status == "crashed")
    frame = last_status_frame(world, "c")
    assert instance.last_exit == {"code": 3, "at": frame["timestamp"]}
    assert frame["last_exit"] == instance.last_exit and frame["restarts"] == 0
    world.clock.advance(1.0)  # the automatic restart
    assert instance.status == "starting" and instance.restarts == 1
    assert last_status_frame(world, "c")["restarts"] == 1
    await wait_for(lambda: instance.status == "crashed")
    world.supervisor.start(instance)  # an operator's start counts too
    assert instance.restarts == 2
    await wait_for(lambda: instance.status == "crashed")
    reloaded = world.new_registry().get("c")
    assert (reloaded.restarts, reloaded.last_exit) == (2, instance.last_exit)


@pytest_twisted.ensureDeferred
async def test_kill_9_is_a_signal_exit_and_a_stop_is_recorded_too(world):
    """A child killed by SIGKILL ends with {"signal": 9}; a clean stop (SIGTERM) records its
    own exit; a new start after a stop is a restart."""
    instance = world.registry.create("k", health="process", restart="never")
    world.supervisor.start(instance)
    await wait_for(lambda: group_members(instance.pid))
    os.killpg(instance.pid, 9)
    await wait_for(lambda: instance.status == "crashed")
    assert instance.last_exit["signal"] == 9 and set(instance.last_exit) == {"signal", "at"}
    world.supervisor.start(instance)
    world.clock.advance(1.0)
    assert instance.status == "running" and instance.restarts == 1
    await world.supervisor.stop(instance)
    assert instance.last_exit["signal"] == 15
    assert world.new_registry().get("k").last_exit == instance.last_exit


@pytest_twisted.ensureDeferred
async def test_an_adopted_child_that_vanished_has_an_unknown_exit(world):
    """A child gone while no control plane watched it ended in a way nobody saw: the last exit
    is null, not the previous run's."""
    instance = world.registry.create("g", health="process", restart="never", command=CRASHER)
    world.supervisor.start(instance)
    await wait_for(lambda: instance.status == "crashed")
    assert instance.last_exit is not None
    await world.supervisor.stopService()
    registry = world.new_registry()
    again = registry.get("g")
    registry._rows.update(again.id, status="running", pid=2**22 + 7)  # a pid that is not ours
    registry = world.new_registry()
    world.registry = registry
    world.new_supervisor(registry)
    assert registry.get("g").status == "crashed"
    assert registry.get("g").last_exit is None
