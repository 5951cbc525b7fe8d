"""The supervisor with real child processes; its timers run on a task.Clock."""

from __future__ import annotations

import os
import sys

import pytest
import pytest_twisted
from twisted.internet import defer

from cpstream.domain.children import process_environ
from cpstream.domain.instances import IllegalTransition
from cpstream.domain.registry import Registry
from cpstream.domain.store import Store
from tests.support import SLEEPER, World, sleep, wait_for

CRASHER = [sys.executable, "-c", "import sys; sys.exit(3)"]
STUBBORN = ["sh", "-c", "trap '' TERM; echo stubborn; sleep 60 & wait"]
FORKER = ["sh", "-c", "sleep 61 & sleep 62 & echo forked; wait"]


class Setup(World):
    """The shared world with real SLEEPER children and a started supervisor."""

    def __init__(self, tmp_path, probe=None, grace: float = 5.0) -> None:
        super().__init__(tmp_path, command=SLEEPER, probe=probe, grace=grace)
        self.supervisor = self.new_supervisor()

    @property
    def events(self) -> list[dict]:
        return self.instance_frames.frames

    def kill_all(self) -> None:
        self.close()


@pytest.fixture
def setup(tmp_path):
    made = Setup(tmp_path)
    yield made
    made.kill_all()


async def execed(instance) -> None:
    """Wait until the child runs its command: until then (forked, not yet exec'd) its
    environment is its parent's, and nothing tells it apart from a stranger's pid."""
    await wait_for(lambda: process_environ(instance.pid).get("CPSTREAM_INSTANCE_ID") == instance.id)


def group_members(pgid: int) -> list[int]:
    """Pids (zombies included) whose process group is ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                members.append(int(entry))
    return members


@pytest_twisted.ensureDeferred
async def test_process_health_promotes_after_one_second(setup):
    """With health 'process', a child that survives 1 s goes starting -> running."""
    instance = setup.registry.create("a", health="process")
    setup.supervisor.start(instance)
    assert instance.status == "starting" and instance.pid
    setup.clock.advance(0.9)
    assert instance.status == "starting"
    setup.clock.advance(0.1)
    assert instance.status == "running"
    assert setup.statuses("a") == ["starting", "running"]
    await wait_for(lambda: os.getpgid(instance.pid) == instance.pid)


@pytest_twisted.ensureDeferred
async def test_child_output_goes_to_its_log_file(setup):
    """The child's stdout is appended straight to DATA/instances/NAME/logs/daemon.log."""
    instance = setup.registry.create("a", health="process")
    setup.supervisor.start(instance)
    path = setup.logs.path(setup.registry.get("a"))
    await wait_for(lambda: path.exists() and path.read_bytes() == b"up\n")
    env = open(f"/proc/{instance.pid}/environ", "rb").read().split(b"\0")
    assert f"CPSTREAM_INSTANCE_ID={instance.id}".encode() in env
    assert f"CPSTREAM_PORT={instance.port}".encode() in env


@pytest_twisted.ensureDeferred
async def test_http_health_probe_drives_running_and_unhealthy(tmp_path):
    """The HTTP probe promotes to running, and health-loop failures flip unhealthy and back."""
    answers = {"healthy": False}
    setup = Setup(tmp_path, probe=lambda port: defer.succeed(answers["healthy"]))
    try:
        instance = setup.registry.create("a")
        setup.supervisor.start(instance)
        setup.clock.advance(0.1)
        setup.clock.advance(0.2)
        assert instance.status == "starting"
        answers["healthy"] = True
        setup.clock.advance(0.2)
        assert instance.status == "running"
        answers["healthy"] = False
        setup.clock.advance(1.0)
        assert instance.status == "unhealthy"
        answers["healthy"] = True
        setup.clock.advance(1.0)
        assert setup.statuses("a") == ["starting", "running", "unhealthy", "running"]
    finally:
        setup.kill_all()


@pytest_twisted.ensureDeferred
async def test_never_healthy_start_becomes_unhealthy(tmp_path):
    """A child that never answers its probe is unhealthy after the start timeout."""
    setup = Setup(tmp_path, probe=lambda port: defer.succeed(False))
    try:
        instance = setup.registry.create("a")
        setup.supervisor.start(instance)
        for _ in range(200):
            setup.clock.advance(0.2)
        assert instance.status == "unhealthy" and instance.pid
    finally:
        setup.kill_all()


@pytest.mark.logs_errors
@pytest_twisted.ensureDeferred
async def test_a_probe_that_raises_does_not_kill_the_health_loop(tmp_path, _no_logged_errors):
    """An exception from the probe counts as unhealthy and the loop keeps running."""
    calls = []

    def probe(port):
        calls.append(port)
        raise RuntimeError("probe exploded")

    setup = Setup(tmp_path, probe=probe)
    try:
        instance = setup.registry.create("a")
        setup.supervisor.start(instance)
        setup.clock.advance(0.1)
        assert instance.status == "starting"
        setup.registry.set_status(instance, "running", pid=instance.pid)
        setup.clock.advance(1.0)
        setup.clock.advance(1.0)
        assert instance.status == "unhealthy" and len(calls) >= 3
        assert setup.supervisor._loop.running
        assert "probe exploded" in _no_logged_errors[0]
    finally:
        setup.kill_all()


@pytest_twisted.ensureDeferred
async def test_crash_restarts_with_backoff_then_crash_loop(setup):
    """Unexpected exits restart after 1, 2, 4, 8 s; the fifth crash in 60 s is crash_loop."""
    instance = setup.registry.create("a", command=CRASHER, health="process")
    setup.supervisor.start(instance)
    for backoff in (1.0, 2.0, 4.0, 8.0):
        await wait_for(lambda: instance.status == "crashed")
        assert instance.pid is None
        setup.clock.advance(backoff - 0.01)
        assert instance.status == "crashed"
        setup.clock.advance(0.01)
        assert instance.status == "starting"
    await wait_for(lambda: instance.status == "crash_loop")
    setup.clock.advance(120)
    assert instance.status == "crash_loop"
    assert setup.statuses("a") == ["starting", "crashed"] * 4 + ["starting", "crash_loop"]


@pytest_twisted.ensureDeferred
async def test_operator_start_leaves_crash_loop(setup):
    """An operator start after crash_loop spawns the child again."""
    instance = setup.registry.create("a", command=CRASHER, health="process")
    setup.registry.set_status(instance, "crash_loop")
    setup.supervisor.start(instance)
    assert instance.status == "starting"
    await wait_for(lambda: instance.status == "crashed")


@pytest_twisted.ensureDeferred
async def test_restart_never_leaves_it_crashed(setup):
    """With restart 'never', an unexpected exit is crashed and stays crashed."""
    instance = setup.registry.create("a", command=CRASHER, health="process", restart="never")
    setup.supervisor.start(instance)
    await wait_for(lambda: instance.status == "crashed")
    setup.clock.advance(120)
    assert instance.status == "crashed"


@pytest_twisted.ensureDeferred
async def test_stop_escalates_to_sigkill(setup):
    """A child that ignores SIGTERM is SIGKILLed after the grace period."""
    instance = setup.registry.create("a", command=STUBBORN, health="process")
    setup.supervisor.start(instance)
    await wait_for(lambda: setup.logs.path(setup.registry.get("a")).read_bytes() == b"stubborn\n")
    pid = instance.pid
    stopped = setup.supervisor.stop(instance)
    assert instance.status == "stopping"
    await sleep(0.5)
    assert instance.status == "stopping" and os.path.exists(f"/proc/{pid}")
    setup.clock.advance(setup.grace)
    await wait_for(lambda: stopped.called)
    assert instance.status == "stopped" and instance.pid is None
    await wait_for(lambda: not group_members(pid))


@pytest_twisted.ensureDeferred
async def test_stop_kills_the_whole_process_group(setup):
    """Stop signals the process group: grandchildren go too, leaving no zombies."""
    instance = setup.registry.create("a", command=FORKER, health="process")
    setup.supervisor.start(instance)
    await wait_for(lambda: len(group_members(instance.pid)) == 3)
    pid = instance.pid
    await setup.supervisor.stop(instance)
    assert instance.status == "stopped"
    await wait_for(lambda: not group_members(pid))


@pytest_twisted.ensureDeferred
async def test_stop_of_a_crashed_instance_cancels_its_restart(setup):
    """Stopping a crashed instance marks it stopped and no restart follows."""
    instance = setup.registry.create("a", command=CRASHER, health="process")
    setup.supervisor.start(instance)
    await wait_for(lambda: instance.status == "crashed")
    await setup.supervisor.stop(instance)
    setup.clock.advance(60)
    assert instance.status == "stopped"


@pytest_twisted.ensureDeferred
async def test_illegal_lifecycle_calls_conflict(setup):
    """Start of a live instance, stop of a stopped one, restart while stopping: 409s."""
    instance = setup.registry.create("a", command=STUBBORN, health="process")
    with pytest.raises(IllegalTransition):
        setup.supervisor.stop(instance)
    setup.supervisor.start(instance)
    with pytest.raises(IllegalTransition):
        setup.supervisor.start(instance)
    stopped = setup.supervisor.stop(instance)
    for call in (setup.supervisor.start, setup.supervisor.stop, setup.supervisor.restart):
        with pytest.raises(IllegalTransition):
            call(instance)
    setup.clock.advance(setup.grace)
    await stopped


@pytest_twisted.ensureDeferred
async def test_restart_publishes_stop_then_start(setup):
    """Restart of a running instance goes stopping -> stopped -> starting with a new pid."""
    instance = setup.registry.create("a", health="process")
    setup.supervisor.start(instance)
    setup.clock.advance(1)
    first = instance.pid
    await setup.supervisor.restart(instance)
    assert instance.status == "starting" and instance.pid != first
    assert setup.statuses("a") == ["starting", "running", "stopping", "stopped", "starting"]


@pytest_twisted.ensureDeferred
async def test_archive_stops_a_live_instance_first(setup):
    """Archive of a running instance stops it, then archives it."""
    instance = setup.registry.create("a", health="process")
    setup.supervisor.start(instance)
    await setup.supervisor.archive(instance)
    assert instance.archived and instance.status == "stopped"
    assert [e["type"] for e in setup.events][-2:] == ["status_changed", "instance_archived"]
    with pytest.raises(IllegalTransition):
        setup.supervisor.start(instance)


@pytest_twisted.ensureDeferred
async def test_start_rotates_the_previous_log(setup):
    """Every start renames the previous daemon.log to daemon.log.1."""
    instance = setup.registry.create("a", health="process")
    setup.supervisor.start(instance)
    await wait_for(lambda: setup.logs.path(setup.registry.get("a")).read_bytes() == b"up\n")
    await setup.supervisor.stop(instance)
    setup.supervisor.start(instance)
    assert (
        setup.logs.path(setup.registry.get("a")).with_name("daemon.log.1").read_bytes() == b"up\n"
    )
    await wait_for(lambda: setup.logs.path(setup.registry.get("a")).read_bytes() == b"up\n")


@pytest_twisted.ensureDeferred
async def test_a_new_supervisor_adopts_running_children(setup):
    """After a control plane restart, a still-running child is adopted, not restarted."""
    instance = setup.registry.create("a", health="process")
    setup.supervisor.start(instance)
    setup.clock.advance(1)
    pid = instance.pid
    await execed(instance)
    await setup.supervisor.stopService()
    assert os.path.exists(f"/proc/{pid}")

    registry = setup.new_registry()
    supervisor = setup.new_supervisor(registry)
    adopted = registry.get("a")
    assert (adopted.status, adopted.pid) == ("running", pid)
    stopped = supervisor.stop(adopted)
    await wait_for(lambda: setup.clock.advance(0.1) or stopped.called)
    assert adopted.status == "stopped"
    await wait_for(lambda: not group_members(pid))


@pytest_twisted.ensureDeferred
async def test_adopted_child_exit_is_noticed_by_the_health_loop(setup):
    """An adopted child that dies is crashed at the next health-loop pass."""
    instance = setup.registry.create("a", health="process", restart="never")
    setup.supervisor.start(instance)
    setup.clock.advance(1)
    pid = instance.pid
    await execed(instance)
    await setup.supervisor.stopService()
    registry = setup.new_registry()
    setup.new_supervisor(registry)
    await wait_for(lambda: os.getpgid(pid) == pid)
    os.killpg(pid, 9)
    await wait_for(lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid))
    await sleep(0.1)
    setup.clock.advance(1.0)
    assert registry.get("a").status == "crashed"


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest_twisted.ensureDeferred
async def test_stale_pid_is_cleared_not_adopted(setup):
    """A stored pid that is not this instance's child is cleared, never signalled."""
    instance = setup.registry.create("a", health="process", restart="never")
    setup.registry.set_status(instance, "running", pid=os.getpid(), started_at="t")
    registry = setup.new_registry()
    setup.new_supervisor(registry)
    stale = registry.get("a")
    assert (stale.status, stale.pid) == ("crashed", None)


@pytest_twisted.ensureDeferred
async def test_a_child_that_exits_during_spawn_is_seen_crashing(setup):
    """A child gone before spawnProcess returns (Twisted reaps it synchronously) is crashed."""
    instance = setup.registry.create("a", command=["true"], health="process", restart="never")
    for attempt in range(50):
        setup.supervisor.start(instance)
        await wait_for(lambda: instance.status == "crashed", timeout=5)
        setup.clock.advance(1.0)
        assert instance.status == "crashed" and instance.pid is None, attempt
    assert setup.statuses("a") == ["starting", "crashed"] * 50
    starting = [e for e in setup.events if e.get("status") == "starting"]
    assert all(isinstance(e["pid"], int) for e in starting)


@pytest_twisted.ensureDeferred
async def test_an_exit_after_the_supervisor_stopped_records_nothing(setup):
    """A child ending during shutdown writes nothing; the next supervisor settles it."""
    instance = setup.registry.create("a", health="process", restart="never")
    setup.supervisor.start(instance)
    setup.clock.advance(1)
    pid = instance.pid
    await execed(instance)
    await setup.supervisor.stopService()
    setup.store.close()
    os.killpg(pid, 9)
    await wait_for(lambda: not group_members(pid) or _zombie(pid))
    await sleep(0.2)
    assert instance.status == "running"
    setup.store = Store.open(setup.tmp_path / "cp.db")
    registry = Registry(setup.store, setup.hub, setup.clock, SLEEPER)
    setup.new_supervisor(registry)
    assert (registry.get("a").status, registry.get("a").pid) == ("crashed", None)


@pytest_twisted.ensureDeferred
async def test_a_crash_waiting_for_its_restart_is_restarted_by_the_next_supervisor(setup):
    """An instance crashed and waiting out its backoff when the control plane stopped is
    started by the next one (it used to stay crashed for good)."""
    instance = setup.registry.create("a", health="process")
    setup.supervisor.start(instance)
    await wait_for(lambda: group_members(instance.pid))
    os.killpg(instance.pid, 9)
    await wait_for(lambda: instance.status == "crashed")
    await setup.supervisor.stopService()
    registry = setup.new_registry()
    setup.new_supervisor(registry)
    again = registry.get("a")
    assert again.status == "crashed"
    setup.clock.advance(1.0)
    assert again.status == "starting" and again.pid
    setup.registry = registry


@pytest_twisted.ensureDeferred
async def test_an_exit_is_published_with_its_code_or_signal(setup):
    """A crash's status_changed carries how the child ended: its code or its signal."""
    instance = setup.registry.create("a", health="process", restart="never")
    setup.supervisor.start(instance)
    await wait_for(lambda: group_members(instance.pid))
    os.killpg(instance.pid, 9)
    await wait_for(lambda: instance.status == "crashed")
    assert setup.events[-1]["exit"] == {"signal": "SIGKILL"}
    crasher = setup.registry.create("b", health="process", restart="never", command=CRASHER)
    setup.supervisor.start(crasher)
    await wait_for(lambda: crasher.status == "crashed")
    assert setup.events[-1]["exit"] == {"code": 3}
