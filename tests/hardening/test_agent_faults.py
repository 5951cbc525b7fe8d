"""Case 11: agents that crash, ignore SIGTERM, fork, are raced, and a daemon killed -9."""

from __future__ import annotations

import os
import re
import signal
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer

from tests.hardening.report import record
from tests.support import (
    ROOT,
    create,
    get_json,
    global_reactor,
    http,
    instance_log,
    post_json,
    processes_with,
    sleep,
    wait_for,
)
from tests.wsclient import WSClient

AGENT = [sys.executable, "-m", "cpstream.agent", "--no-health"]


async def started(daemon, name: str, *flags: str, ready: str) -> int:
    """Create and start an agent; its pid once its log shows ``ready``."""
    await create(daemon.url, name, command=[*AGENT, *flags])
    await post_json(daemon.url + f"/api/instances/{name}/start")
    await wait_for(lambda: ready in log_of(daemon, name), timeout=20)
    return (await status(daemon.url, name))["pid"]


async def status(url: str, name: str) -> dict:
    return (await get_json(url + f"/api/instances/{name}"))[1]


def log_of(daemon, name: str) -> str:
    path = instance_log(daemon.data_dir, name)
    return path.read_text(errors="replace") if path.exists() else ""


def when(frame: dict) -> float:
    return datetime.fromisoformat(frame["timestamp"]).timestamp()


def state_of(pid: int) -> str | None:
    """A process's state letter (Z for a zombie), or None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_crash_loop_backs_off_then_stops_and_is_published(daemons):
    """Crashes restart after 1, 2, 4, 8 s; the fifth in 60 s is crash_loop, on the stream."""
    daemon = await daemons.start()
    watcher = await WSClient.connect(daemon.url, "/ws/instances")
    await watcher.frame()
    await create(daemon.url, "crasher", command=[*AGENT, "--crash-after", "0.2"])
    await post_json(daemon.url + "/api/instances/crasher/start")
    await wait_for(
        lambda: any(f.get("status") == "crash_loop" for f in watcher.received), timeout=60
    )
    await sleep(2.5)
    statuses = [f for f in watcher.received if f["type"] == "status_changed"]
    names = [f["status"] for f in statuses]
    await watcher.close()
    assert names == ["starting", "crashed"] * 4 + ["starting", "crash_loop"], names
    crashes = [f for f in statuses if f["status"] in ("crashed", "crash_loop")]
    restarts = [f for f in statuses if f["status"] == "starting"][1:]
    gaps = [when(r) - when(c) for c, r in zip(crashes, restarts, strict=False)]
    for gap, expected in zip(gaps, (1, 2, 4, 8), strict=True):
        assert expected - 0.05 <= gap <= expected + 0.5, gaps
    assert (await status(daemon.url, "crasher"))["status"] == "crash_loop"
    assert processes_with("CPSTREAM_INSTANCE", "crasher") == []
    record(
        "11a crash loop",
        "an agent with --crash-after 0.2 (restart on-failure)",
        "crashed -> restarted 4 times, then crash_loop with no further restart; every status "
        "published on /ws/instances",
        "restart delays " + ", ".join(f"{g:.2f}" for g in gaps) + " s; crash_loop after 5 "
        f"crashes in {when(crashes[-1]) - when(statuses[0]):.1f} s",
        restart_delays_s=[round(g, 3) for g in gaps],
    )


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_an_agent_ignoring_sigterm_is_killed_after_the_grace_period(daemons):
    """Stop sends SIGTERM, then SIGKILL after 5 s; the measured delay is reported."""
    daemon = await daemons.start()
    pid = await started(daemon, "stubborn", "--ignore-sigterm", ready="ignoring SIGTERM")
    asked = global_reactor.seconds()
    code, answer = await post_json(daemon.url + "/api/instances/stubborn/stop")
    delay = global_reactor.seconds() - asked
    assert (code, answer["status"]) == (200, "stopped")
    assert 5.0 <= delay < 7.0, delay
    assert state_of(pid) is None
    assert "ignored SIGTERM for 5.0s; sending SIGKILL" in daemon.log_text()
    record(
        "11b SIGTERM ignored",
        "stop of an agent running with --ignore-sigterm",
        "SIGTERM to the process group, SIGKILL after the 5 s grace; stop answers 'stopped'",
        f"stop took {delay:.2f} s (grace 5 s)",
        stop_s=round(delay, 3),
    )


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_stop_takes_the_grandchildren_too(daemons):
    """An agent that forked a grandchild: stop leaves no orphan and no zombie."""
    daemon = await daemons.start()
    pid = await started(daemon, "forker", "--fork-child", ready="grandchild pid")
    grandchild = int(re.search(r"grandchild pid (\d+)", log_of(daemon, "forker")).group(1))
    assert sorted(processes_with("CPSTREAM_INSTANCE", "forker")) == sorted([pid, grandchild])
    code, answer = await post_json(daemon.url + "/api/instances/forker/stop")
    assert (code, answer["status"]) == (200, "stopped")
    await wait_for(lambda: state_of(grandchild) is None and state_of(pid) is None, timeout=5)
    zombies = [
        int(entry) for entry in os.listdir("/proc")
        if entry.isdigit() and state_of(int(entry)) == "Z"
        and Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1]
        == str(daemon.pid)
    ]  # fmt: skip
    orphans = processes_with("CPSTREAM_INSTANCE", "forker")
    assert orphans == [] and zombies == []
    record(
        "11c forking agent",
        "stop of an agent that left a grandchild running (--fork-child)",
        "the whole process group is signalled",
        f"{len(orphans)} orphans, {len(zombies)} zombies after stop",
    )


@pytest.mark.timeout(60)
@pytest_twisted.ensureDeferred
async def test_fifty_concurrent_lifecycle_calls_one_wins(daemons):
    """50 concurrent starts, then 50 concurrent mixed calls: one runs, the rest are 409."""
    daemon = await daemons.start()
    url = daemon.url
    instance = await create(url, "raced", command=[*AGENT, "--ignore-sigterm"])

    async def call(action: str) -> int:
        response = await http.post(url + f"/api/instances/raced/{action}", timeout=30)
        await response.content()
        return response.code

    starts = await defer.gatherResults([defer.ensureDeferred(call("start")) for _ in range(50)])
    await wait_for(lambda: "ignoring SIGTERM" in log_of(daemon, "raced"), timeout=20)
    for _ in range(100):
        running = await status(url, "raced")
        if running["status"] == "running":
            break
        await sleep(0.1)
    live = processes_with("CPSTREAM_INSTANCE_ID", instance["id"])
    actions = ["stop", "restart", "archive", "start", "unarchive"] * 10
    mixed = await defer.gatherResults([defer.ensureDeferred(call(a)) for a in actions])
    winner = actions[next(i for i, code in enumerate(mixed) if code == 200)]
    final = (await get_json(url + "/api/instances/raced"))[1]
    after = processes_with("CPSTREAM_INSTANCE_ID", instance["id"])
    assert Counter(starts) == {200: 1, 409: 49}, Counter(starts)
    assert running["status"] == "running" and live == [running["pid"]]
    assert Counter(mixed) == {200: 1, 409: 49}, Counter(mixed)
    expected = {"stop": "stopped", "restart": "running", "archive": "archived"}[winner]
    assert final["status"] == expected, (winner, final)
    assert len(after) == (1 if expected == "running" else 0)
    if expected == "running":
        assert after == [final["pid"]] != live
    record(
        "11d concurrent lifecycle",
        "50 concurrent POST start on a stopped instance, then 50 concurrent "
        "stop/restart/archive/start/unarchive on it while running",
        "exactly one call ran each time, the other 49 got 409; final state matches the processes",
        f"starts {dict(Counter(starts))}, mixed {dict(Counter(mixed))} (winner: {winner}); "
        f"final {final['status']} with {len(after)} process(es)",
    )


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_kill_9_and_restart_adopts_and_keeps_every_message(daemons):
    """kill -9 mid-traffic, restart: agents adopted (not started again), no message lost or
    duplicated; a keyed send retried across the outage is deduplicated."""
    first = await daemons.start()
    url, port = first.url, first.port
    one = await create(
        url, "agent-1", command=[*AGENT, "--send-to", "agent-2", "--send-every", "0.2"]
    )
    two = await create(url, "agent-2", command=AGENT)
    rule = {"from_instance": "agent-1", "to_instance": "agent-2", "type_pattern": "task.*"}
    assert (await post_json(url + "/api/routing-rules", rule))[0] == 201
    for name in ("agent-1", "agent-2"):
        await post_json(url + f"/api/instances/{name}/start")
    await wait_for(lambda: "sent task-3" in log_of(first, "agent-1"), timeout=30)
    pids = {name: (await status(url, name))["pid"] for name in ("agent-1", "agent-2")}

    keyed: dict[str, set[str]] = {}
    sending = [True]

    async def send_keyed() -> None:
        """A careful client: retries each keyed send until the control plane answers."""
        number = 0
        while sending[0]:
            key = f"k-{number}"
            body = {
                "from_instance": "agent-2",
                "to_instance": "agent-1",
                "message_type": "task.keyed",
                "payload": {"n": number},
                "idempotency_key": key,
            }
            try:
                code, answer = await post_json(url + "/api/messages", body, timeout=2)
            except Exception:  # the daemon is down: retry the same key
                await sleep(0.1)
                continue
            if code in (200, 201):
                keyed.setdefault(key, set()).add(answer["id"])
                number += 1
            await sleep(0.05)

    rule_back = {"from_instance": "agent-2", "to_instance": "agent-1", "type_pattern": "task.*"}
    assert (await post_json(url + "/api/routing-rules", rule_back))[0] == 201
    sender = defer.ensureDeferred(send_keyed())
    await sleep(1.0)
    await first.stop(signal.SIGKILL)
    killed_at = global_reactor.seconds()
    await sleep(1.0)
    second = await daemons.start(data_dir=first.data_dir, port=port)
    restarted = global_reactor.seconds() - killed_at
    after = {name: await status(url, name) for name in ("agent-1", "agent-2")}
    await sleep(3.0)
    sending[0] = False
    await sender
    await sleep(1.0)

    assert not (ROOT / "twistd.pid").exists()
    assert {n: (a["status"], a["pid"]) for n, a in after.items()} == {
        n: ("running", pid) for n, pid in pids.items()
    }
    for instance in (one, two):
        assert len(processes_with("CPSTREAM_INSTANCE_ID", instance["id"])) == 1
    text = second.log_text()
    assert "adopted agent-1" in text and "adopted agent-2" in text
    assert "started agent-" not in text

    sent = re.findall(r"sent task-\d+ -> agent-2: ([0-9a-f-]{36})", log_of(second, "agent-1"))
    received = re.findall(r"received task\.handoff ([0-9a-f-]{36})", log_of(second, "agent-2"))
    stored = {}
    for message_id in sent:
        code, message = await get_json(url + f"/api/messages/{message_id}")
        assert code == 200, message_id
        stored[message_id] = message
    events = {i: Counter(e["event"] for e in m["events"]) for i, m in stored.items()}
    assert all(e["queued"] == 1 and e["acknowledged"] <= 1 for e in events.values())
    assert max(Counter(received).values()) == 1, "a message was delivered twice"
    in_flight = [i for i, m in stored.items() if m["status"] != "acknowledged"]
    assert all(stored[i]["status"] in ("queued", "delivered") for i in in_flight)
    assert all(len(ids) == 1 for ids in keyed.values())
    found = (await get_json(url + "/api/messages?instance=agent-1&type=task.keyed&limit=1000"))[1]
    by_key = Counter(m["idempotency_key"] for m in found)
    assert set(by_key) == set(keyed) and max(by_key.values()) == 1
    record(
        "11e kill -9 and restart",
        "kill -9 of the daemon while agent-1 sends agent-2 a message every 0.2 s and a "
        "client sends keyed messages (retrying each key until answered); restart on the "
        "same port",
        "both agents adopted with their pids (none started again); every message the "
        "control plane accepted is stored, queued once, acknowledged at most once; retried "
        "keyed sends deduplicated",
        f"restarted in {restarted:.1f} s; {len(sent)} agent messages: "
        f"{len(sent) - len(in_flight)} acknowledged, {len(in_flight)} in flight at the kill "
        f"(kept, redelivered after the lease), 0 lost, 0 delivered twice; {len(keyed)} keyed "
        "sends, 0 duplicates",
        agent_messages=len(sent),
        in_flight=len(in_flight),
        keyed=len(keyed),
    )
