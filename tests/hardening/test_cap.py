"""Case 10: past --max-connections an upgrade gets 503; open streams carry on; the refusals
are logged at most once per 10 s."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer

from cpstream.streams.connections import CAP_LOG_EVERY
from tests import wsraw
from tests.hardening import raw
from tests.hardening.report import record
from tests.support import global_reactor, post_json, sleep
from tests.wsclient import WSClient

CAP = 20
PATHS = ("/ws/instances", "/ws/messages", "/ws/instances/a/logs")


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_connection_cap_refuses_with_503_and_logs_sparingly(daemons):
    """Upgrades over the cap get 503 (no frame) for 11 s; the open ones keep receiving."""
    daemon = await daemons.start("--max-connections", str(CAP))
    url, port, host = daemon.url, daemon.port, f"127.0.0.1:{daemon.port}"
    await post_json(url + "/api/instances", {"name": "a"})
    clients = [await WSClient.connect(url, PATHS[n % 3]) for n in range(CAP)]
    for client in clients:
        await client.frame()

    refused, took, started = [], [], global_reactor.seconds()
    while global_reactor.seconds() - started < CAP_LOG_EVERY + 1:
        attempts = [
            defer.ensureDeferred(raw.exchange(port, wsraw.upgrade(PATHS[n % 3], host)))
            for n in range(10)
        ]
        sent_at = global_reactor.seconds()
        answers = await defer.gatherResults(attempts)
        took.append(global_reactor.seconds() - sent_at)
        refused += answers
        await sleep(0.5)
    elapsed = global_reactor.seconds() - started

    await post_json(url + "/api/instances", {"name": "b"})
    for client in clients[::3]:
        assert (await client.frame_of("instance_created"))["name"] == "b"
    assert all(not client.closed.called for client in clients)
    await clients[0].close()
    spare = await raw.open_stream(port, "/ws/instances")
    spare.client.abort()
    for client in clients[1:]:
        await client.close()

    log_lines = daemon.log_text().count("refusing WebSocket upgrades")
    statuses = {answer.status for answer in refused}
    assert statuses == {503} and all(a.json()["error"] and not a.rest for a in refused)
    assert log_lines <= elapsed // CAP_LOG_EVERY + 1, log_lines
    record(
        "10 connection cap",
        f"--max-connections {CAP}: {CAP} open streams, then {len(refused)} more upgrades over "
        f"{elapsed:.0f} s",
        "every extra upgrade 503 JSON before any frame; every open stream kept receiving; "
        "a freed slot is usable at once",
        f"{len(refused)}/{len(refused)} refused with 503 (batch of 10 answered in "
        f"{max(took) * 1000:.0f} ms at worst); {log_lines} log lines in {elapsed:.0f} s",
        refused=len(refused),
        log_lines=log_lines,
    )
