"""The asyncio load generator: N raw WebSocket clients that count (and time) event frames.

The benchmarks run ``bench/loadgen.c`` (same arguments, same output), which costs a
fraction of this one's CPU; this one stays for comparison (``CPSTREAM_LOADGEN=python``).
Kept lean: one asyncio protocol per
client (uvloop when installed), the opening handshake built by hand
(:func:`tests.wsraw.upgrade`, standard library only like :mod:`tests.stats`), and
no per-frame parsing in saturation mode — event frames are counted with
``bytes.count`` on the ``"timestamp":"`` key that every event frame carries
once. In latency mode each frame's own ``timestamp`` (the wall-clock time the
server stamped at publish, on this same machine) is subtracted from the
wall-clock time of the read.

Prints ``connected`` once every client has its first frame, then one JSON
line with the results once every client has ``--events`` event frames (or
``--timeout`` passes):

    python -m bench.loadgen --port P --clients 1000 --events 200 [--latency]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from datetime import datetime

from tests.stats import percentile
from tests.wsraw import upgrade

KEY = b'"timestamp":"'
STAMP = len("2026-01-01T00:00:00.000000Z")
_midnights: dict[bytes, float] = {}


def stamp_seconds(stamp: bytes) -> float:
    """Epoch seconds of a frame's ``timestamp`` (``YYYY-MM-DDTHH:MM:SS.ffffffZ``, UTC)."""
    day = stamp[:10]
    midnight = _midnights.get(day)
    if midnight is None:
        midnight = _midnights[day] = datetime.fromisoformat(day.decode() + "T00:00:00+00:00")
        midnight = _midnights[day] = midnight.timestamp()
    return midnight + int(stamp[11:13]) * 3600 + int(stamp[14:16]) * 60 + float(stamp[17:26])


RESYNC = b'"resync":true'


class Client(asyncio.Protocol):
    def __init__(self, run: Run) -> None:
        self.run = run
        self.buffer = b""
        self.upgraded = False
        self.events = 0
        self.first_frame = False
        self.carry = b""
        self.last = 0.0

    def connection_made(self, transport) -> None:
        self.transport = transport
        headers = [("Authorization", f"Bearer {self.run.token}")] if self.run.token else []
        transport.write(upgrade(self.run.path, f"127.0.0.1:{self.run.port}", headers))

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if not self.upgraded:
            self.buffer += data
            if b"\r\n\r\n" not in self.buffer:
                return
            head, data = self.buffer.split(b"\r\n\r\n", 1)
            if not head.startswith(b"HTTP/1.1 101"):
                self.run.failed(head.split(b"\r\n")[0].decode())
                return
            self.upgraded = True
            self.buffer = b""
        if not data:
            return
        self.run.reads += self.run.measuring
        if not self.first_frame:
            self.first_frame = True
            self.run.connected_one()
        chunk = self.carry + data
        if RESYNC in chunk:
            self.run.resyncs += 1
        if self.run.latency:
            found, start = 0, 0
            while True:
                at = chunk.find(KEY, start)
                end = at + len(KEY) + STAMP if at >= 0 else -1
                if end < 0 or end > len(chunk):
                    break
                self.run.latencies.append(now - stamp_seconds(chunk[at + len(KEY) : end]))
                found, start = found + 1, end
            self.carry = chunk[at:] if at >= 0 else chunk[-(len(KEY) - 1) :]
        else:
            found = chunk.count(KEY)
            self.carry = chunk[-(len(KEY) - 1) :]
        if found:
            self.events += found
            self.last = now
            self.run.delivered(found, self)

    def connection_lost(self, exc) -> None:
        self.run.lost += 1


class Run:
    def __init__(
        self, port: int, path: str, clients: int, events: int, latency: bool, token: str | None
    ) -> None:
        self.port = port
        self.token = token
        self.path = path
        self.clients = clients
        self.events = events
        self.latency = latency
        self.latencies: list[float] = []
        self.connected = asyncio.get_running_loop().create_future()
        self.finished = asyncio.get_running_loop().create_future()
        self.connected_count = 0
        self.complete = 0
        self.total = 0
        self.resyncs = 0
        self.lost = 0
        self.reads = 0
        self.measuring = False
        self.members: list[Client] = []

    def failed(self, why: str) -> None:
        if not self.connected.done():
            self.connected.set_exception(RuntimeError(f"handshake refused: {why}"))

    def connected_one(self) -> None:
        self.connected_count += 1
        if self.connected_count == self.clients and not self.connected.done():
            self.connected.set_result(None)

    def delivered(self, count: int, client: Client) -> None:
        self.total += count
        if client.events >= self.events and client.events - count < self.events:
            self.complete += 1
            if self.complete == self.clients and not self.finished.done():
                self.finished.set_result(None)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/ws/instances")
    parser.add_argument("--token", help="the operator token, if the server wants one")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--latency", action="store_true")
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--hold", action="store_true", help="stay connected until stdin closes")
    args = parser.parse_args()
    loop = asyncio.get_running_loop()
    run = Run(args.port, args.path, args.clients, args.events, args.latency, args.token)
    for _ in range(args.clients):
        _, client = await loop.create_connection(lambda: Client(run), "127.0.0.1", args.port)
        run.members.append(client)
    await asyncio.wait_for(run.connected, 60)
    sys.stdout.write("connected\n")
    sys.stdout.flush()
    if args.hold:
        await loop.run_in_executor(None, sys.stdin.read)
        return
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.time()
    run.measuring = True
    try:
        await asyncio.wait_for(run.finished, args.timeout)
        timed_out = False
    except TimeoutError:
        timed_out = True
    ended = time.time()
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    last = max((c.last for c in run.members), default=ended)
    result = {
        "generator": "python",
        "clients": args.clients,
        "events": args.events,
        "deliveries": run.total,
        "expected": args.clients * args.events,
        "resyncs": run.resyncs,
        "lost_connections": run.lost,
        "timed_out": timed_out,
        "wall": ended - started,
        "last_receipt_after_start": last - started,
        "cpu_seconds": cpu,
        "reads": run.reads,
        "events_per_read": run.total / run.reads if run.reads else 0.0,
    }
    if run.latencies:
        ms = [v * 1000 for v in run.latencies]
        result.update(
            p50_ms=percentile(ms, 0.5),
            p99_ms=percentile(ms, 0.99),
            max_ms=max(ms),
        )
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    for client in run.members:
        client.transport.abort()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
