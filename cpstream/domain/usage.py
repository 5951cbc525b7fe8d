"""What each running instance costs: CPU, memory, descriptors, threads, processes.

One periodic task samples every running instance's whole process group (the
supervisor starts each child in a session of its own, so an agent that forks is
counted whole) with psutil. Reading ``/proc`` for 500 processes takes ~30 ms of
system calls (bench/sampling.py), so the reading runs in a worker thread
(:func:`in_thread`), one at a time, and the reactor only turns the readings into
samples: CPU % of one core from the CPU-time deltas between two readings, RSS,
open descriptors, threads and child processes summed over the group. Each tick
sets every sampled instance's ``usage`` and publishes one ``usage_changed`` frame
for all of them (through the registry), keeps a bounded series per instance
(:class:`Series`, about an hour at 2 s) and adds the CPU seconds the ``/metrics``
counter reports. CPU of a process that lives less than one interval is not seen.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psutil
from twisted.application.internet import TimerService
from twisted.internet import defer, threads
from twisted.logger import Logger

from cpstream.domain.frames import isotime
from cpstream.domain.instances import LIVE, Instance
from cpstream.domain.registry import Registry

INTERVAL = 2.0
KEEP = 1800  # samples per instance: an hour at 2 s
MAX_MINUTES = 60


@dataclass
class Reading:
    """One process group as read at ``wall`` (epoch seconds): per member ``(pid, created)``
    its CPU seconds, and the sums of the rest."""

    wall: float
    cpu: dict[tuple[int, float], float] = field(default_factory=dict)
    rss: int = 0
    fds: int = 0
    threads: int = 0
    members: int = 0


Read = Callable[[list[int]], "defer.Deferred[dict[int, Reading]]"]


class GroupReader:
    """Reads process groups with psutil; each call blocks on ``/proc`` (run it in a thread,
    one call at a time: it keeps one ``psutil.Process`` per live member between calls).

    Members are found by one pass of ``getpgid`` over every pid (0.5 ms for ~580
    processes), not ``children(recursive=True)`` per instance, which reads every
    process's parent on each call (4 s for 500 instances).
    """

    def __init__(self) -> None:
        self._processes: dict[int, psutil.Process] = {}

    def __call__(self, leaders: list[int]) -> dict[int, Reading]:
        """The reading of each group whose leader (its pgid) is alive."""
        groups: dict[int, list[int]] = {leader: [] for leader in leaders}
        for pid in psutil.pids():
            try:
                pgid = os.getpgid(pid)
            except OSError:
                continue
            if pgid in groups:
                groups[pgid].append(pid)
        known, self._processes = self._processes, {}
        readings = {}
        for leader, members in groups.items():
            if leader not in members:
                continue  # the leader is gone: the supervisor settles the instance
            reading = Reading(time.time())
            for pid in members:
                self._add(reading, known.get(pid) or pid)
            if reading.members:
                readings[leader] = reading
        return readings

    def _add(self, reading: Reading, process: psutil.Process | int) -> None:
        """Add one member to the reading (a member that vanished meanwhile adds nothing)."""
        try:
            if isinstance(process, int):
                process = psutil.Process(process)
            with process.oneshot():
                times = process.cpu_times()
                reading.cpu[(process.pid, process.create_time())] = times.user + times.system
                reading.members += 1
                self._processes[process.pid] = process
                reading.rss += process.memory_info().rss
                reading.threads += process.num_threads()
                reading.fds += process.num_fds()
        except psutil.NoSuchProcess:
            return  # a zombie answers cpu_times and then nothing: counted with what it gave
        except psutil.AccessDenied:
            return


def in_thread(reactor: Any, reader: Callable[[list[int]], dict[int, Reading]]) -> Read:
    """``reader`` run in the reactor's thread pool: the reactor never waits on ``/proc``."""
    return lambda leaders: threads.deferToThreadPool(
        reactor, reactor.getThreadPool(), reader, leaders
    )


SAMPLE = struct.Struct("<dfqiii")  # at, cpu, rss, fds, threads, children: 32 bytes


class Series:
    """The last ``keep`` samples of one instance, oldest first, packed (32 bytes each: 500
    instances keep an hour in 29 MiB, where a deque of tuples took 152 MiB)."""

    def __init__(self, keep: int = KEEP) -> None:
        self._keep = keep
        self._data = bytearray()
        self._next = 0  # the slot the next sample goes to, once full

    def __len__(self) -> int:
        return len(self._data) // SAMPLE.size

    def add(self, at: float, usage: dict[str, Any]) -> None:
        packed = SAMPLE.pack(
            at, usage["cpu"], usage["rss"], usage["fds"], usage["threads"], usage["children"]
        )
        if len(self) < self._keep:
            self._data += packed
            return
        start = self._next * SAMPLE.size
        self._data[start : start + SAMPLE.size] = packed
        self._next = (self._next + 1) % self._keep

    def __iter__(self) -> Iterator[tuple[float, float, int, int, int, int]]:
        count = len(self)
        for i in range(count):
            slot = (self._next + i) % count if count == self._keep else i
            yield SAMPLE.unpack_from(self._data, slot * SAMPLE.size)

    def since(self, cutoff: float) -> list[dict[str, Any]]:
        """The samples taken at ``cutoff`` or later, oldest first, as the REST API shows them."""
        return [
            {
                "at": isotime(at),
                "cpu": round(cpu, 1),
                "rss": rss,
                "fds": fds,
                "threads": threads,
                "children": children,
            }
            for at, cpu, rss, fds, threads, children in self
            if at >= cutoff
        ]


class UsageSampler(TimerService):
    """Samples every running instance each ``interval`` seconds (one reading at a time: a
    tick while one is under way waits for it); its own errors are logged, never fatal."""

    log = Logger()

    def __init__(
        self,
        registry: Registry,
        clock: Any,
        read: Read,
        interval: float = INTERVAL,
        keep: int = KEEP,
    ) -> None:
        super().__init__(interval, self._tick)
        self.clock = clock
        self.interval = interval
        self._registry = registry
        self._read = read
        self._keep = keep
        self._series: dict[str, Series] = {}
        self._last: dict[str, Reading] = {}
        self.cpu_seconds: dict[str, float] = {}  # per instance id, since this control plane
        self.ticks = 0

    def _tick(self) -> defer.Deferred:
        running = [i for i in self._registry.active() if i.status in LIVE and i.pid]
        pids = [i.pid for i in running]
        reading = defer.maybeDeferred(self._read, pids) if running else defer.succeed({})
        reading.addCallback(self._sampled, running, pids)
        return reading.addErrback(self._failed)

    def _failed(self, failure: Any) -> None:
        self.log.failure("usage sample failed", failure)

    def _sampled(
        self, readings: dict[int, Reading], running: list[Instance], pids: list[int]
    ) -> None:
        """Turn the readings into samples, keep them, publish one frame for all of them
        (stamped now: the readings are as of a moment ago)."""
        self.ticks += 1
        at = self.clock.seconds()
        stamp = isotime(at)
        sampled = []
        for instance, pid in zip(running, pids, strict=True):
            reading = readings.get(pid)
            if reading is None or instance.pid != pid or instance.status not in LIVE:
                continue  # gone, or restarted, while it was read
            usage = self._usage(instance.id, reading)
            usage["at"] = stamp
            series = self._series.get(instance.id)
            if series is None:
                series = self._series[instance.id] = Series(self._keep)
            series.add(at, usage)
            sampled.append((instance, usage))
        self._forget_deleted()
        self._registry.sampled(sampled, stamp)

    def _usage(self, instance_id: str, reading: Reading) -> dict[str, Any]:
        """A sample: CPU % of one core over the interval since the group's last reading
        (since each new process's creation for the processes it had not seen)."""
        last = self._last.get(instance_id)
        self._last[instance_id] = reading
        spent, since = 0.0, reading.wall
        for key, cpu in reading.cpu.items():
            before = last.cpu.get(key) if last is not None else None
            spent += cpu - before if before is not None else cpu
            since = min(since, key[1] if before is None else last.wall)  # type: ignore[union-attr]
        spent = max(0.0, spent)
        self.cpu_seconds[instance_id] = self.cpu_seconds.get(instance_id, 0.0) + spent
        elapsed = reading.wall - since
        return {
            "cpu": round(100.0 * spent / elapsed, 1) if elapsed > 0 else 0.0,
            "rss": reading.rss,
            "fds": reading.fds,
            "threads": reading.threads,
            "children": reading.members - 1,
        }

    def _forget_deleted(self) -> None:
        for instance_id in [i for i in self._series if self._registry.by_id(i) is None]:
            self._series.pop(instance_id, None)
            self._last.pop(instance_id, None)
            self.cpu_seconds.pop(instance_id, None)

    def series(self, instance: Instance, minutes: int) -> list[dict[str, Any]]:
        """The instance's samples of the last ``minutes`` minutes, oldest first."""
        series = self._series.get(instance.id)
        if series is None:
            return []
        return series.since(self.clock.seconds() - 60.0 * minutes)
