"""Case 8: a client that never reads (SO_RCVBUF 4096) on each stream, under load, costs
bounded memory, is resynchronised (or just behind in the file) when it reads again, and
does not slow a normal client down."""

from __future__ import annotations

import re
import socket
import sys
from datetime import datetime

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import LoopingCall

from cpstream.streams.settings import SEND_BUFFER
from tests.hardening import raw
from tests.hardening.conftest import Sampler
from tests.hardening.report import SOAK, record, size
from tests.stats import percentile
from tests.support import global_reactor, instance_log, post_json, sequenced, sleep, wait_for
from tests.wsclient import WSClient

LOUD = size(10, 50)
LINES_PER_SECOND = 200
STATUS_HZ = size(60, 20)
MESSAGES_HZ = size(60, 20)
DURATION = size(25.0, 60.0)
LINE = re.compile(rb"busy line (\d+)")
# A real child writing LINES_PER_SECOND numbered lines to its log, in 10 bursts a second
# (the demo agent's --log-rate costs 3-5 % of a core each: 50 of them would fill 2 cores).
LOG_WRITER = [
    sys.executable,
    "-c",
    "import os, time\n"
    "n = 0\n"
    "while True:\n"
    f"    burst = ''.join(f'busy line {{n + i}}\\n' for i in range({LINES_PER_SECOND // 10}))\n"
    "    os.write(1, burst.encode())\n"
    f"    n += {LINES_PER_SECOND // 10}\n"
    "    time.sleep(0.1)\n",
]


class Lag:
    """Reads a normal client's frames as they arrive; publish-to-receipt latency of each."""

    def __init__(self, client: WSClient) -> None:
        self.client = client
        self.latencies: list[float] = []
        self.running = True
        self.done = defer.ensureDeferred(self._read())

    async def _read(self) -> None:
        while self.running:
            try:
                frame = await self.client.frame(timeout=0.5)
            except defer.TimeoutError:
                continue
            stamp = frame.get("timestamp")
            if stamp and frame["type"] != "snapshot":
                sent = datetime.fromisoformat(stamp).timestamp()
                self.latencies.append(global_reactor.seconds() - sent)

    async def stop(self) -> None:
        self.running = False
        await self.done


def last_line_number(path) -> int:
    numbers = LINE.findall(path.read_bytes()[-4096:])
    return int(numbers[-1]) if numbers else 0


def line_numbers(stream: raw.Stream) -> list[int]:
    numbers = []
    for message in stream.frames().messages:
        for line in message.get("lines", []):
            found = LINE.search(line.encode())
            if found:
                numbers.append(int(found.group(1)))
    return numbers


def contiguous(seqs: list[int]) -> bool:
    return seqs == list(range(seqs[0], seqs[0] + len(seqs))) if seqs else True


def hub_outcome(stream: raw.Stream) -> tuple[bool, bool]:
    """(resynced, consistent): a resync snapshot came, and no delta was skipped without one."""
    frames = stream.frames().messages
    resyncs = [i for i, f in enumerate(frames) if f.get("resync")]
    segments, start = [], 0
    for index in resyncs:
        segments.append(frames[start:index])
        start = index
    segments.append(frames[start:])
    consistent = True
    for segment in segments:
        seqs = [f["seq"] for f in sequenced(segment)]
        consistent = consistent and contiguous(seqs)
    return bool(resyncs), consistent


@pytest.mark.timeout(300 if SOAK else 150)
@pytest_twisted.ensureDeferred
async def test_never_reading_clients_cost_bounded_memory_and_slow_no_one(daemons):
    """Never-reading clients on all three streams under load: bounded RSS, resync, p99 ok."""
    daemon = await daemons.start()
    url, port = daemon.url, daemon.port
    for index in range(LOUD):
        body = {"name": f"loud-{index}", "health": "process", "command": LOG_WRITER}
        assert (await post_json(url + "/api/instances", body))[0] == 201
        await post_json(url + f"/api/instances/loud-{index}/start")
    flippers = [f"flip-{i}" for i in range(8)]
    for name in flippers:
        body = {"name": name, "health": "process", "restart": "never", "command": ["true"]}
        assert (await post_json(url + "/api/instances", body))[0] == 201
    rule = {"from_instance": "flip-0", "to_instance": "flip-1", "type_pattern": "load.*"}
    assert (await post_json(url + "/api/routing-rules", rule))[0] == 201
    log_file = instance_log(daemon.data_dir, "loud-0")
    await wait_for(lambda: log_file.exists() and last_line_number(log_file) > 0, timeout=30)

    stuck = {
        "instances": await raw.open_stream(port, "/ws/instances", rcvbuf=4096),
        "messages": await raw.open_stream(port, "/ws/messages", rcvbuf=4096),
        "logs": await raw.open_stream(port, "/ws/instances/loud-0/logs?backlog=0", rcvbuf=4096),
    }
    for stream in stuck.values():
        await stream.client.until(lambda c, s=stream: s.frames().messages)
        stream.client.transport.pauseProducing()
    normal = {
        "instances": Lag(await WSClient.connect(url, "/ws/instances")),
        "messages": Lag(await WSClient.connect(url, "/ws/messages")),
    }
    normal_logs = await WSClient.connect(url, "/ws/instances/loud-0/logs?backlog=0")

    turn = [0]
    answers: list[defer.Deferred] = []

    def flip() -> None:
        turn[0] += 1
        name = flippers[turn[0] % len(flippers)]
        answers.append(defer.ensureDeferred(post_json(url + f"/api/instances/{name}/start")))

    def send() -> None:
        body = {
            "from_instance": "flip-0",
            "to_instance": "flip-1",
            "message_type": "load.tick",
            "payload": {"n": turn[0]},
        }
        answers.append(defer.ensureDeferred(post_json(url + "/api/messages", body)))

    sampler = Sampler(daemon.pid, every=0.25)
    loops = [LoopingCall(flip), LoopingCall(send)]
    loops[0].start(2 / STATUS_HZ)
    loops[1].start(1 / MESSAGES_HZ)
    await sleep(DURATION)
    for loop in loops:
        loop.stop()
    codes = [code for code, _ in await defer.gatherResults(answers)]
    written_at_end = last_line_number(log_file)
    received_while_stuck = line_numbers(stuck["logs"])
    sampler.stop()

    for stream in stuck.values():
        stream.client.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        stream.client.transport.resumeProducing()
    last_seq = {kind: lag.client.received[-1]["seq"] for kind, lag in normal.items()}
    for kind in ("instances", "messages"):
        await stuck[kind].client.until(
            lambda c, k=kind: any(
                f.get("seq", -1) >= last_seq[k] for f in stuck[k].frames().messages[-3:]
            ),
            timeout=30,
        )
    await stuck["logs"].client.until(
        lambda c: (line_numbers(stuck["logs"]) or [0])[-1] >= written_at_end, timeout=30
    )
    for lag in normal.values():
        await lag.stop()
    outcome = {kind: hub_outcome(stuck[kind]) for kind in ("instances", "messages")}
    numbers = line_numbers(stuck["logs"])
    normal_numbers = [
        int(m.group(1)) for f in normal_logs.received for line in f.get("lines", [])
        if (m := LINE.search(line.encode()))
    ]  # fmt: skip
    latencies = normal["instances"].latencies + normal["messages"].latencies
    p99 = percentile(latencies, 0.99) * 1000
    deltas = {kind: len(lag.latencies) for kind, lag in normal.items()}
    for stream in stuck.values():
        stream.client.abort()
    for lag in normal.values():
        await lag.client.close()
    await normal_logs.close()

    assert set(codes) <= {200, 201, 409}, sorted(set(codes))  # 409: that one still starting
    assert all(resynced and consistent for resynced, consistent in outcome.values()), outcome
    assert contiguous(numbers) and numbers[-1] >= written_at_end, numbers[-5:]
    behind = written_at_end - (received_while_stuck[-1] if received_while_stuck else 0)
    assert behind > LINES_PER_SECOND, behind
    assert contiguous(normal_numbers)
    assert sampler.growth_kib < 20 * 1024, sampler.growth_kib
    assert p99 < 250, p99
    resynced = [kind for kind, (yes, _) in outcome.items() if yes]
    record(
        "8 never-reading client",
        f"SO_RCVBUF 4096 clients that stop reading on all 3 streams for {DURATION:g} s while "
        f"{LOUD} instances log {LINES_PER_SECOND} lines/s each, status changes at "
        f"{STATUS_HZ} Hz ({deltas['instances']} deltas) and {MESSAGES_HZ} messages/s",
        f"resync snapshot on: {', '.join(resynced)}; no delta skipped without one; the log "
        f"viewer was {behind} lines behind, then caught up with no line missing",
        f"RSS growth {sampler.growth_kib / 1024:.1f} MB; normal client p99 {p99:.1f} ms over "
        f"{sum(deltas.values())} deltas",
        rss_growth_kib=sampler.growth_kib,
        p99_ms=round(p99, 1),
        deltas=deltas,
        log_lines_behind=behind,
        resynced=resynced,
    )


@pytest_twisted.ensureDeferred
async def test_a_client_that_stops_reading_is_paused_within_a_small_socket_buffer(cp):
    """The kernel holds at most 128 KiB for a stuck client, so it pauses and lags early."""
    port = cp.service.web.port.getHost().port
    await post_json(cp.api("/instances"), {"name": "a"})
    stream = await raw.open_stream(port, "/ws/instances", rcvbuf=4096)
    await stream.client.until(lambda c: stream.frames().messages)
    stream.client.transport.pauseProducing()
    server = next(iter(cp.service.streams.connections))
    instance = cp.registry.get("a")
    published = 0
    while not server._subscription.lagged and published < 20_000:
        for _ in range(50):
            cp.registry.set_status(instance, "running" if published % 2 else "unhealthy", pid=1)
            published += 1
        await sleep(0.001)
    kernel = server.transport.getHandle().getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    stream.client.abort()
    assert kernel <= 2 * SEND_BUFFER and server._subscription.lagged
    assert published < 2_000, published
