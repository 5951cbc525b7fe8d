"""Case 7: slowloris. Drippers and half-sent requests are cut off by the request deadlines
while a normal client polling every 200 ms keeps its latency."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import LoopingCall

from cpstream.web.deadline import BODY_DEADLINE, HEADERS_DEADLINE
from tests.hardening import raw
from tests.hardening.conftest import open_fds
from tests.hardening.report import record, size
from tests.stats import percentile
from tests.support import global_reactor, http, sleep, wait_for

DRIPPERS = size(50, 200)
IDLE = size(20, 50)
SLACK = 1.0


class Poller:
    """A normal client: GET /api/health every 200 ms on a kept-alive connection."""

    def __init__(self, url: str) -> None:
        self._url = url + "/api/health"
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self._loop = LoopingCall(self._poll)

    def start(self) -> None:
        self._loop.start(0.2)

    def stop(self) -> None:
        self._loop.stop()

    async def _once(self) -> None:
        started = global_reactor.seconds()
        try:
            response = await http.get(self._url, timeout=5)
            await response.json()
            if response.code != 200:
                self.errors.append(f"status {response.code}")
        except Exception as e:  # the figure counts every kind of failure
            self.errors.append(repr(e))
            return
        self.latencies.append(global_reactor.seconds() - started)

    def _poll(self) -> defer.Deferred:
        return defer.ensureDeferred(self._once())


def dripper(client: raw.Raw, data: bytes) -> LoopingCall:
    """Send ``data`` one byte a second, never finishing."""
    position = [0]

    def drip() -> None:
        if position[0] < len(data):
            client.write(data[position[0] : position[0] + 1])
            position[0] += 1

    loop = LoopingCall(drip)
    loop.start(1.0)
    return loop


@pytest.mark.timeout(180)
@pytest_twisted.ensureDeferred
async def test_slowloris_is_cut_off_while_a_normal_client_keeps_its_latency(daemons):
    """Header drippers and idle half-requests go at 10 s, a 1 B/s body at 30 s; p99 < 100 ms."""
    daemon = await daemons.start()
    port, host = daemon.port, f"127.0.0.1:{daemon.port}"
    poller = Poller(daemon.url)
    poller.start()
    await sleep(1.0)
    fds_before = open_fds(daemon.pid)  # the poller's kept-alive connection included

    header = f"GET /api/health HTTP/1.1\r\nHost: {host}\r\nX-Slow: ".encode() + b"a" * 100
    drippers = [await raw.connect(port) for _ in range(DRIPPERS)]
    loops = [dripper(client, header) for client in drippers]
    idle = [await raw.connect(port) for _ in range(IDLE)]
    for client in idle:
        client.write(f"GET /api/instances HTTP/1.1\r\nHost: {host}\r\n".encode())
    body = await raw.connect(port)
    body.write(raw.json_post("/api/instances", host, ("Content-Length", "100")))
    body_headers_at = global_reactor.seconds()
    loops.append(dripper(body, b'{"name": "slow"' + b" " * 84 + b"}"))
    everyone = [*drippers, *idle, body]
    assert all(not c.closed for c in everyone)

    await wait_for(
        lambda: all(c.closed for c in everyone), timeout=BODY_DEADLINE + HEADERS_DEADLINE
    )
    for loop in loops:
        loop.stop()
    await sleep(1.0)
    poller.stop()

    header_held = max(c.lost_at - c.made_at for c in [*drippers, *idle])
    body_held = body.lost_at - body_headers_at
    answered_408 = sum(b" 408 " in c.data for c in everyone)
    p99 = percentile(poller.latencies, 0.99) * 1000
    assert header_held <= HEADERS_DEADLINE + SLACK, header_held
    assert BODY_DEADLINE - SLACK <= body_held <= BODY_DEADLINE + SLACK, body_held
    assert answered_408 == len(everyone)
    assert poller.errors == [] and p99 < 100, (poller.errors, p99)
    await wait_for(lambda: open_fds(daemon.pid) <= fds_before, timeout=5)
    log_lines = daemon.log_text().count("too slow to send its request")
    assert log_lines <= 5, log_lines
    record(
        "7 slowloris",
        f"{DRIPPERS} connections dripping header bytes at 1 B/s, {IDLE} idle after partial "
        "headers, 1 body at 1 B/s; a client polling /api/health every 200 ms",
        "every slow connection answered 408 and closed; fds back to baseline; "
        f"{log_lines} log lines",
        f"headers cut at <= {header_held:.1f} s, body at {body_held:.1f} s; poller p99 "
        f"{p99:.1f} ms over {len(poller.latencies)} polls, 0 errors",
        header_held_s=round(header_held, 2),
        body_held_s=round(body_held, 2),
        poll_p99_ms=round(p99, 1),
        polls=len(poller.latencies),
    )
