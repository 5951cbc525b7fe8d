"""permessage-deflate (RFC 7692) on the streams: what it costs the server, what it saves.

Runs the real control plane in a subprocess twice: as shipped (compression
accepted on the log stream and ``/ws/echo`` only) and with compression accepted
on every stream. Every client offers permessage-deflate, so the two runs differ
only in the server's settings. It measures:

* ``/ws/messages`` and ``/ws/instances`` with N clients and E events made
  through REST: server CPU per delivered frame, wire bytes per frame, server
  memory (RSS) per connection;
* ``/ws/instances/NAME/logs``: wire bytes per log line, compressed and not.

    .venv/bin/python bench/compression.py [--clients 200] [--events 200] [--json]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import uuid
import zlib
from pathlib import Path

from twisted.internet import defer, task

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cpstream.streams.settings import ECHO, INSTANCES, LOGS, MESSAGES, StreamSettings  # noqa: E402
from tests.support import Daemon, post_json, sleep, wait_for  # noqa: E402
from tests.wsclient import WSClient  # noqa: E402

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
MODES = {
    "shipped": StreamSettings(),
    "all-compressed": StreamSettings(compressed=frozenset({INSTANCES, MESSAGES, LOGS, ECHO})),
}
TICKS = os.sysconf("SC_CLK_TCK")


def serve(mode: str, argv: list[str]) -> None:
    """The server side: the real control plane, built with ``mode``'s stream settings."""
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from cpstream import tap
    from cpstream.streams.connections import Streams

    config = tap.Options()
    config.parseOptions(argv)
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    # The bench wraps the composition root from outside: its Streams get ``mode``'s settings.
    tap.Streams = functools.partial(Streams, settings=MODES[mode])
    service = tap.makeService(config, reactor)
    reactor.callWhenRunning(service.startService)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def deflated_size(message: bytes) -> int:
    """The payload size of ``message`` as the first permessage-deflate message (RFC 7692 7.2.1)."""
    deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return len(deflate.compress(message) + deflate.flush(zlib.Z_SYNC_FLUSH)) - 4


def wire_in(clients: list[WSClient]) -> int:
    return sum(c.protocol.trafficStats.incomingOctetsWireLevel for c in clients)


async def fan_out(daemon: Daemon, path: str, clients: int, produce, sentinel) -> dict:
    """Connect ``clients`` subscribers, run ``produce``, wait for ``sentinel`` everywhere."""
    rss_before = rss_kib(daemon.pid)
    subscribers = []
    for _ in range(clients):
        subscriber = await WSClient.connect(daemon.url, path, compress=True)
        subscribers.append(subscriber)
    await wait_for(lambda: all(s.received for s in subscribers), timeout=60)
    rss_idle = rss_kib(daemon.pid)
    frames_before = sum(len(s.received) for s in subscribers)
    bytes_before, cpu_before = wire_in(subscribers), cpu_seconds(daemon.pid)
    await produce()
    await wait_for(lambda: all(sentinel(s.received[-1]) for s in subscribers), timeout=300)
    result = {
        "clients": clients,
        "compressed": sum(s.compressed for s in subscribers),
        "frames": sum(len(s.received) for s in subscribers) - frames_before,
        "cpu_s": cpu_seconds(daemon.pid) - cpu_before,
        "wire_bytes": wire_in(subscribers) - bytes_before,
        "rss_kib_idle": rss_idle - rss_before,
        "rss_kib_after": rss_kib(daemon.pid) - rss_before,
    }
    for subscriber in subscribers:
        await subscriber.close()
    return result


def marginal(one: dict, many: dict) -> dict:
    """Per delivered frame and per connection, less what one subscriber (and REST) costs."""
    frames = many["frames"] - one["frames"]
    connections = many["clients"] - one["clients"]
    return {
        "clients": many["clients"],
        "compressed_clients": many["compressed"],
        "frames": many["frames"],
        "server_cpu_us_per_frame": round((many["cpu_s"] - one["cpu_s"]) / frames * 1e6, 1),
        "wire_bytes_per_frame": round(many["wire_bytes"] / many["frames"], 1),
        "rss_kib_per_connection_after_snapshot": round(
            (many["rss_kib_idle"] - one["rss_kib_idle"]) / connections, 1
        ),
        "rss_kib_per_connection_after_events": round(
            (many["rss_kib_after"] - one["rss_kib_after"]) / connections, 1
        ),
    }


async def hub_streams(daemon: Daemon, clients: int, events: int) -> dict:
    """Message events and instance events fanned out to 1, then ``clients`` subscribers."""
    api = daemon.url + "/api"
    for port, name in enumerate(("a", "b", "c"), start=19001):
        instance = {"name": name, "port": port, "command": SLEEPER}
        code, body = await post_json(api + "/instances", instance)
        assert code == 201, body
    rule = {"from_instance": "a", "to_instance": "b", "type_pattern": "bench.*"}
    code, body = await post_json(api + "/routing-rules", rule)
    assert code == 201, body

    async def messages(end: str) -> None:
        for n in range(events):
            message = {
                "from_instance": "a",
                "to_instance": "b",
                "message_type": "bench.tick",
                "payload": {"n": n},
                "correlation_id": end if n == events - 1 else str(uuid.uuid4()),
            }
            code, body = await post_json(api + "/messages", message)
            assert code == 201, body

    archived = [False]

    async def lifecycle(end: str) -> None:
        for _ in range(events - 1):
            action = "unarchive" if archived[0] else "archive"
            code, body = await post_json(f"{api}/instances/c/{action}")
            assert code == 200, body
            archived[0] = not archived[0]
        instance = {"name": end, "port": 19100 + len(end), "command": SLEEPER}
        code, body = await post_json(api + "/instances", instance)
        assert code == 201, body

    result = {}
    for path, produce, field in (
        ("/ws/messages", messages, "correlation_id"),
        ("/ws/instances", lifecycle, "name"),
    ):
        runs = []
        for count in (1, clients):
            end = f"end-{count}"
            runs.append(
                await fan_out(
                    daemon,
                    path,
                    count,
                    lambda end=end, produce=produce: produce(end),
                    lambda frame, end=end, field=field: frame.get(field) == end,
                )
            )
        viewer = await WSClient.connect(daemon.url, path, compress=True)
        snapshot = await viewer.frame()
        await viewer.close()
        result[path] = marginal(*runs) | {
            "snapshot_entries": len(snapshot.get("recent_events", snapshot.get("instances", []))),
            "snapshot_json_bytes": len(viewer.raw[0]),
            "snapshot_deflated_bytes": deflated_size(viewer.raw[0]),
        }
    return result


def log_line(n: int) -> bytes:
    """A line shaped like the demo agent's log: timestamp, level, a message with ids."""
    second = f"2026-11-26 02:{n // 600 % 60:02d}:{n // 10 % 60:02d}"
    if n % 5 == 0:
        text = f"INFO heartbeat {n // 5} from agent-1"
    else:
        text = (
            f"INFO received task.handoff {uuid.uuid4()} from agent-2 "
            f"(correlation {uuid.uuid4().hex[:12]}), acknowledged in {n % 97 / 10:.1f} ms"
        )
    return f"{second} {text}\n".encode()


async def log_stream(daemon: Daemon, data_dir: Path, lines: int) -> dict:
    """One viewer offering compression and one not, on the same growing log."""
    code, body = await post_json(daemon.url + "/api/instances", {"name": "logs"})
    assert code == 201, body
    path = data_dir / "instances" / "logs" / "logs" / "daemon.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    viewers = {}
    for compress in (True, False):
        viewer = await WSClient.connect(
            daemon.url, "/ws/instances/logs/logs?backlog=0", compress=compress
        )
        await viewer.frame()
        viewers[compress] = viewer
    start = {k: v.protocol.trafficStats.incomingOctetsWireLevel for k, v in viewers.items()}
    written = 0
    for batch in range(lines // 100):
        payload = b"".join(log_line(batch * 100 + n) for n in range(100))
        written += len(payload)
        with open(path, "ab") as f:
            f.write(payload)
        await sleep(0.15)

    def got_all(viewer: WSClient) -> bool:
        return sum(f.get("count", 0) for f in viewer.received) >= lines

    await wait_for(lambda: all(got_all(v) for v in viewers.values()), timeout=60)
    result = {"lines": lines, "log_bytes_per_line": round(written / lines, 1)}
    for compress, viewer in viewers.items():
        wire = viewer.protocol.trafficStats.incomingOctetsWireLevel - start[compress]
        key = "deflate" if compress else "plain"
        result[f"{key}_negotiated"] = viewer.compressed
        result[f"{key}_wire_bytes_per_line"] = round(wire / lines, 1)
        await viewer.close()
    return result


async def measure(clients: int, events: int, lines: int) -> dict:
    results = {}
    for mode in MODES:
        with tempfile.TemporaryDirectory() as tmp:
            program = (sys.executable, str(Path(__file__).resolve()), "--serve", mode)
            daemon = Daemon(Path(tmp), program=program)
            await daemon.start()
            try:
                results[mode] = await hub_streams(daemon, clients, events)
                if mode == "shipped":
                    results["logs"] = await log_stream(daemon, Path(tmp), lines)
            finally:
                await daemon.stop()
    return results


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        serve(sys.argv[2], sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--lines", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    async def run(reactor):
        result = await measure(args.clients, args.events, args.lines)
        print(json.dumps(result, indent=None if args.json else 2))

    task.react(lambda reactor: defer.ensureDeferred(run(reactor)))


if __name__ == "__main__":
    main()
