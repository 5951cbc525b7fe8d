"""Resource usage: the sampler on a Clock (real children and psutil, or a fake reading), and
the series it keeps."""

from __future__ import annotations

import sys
import time

import pytest
import pytest_twisted
from twisted.internet import defer

from cpstream.domain.usage import GroupReader, Reading, Series, UsageSampler
from tests.support import World, sleep, wait_for

BURNER = [sys.executable, "-c", "while True: pass"]
# A child that forks: a shell, a python holding 40 MB, and a sleep, all in one group.
FORKER = [
    "sh",
    "-c",
    f"{sys.executable} -c 'import time; x = bytearray(40_000_000); time.sleep(600)' &"
    " sleep 600 & wait",
]


class FakeReader:
    """Readings made up for the pids asked, counted: a sampler with no process to read."""

    def __init__(self) -> None:
        self.calls = 0
        self.wall = 1000.0

    def __call__(self, leaders: list[int]) -> defer.Deferred:
        self.calls += 1
        self.wall += 2.0
        readings = {
            pid: Reading(self.wall, {(pid, 0.0): self.wall / 10}, rss=pid, fds=3, members=1)
            for pid in leaders
        }
        return defer.succeed(readings)


def running(supervised: World, *names: str) -> None:
    """Instances that look running to the sampler (a fake pid each), without a child."""
    for number, name in enumerate(names, start=1):
        instance = supervised.registry.create(name)
        supervised.registry.set_status(instance, "running", pid=4_000_000 + number)


def usage_frames(supervised: World) -> list[dict]:
    return [f for f in supervised.instance_frames.frames if f["type"] == "usage_changed"]


def test_one_frame_per_tick_for_every_instance_sampled(supervised):
    """Each tick publishes exactly one usage_changed frame naming every running instance, with
    no seq (the hub's seq and the event table are untouched); stopped ones are left out."""
    running(supervised, "a", "b", "c")
    supervised.registry.create("idle")
    sampler = UsageSampler(supervised.registry, supervised.clock, FakeReader(), interval=2.0)
    seq, stored = supervised.hub.seq, supervised.store.instance_events.last_id()
    sampler.startService()
    for _ in range(3):
        supervised.clock.advance(2.0)
    frames = usage_frames(supervised)
    assert len(frames) == 4  # the tick at start, then one each 2 s
    for frame in frames:
        assert "seq" not in frame and frame["timestamp"]
        assert sorted(entry["name"] for entry in frame["instances"]) == ["a", "b", "c"]
        assert all(set(e["usage"]) == {"cpu", "rss", "fds", "threads", "children", "at"}
                   for e in frame["instances"])  # fmt: skip
    assert (supervised.hub.seq, supervised.store.instance_events.last_id()) == (seq, stored)
    assert frames[-1]["instances"][0]["usage"]["cpu"] == pytest.approx(10.0)  # 0.2 s per 2 s
    sampler.stopService()


def test_a_stopped_instance_loses_its_usage_and_a_deleted_one_its_series(supervised):
    """Usage is null once the instance is not running; its series stays until it is deleted."""
    running(supervised, "a")
    sampler = UsageSampler(supervised.registry, supervised.clock, FakeReader(), interval=2.0)
    sampler.startService()
    instance = supervised.registry.get("a")
    assert instance.usage is not None and len(sampler.series(instance, 60)) == 1
    supervised.registry.set_status(instance, "stopped")
    assert instance.usage is None
    supervised.clock.advance(2.0)
    assert len(sampler.series(instance, 60)) == 1
    supervised.registry.archive(instance)
    supervised.registry.delete(instance)
    supervised.clock.advance(2.0)
    assert sampler.series(instance, 60) == [] and not sampler.cpu_seconds
    sampler.stopService()


def test_a_tick_waits_for_the_reading_under_way(supervised):
    """A reading still under way when the next tick is due is not doubled: one at a time."""
    running(supervised, "a")
    pending: list[defer.Deferred] = []

    def slow(leaders: list[int]) -> defer.Deferred:
        pending.append(defer.Deferred())
        return pending[-1]

    sampler = UsageSampler(supervised.registry, supervised.clock, slow, interval=2.0)
    sampler.startService()
    supervised.clock.advance(10.0)
    assert len(pending) == 1
    pending[0].callback({})
    supervised.clock.advance(2.0)
    assert len(pending) == 2
    pending[1].callback({})
    sampler.stopService()


@pytest.mark.logs_errors
def test_a_failing_reading_is_logged_and_the_loop_goes_on(supervised):
    """The periodic task catches and logs its own errors: the next tick samples again."""
    running(supervised, "a")
    calls = []

    def broken(leaders: list[int]) -> defer.Deferred:
        calls.append(leaders)
        if len(calls) == 1:
            raise OSError("no /proc")
        return FakeReader()(leaders)

    sampler = UsageSampler(supervised.registry, supervised.clock, broken, interval=2.0)
    sampler.startService()
    supervised.clock.advance(2.0)
    assert len(calls) == 2 and len(usage_frames(supervised)) == 1
    sampler.stopService()


def test_the_series_is_bounded_and_oldest_first():
    """A series keeps the last ``keep`` samples, oldest first, and a window of minutes."""
    series = Series(keep=5)
    for n in range(8):
        series.add(100.0 + n, {"cpu": n, "rss": n, "fds": n, "threads": n, "children": 0})
    assert len(series) == 5
    assert [s["rss"] for s in series.since(0)] == [3, 4, 5, 6, 7]
    assert [s["rss"] for s in series.since(106.0)] == [6, 7]


@pytest_twisted.ensureDeferred
async def test_a_busy_child_shows_its_cpu_and_a_forking_one_is_counted_whole(supervised):
    """With real children read by psutil: a child spinning shows a core's worth of CPU; a
    child that forks shows its processes and their memory summed."""
    burner = supervised.registry.create("burn", health="process", command=BURNER)
    forker = supervised.registry.create("fork", health="process", command=FORKER)
    for instance in (burner, forker):
        supervised.supervisor.start(instance)
    reader = GroupReader()
    sampler = UsageSampler(
        supervised.registry, supervised.clock, lambda pids: defer.succeed(reader(pids))
    )
    await wait_for(lambda: len(reader([forker.pid]).get(forker.pid, Reading(0)).cpu) >= 3)
    sampler.startService()
    started = time.monotonic()
    await sleep(1.0)
    supervised.clock.advance(2.0)
    # A core is 100; it spins on one of 2 cores shared with other tests' processes.
    assert burner.usage["cpu"] > 20.0 > forker.usage["cpu"], (burner.usage, forker.usage)
    assert forker.usage["children"] >= 2
    assert forker.usage["rss"] >= 40_000_000
    assert forker.usage["threads"] >= 3 and forker.usage["fds"] >= 3
    assert sampler.cpu_seconds[burner.id] > 0.1 * (time.monotonic() - started)
    await sampler.stopService()


USAGE_FRAME = {
    "type": "usage_changed",
    "timestamp": "2026-11-30T06:00:00.000000Z",
    "instances": [{"id": "i", "name": "a", "usage": None}],
}


def test_followers_keep_their_position_across_usage_frames():
    """`cpstream events` resumes from the last seq it saw: a usage_changed frame (no seq)
    neither moves nor clears it, and is not printed as an event, in text or JSON."""
    import argparse
    import io

    from cpstream.cli.commands import Context, EventPrinter
    from cpstream.cli.follow import Resume
    from cpstream.cli.output import Output

    resume = Resume("seq")
    resume.see({"type": "snapshot", "seq": 7, "epoch": "e"})
    resume.see({"type": "status_changed", "seq": 9})
    resume.see(USAGE_FRAME)
    assert resume.params() == {"since": 9, "epoch": "e"}
    for as_json in (False, True):
        out = io.StringIO()
        args = argparse.Namespace(json=as_json)
        ctx = Context(reactor=None, client=None, out=Output(out, io.StringIO()), args=args)
        EventPrinter(ctx, messages=False, instance="a")(USAGE_FRAME)
        assert out.getvalue() == ""
