"""Case 9: connection churn. Rounds of many concurrent stream clients, half closing cleanly
and half resetting, leave no file descriptor, timer or subscription behind."""

from __future__ import annotations

import socket
import struct
from collections import Counter
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

from tests import wsraw
from tests.hardening import raw
from tests.hardening.conftest import open_fds, rss_kib
from tests.hardening.report import SOAK, record
from tests.support import global_reactor, post_json, sleep, wait_for

CLIENTS = 1000
ROUNDS = 10
BATCH = 40  # below the listen backlog (50), so no SYN waits for a retransmit
PATHS = ("/ws/instances", "/ws/messages", "/ws/instances/a/logs")


async def open_one(port: int, path: str) -> raw.Stream:
    stream = await raw.open_stream(port, path)
    await stream.client.until(lambda c: stream.frames().messages, timeout=10)
    return stream


async def churn(port: int, clients: int) -> None:
    """Open ``clients`` streams at once (in connect batches), then end half cleanly, half
    with a TCP reset, and wait until every connection is gone."""
    streams: list[raw.Stream] = []
    for start in range(0, clients, BATCH):
        batch = [
            defer.ensureDeferred(open_one(port, PATHS[n % len(PATHS)]))
            for n in range(start, min(clients, start + BATCH))
        ]
        streams += await defer.gatherResults(batch)
    for index, stream in enumerate(streams):
        if index % 2:
            handle = stream.client.transport.getHandle()
            handle.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            stream.client.abort()
        else:
            stream.client.write(wsraw.frame(wsraw.OP_CLOSE, struct.pack("!H", 1000)))
    await wait_for(lambda: all(s.client.closed for s in streams), timeout=30)
    clean = [s for i, s in enumerate(streams) if not i % 2]
    assert all(s.frames().close_code == 1000 for s in clean)


@pytest.mark.timeout(600 if SOAK else 120)
@pytest_twisted.ensureDeferred
async def test_churn_leaves_fds_at_baseline_and_rss_flat(daemons):
    """Every round ends with exactly the baseline fds; RSS stops growing."""
    daemon = await daemons.start()
    await post_json(daemon.url + "/api/instances", {"name": "a"})
    await sleep(0.5)
    baseline = open_fds(daemon.pid)
    fds_after, rss = [], []
    started = global_reactor.seconds()
    for _ in range(ROUNDS):
        await churn(daemon.port, CLIENTS)
        await wait_for(lambda: open_fds(daemon.pid) <= baseline, timeout=10)
        await sleep(0.3)
        fds_after.append(open_fds(daemon.pid))
        rss.append(rss_kib(daemon.pid))
    took = global_reactor.seconds() - started
    tail = rss[-5:]
    growth = (tail[-1] - tail[0]) / tail[0] * 100
    assert fds_after == [baseline] * ROUNDS, (baseline, fds_after)
    assert growth < 2, rss
    record(
        "9 connection churn",
        f"{ROUNDS} rounds of {CLIENTS} concurrent stream clients over the 3 streams, "
        "half closing with 1000, half with a TCP reset",
        "every clean close answered 1000; open fds back to the baseline after every round; "
        "no timer or subscription left (in-process check)",
        f"fds {baseline} before, {fds_after[-1]} after each round; RSS over the last "
        f"{len(tail)} rounds {tail[0] / 1024:.1f} -> {tail[-1] / 1024:.1f} MB ({growth:+.2f} %); "
        f"{ROUNDS * CLIENTS / took:.0f} connections/s",
        baseline_fds=baseline,
        fds_after=fds_after,
        rss_kib=rss,
        growth_pct=round(growth, 2),
    )


def _tails(cp: Any) -> Any:
    """The log followers, reached through the resource tree (internals, for leak checks)."""
    site = cp.service.web._site
    instances = site.resource.children[b"ws"].children[b"instances"]
    return instances._logs._factory.tails


def _timers() -> Counter:
    """Pending DelayedCalls by what they will call (a LoopingCall's next tick counts as one)."""
    return Counter(repr(call.func) for call in global_reactor.getDelayedCalls())


@pytest_twisted.ensureDeferred
async def test_churn_leaves_no_timer_or_subscription(cp):
    """After churn, no DelayedCall, hub subscription, connection or log watcher is left."""
    await post_json(cp.api("/instances"), {"name": "a"})
    port = cp.service.web.port.getHost().port
    await sleep(0.5)
    timers_before = _timers()
    for _ in range(2):
        await churn(port, 150)
    await wait_for(lambda: not cp.service.streams.connections, timeout=10)
    await sleep(0.5)
    left = _timers() - timers_before
    hubs = tuple(cp.service.hubs.values())
    assert [hub.subscribers for hub in hubs] == [0, 0]
    assert _tails(cp).watching == 0
    assert not left, left
