"""Shared by the benchmark servers: the event frame and the stdin command loop.

Every server (cpstream and the references) prints ``ready PORT [TOKEN]`` once it
listens, then obeys one command per stdin line:

``rate COUNT HZ``  publish COUNT events at HZ per second, then print ``done``
``burst COUNT``    publish COUNT events as fast as possible, one per loop turn
``rss``            print ``rss KIB`` (resident set size)
``quit``           stop
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

BENCH_ID = "00000000-0000-4000-8000-000000000000"


def rss_kib(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc."""
    import os

    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reference_frame(seq: int, status: str) -> bytes:
    """The JSON text of a status_changed event shaped exactly like cpstream's."""
    return json.dumps(
        {
            "type": "status_changed",
            "name": "bench",
            "id": BENCH_ID,
            "status": status,
            "pid": 4242,
            "started_at": None,
            "restarts": 0,
            "last_exit": None,
            "seq": seq,
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        },
        separators=(",", ":"),
    ).encode()


def parse_command(line: str) -> tuple[str, list[int]]:
    words = line.split()
    if not words:
        return "", []
    return words[0], [int(float(w)) for w in words[1:]]


def probe_main(doc: str, measure, count: int) -> None:
    """The command line of a latency probe (``--count N [--json]``): run ``measure(reactor,
    count)`` on the reactor and print its figures, in ms, one line per name."""
    import argparse

    from twisted.internet import defer, task

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--count", type=int, default=count)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    async def run(reactor) -> None:
        result = await measure(reactor, args.count)
        if args.json:
            print(json.dumps(result))
            return
        for name, figures in result.items():
            cells = "  ".join(f"{key} {value:7.2f} ms" for key, value in figures.items())
            print(f"{name:26} {cells}  n={args.count}")

    task.react(lambda reactor: defer.ensureDeferred(run(reactor)))
