"""What sampling the usage of 500 running instances costs the reactor, per tick.

500 real processes (``sleep``, each in a session of its own, as the supervisor
starts children) stand for 500 running instances of a real registry (SQLite
file, hub with one subscriber, so each tick also encodes and writes its
``usage_changed`` frame). :class:`~cpstream.domain.usage.UsageSampler` samples
them on the real reactor with its production reader, psutil in a worker thread.
Per tick it measures the reactor's own time (the tick's start plus turning the
readings into samples, the series and the frame), the worker's reading time,
and how late a 1 ms probe timer ran on the reactor meanwhile, against the same
probe's lateness in the 2 s before the sampler started. The process is not
pinned (the worker thread may use the other core; the GIL is shared). Each
figure is the median of ``--repeat`` runs of ``--ticks`` ticks, with the spread.

    python -m bench.sampling [--instances 500] [--ticks 20] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.stats import percentile

TARGET_MS = 10.0
QUIET = 2.0  # seconds of probing before the sampler starts: the reactor's own lateness


def one_run(instances: int, ticks: int, interval: float) -> dict:
    """One run in this process (the reactor runs once per process: run.py spawns each)."""
    from twisted.internet import reactor, task

    from cpstream.domain.hub import Hub
    from cpstream.domain.registry import Registry
    from cpstream.domain.store import Store
    from cpstream.domain.usage import GroupReader, UsageSampler, in_thread

    children = [
        subprocess.Popen(["sleep", "600"], start_new_session=True) for _ in range(instances)
    ]
    folder = tempfile.TemporaryDirectory()
    try:
        store = Store.open(Path(folder.name) / "cp.db")
        hub = Hub(reactor)
        registry = Registry(store, hub, reactor, ["sleep"])
        for n, child in enumerate(children):
            instance = registry.create(f"i{n}", port=20000 + n)
            registry.set_status(instance, "running", pid=child.pid)
        sink = Sink()
        sink.subscription = hub.subscribe(lambda event: True, sink)
        reader = GroupReader()
        reads: list[float] = []

        def timed_read(leaders: list[int]) -> dict:
            started = time.perf_counter()
            try:
                return reader(leaders)
            finally:
                reads.append((time.perf_counter() - started) * 1000)

        sampler = UsageSampler(registry, reactor, in_thread(reactor, timed_read), interval)
        costs: list[float] = []
        tick, sampled = sampler._tick, sampler._sampled
        pending: list[float] = []

        def timed_tick():
            started = time.perf_counter()
            result = tick()
            pending.append((time.perf_counter() - started) * 1000)
            return result

        def timed_sampled(*args):
            started = time.perf_counter()
            sampled(*args)
            costs.append(pending.pop(0) + (time.perf_counter() - started) * 1000)

        sampler._tick, sampler._sampled = timed_tick, timed_sampled
        sampler.call = (timed_tick, (), {})
        late: list[float] = []
        expected = [0.0]

        def probe() -> None:
            now = time.perf_counter()
            if expected[0]:
                late.append((now - expected[0]) * 1000)
            expected[0] = now + 0.001

        probing = task.LoopingCall(probe)
        quiet: list[float] = []

        def sample() -> None:
            quiet.extend(late)
            del late[:]
            sampler.startService()
            reactor.callLater(0.5, finish)

        def finish() -> None:
            if len(costs) >= ticks + 1:
                probing.stop()
                sampler.stopService().addCallback(lambda _: reactor.stop())
            else:
                reactor.callLater(0.1, finish)

        reactor.callWhenRunning(probing.start, 0.001)
        reactor.callLater(QUIET, sample)
        reactor.run()
        store.close()
    finally:
        for child in children:
            child.kill()
        for child in children:
            child.wait()
        folder.cleanup()
    steady = costs[1:]  # the first tick builds every series and psutil.Process
    return {
        "instances": instances,
        "ticks": len(steady),
        "reactor_ms": percentile(steady, 0.5),
        "reactor_max_ms": max(steady),
        "first_tick_ms": costs[0],
        "read_ms": percentile(reads[1:], 0.5),
        "probe_late_p99_ms": percentile(late, 0.99),
        "probe_late_max_ms": max(late),
        "quiet_late_p99_ms": percentile(quiet, 0.99),
        "quiet_late_max_ms": max(quiet),
        "frames": sink.frames,
    }


class Sink:
    """The hub's one subscriber: counts what it is handed."""

    subscription = None
    frames = 0

    def write_frames(self, frames: list) -> None:
        self.frames += len(frames)

    def resync(self) -> None:
        self.subscription.resynced()


def sampling_cost(instances: int = 500, ticks: int = 20, repeat: int = 3) -> dict:
    """Median of ``repeat`` runs (each a process of its own), with the spread."""
    runs = []
    for _ in range(repeat):
        argv = [sys.executable, "-m", "bench.sampling", "--one", "--instances", str(instances)]
        argv += ["--ticks", str(ticks)]
        done = subprocess.run(argv, capture_output=True, text=True, check=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    keys = [k for k in runs[0] if k not in ("instances", "ticks", "frames")]
    return {
        "instances": instances,
        "runs": runs,
        "median": {k: percentile([r[k] for r in runs], 0.5) for k in keys},
        "min": {k: min(r[k] for r in runs) for k in keys},
        "max": {k: max(r[k] for r in runs) for k in keys},
        "target_ms": TARGET_MS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--ticks", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--one", action="store_true", help="one run in this process (JSON)")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(args.instances, args.ticks, args.interval)))
        return
    print(json.dumps(sampling_cost(args.instances, args.ticks, args.repeat), indent=2))


if __name__ == "__main__":
    main()
