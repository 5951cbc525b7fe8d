"""Usage, restarts and exit reasons end to end: a real daemon, real children, real sockets."""

from __future__ import annotations

import os
import signal

import pytest_twisted
from twisted.internet import reactor

from tests.support import Daemon, create, get_json, kill_processes_with, post_json, sleep
from tests.test_supervisor import CRASHER
from tests.test_usage import BURNER
from tests.wsclient import WSClient

INTERVAL = 0.25  # the sampling_daemon fixture's


async def instance(url: str, name: str) -> dict:
    code, body = await get_json(f"{url}/api/instances/{name}")
    assert code == 200, body
    return body


@pytest_twisted.ensureDeferred
async def test_usage_reaches_rest_the_snapshot_and_one_frame_per_tick(sampling_daemon):
    """Two running instances: every usage_changed frame names both (one frame per tick, no
    seq, ticks an interval apart); REST and a new snapshot carry the latest usage; a busy
    child's CPU is above zero; the usage route answers its series and checks its bounds."""
    daemon = sampling_daemon
    url = daemon.url
    for name, command in (("busy", BURNER), ("calm", None)):
        await create(url, name, **({"command": command} if command else {}))
        assert (await post_json(f"{url}/api/instances/{name}/start"))[0] == 200
    client = await WSClient.connect(url, "/ws/instances")
    try:
        await client.frame_of("snapshot")
        usage = []
        while len(usage) < 6:
            frame = await client.frame(timeout=10)
            if frame["type"] == "usage_changed" and len(frame["instances"]) == 2:
                usage.append(frame)
        assert all("seq" not in f for f in usage)
        stamps = [f["timestamp"] for f in usage]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
        assert {e["name"] for e in usage[-1]["instances"]} == {"busy", "calm"}
        busy = await instance(url, "busy")
        assert busy["usage"]["cpu"] > 0 and busy["usage"]["rss"] > 0, busy
        assert (await instance(url, "calm"))["usage"]["threads"] >= 1
        again = await WSClient.connect(url, "/ws/instances")
        snapshot = await again.frame_of("snapshot")
        await again.close()
        assert all(i["usage"] and i["usage"]["at"] for i in snapshot["instances"])
    finally:
        await client.close()
    code, series = await get_json(f"{url}/api/instances/busy/usage?minutes=1")
    assert code == 200 and series["name"] == "busy" and series["interval"] == INTERVAL
    stamps = [s["at"] for s in series["samples"]]
    assert len(stamps) >= 6 and stamps == sorted(stamps)
    assert max(s["cpu"] for s in series["samples"]) > 0
    for bad in ("0", "61", "x", "1.5"):
        code, body = await get_json(f"{url}/api/instances/busy/usage?minutes={bad}")
        assert code == 400 and "minutes" in body["error"], (bad, body)
    code, body = await get_json(f"{url}/api/instances/nobody/usage")
    assert code == 404 and "error" in body


@pytest_twisted.ensureDeferred
async def test_restarts_and_exit_reasons_survive_a_control_plane_restart(sampling_daemon):
    """A crash (exit code 3) and a kill -9 (signal 9) are each instance's last exit, and the
    restarts count every start after the first; both are as they were after a restart of the
    control plane, on REST and in the snapshot."""
    daemon = sampling_daemon
    url = daemon.url
    await create(url, "crasher", command=CRASHER, restart="never")
    await create(url, "victim", restart="never")
    for _ in range(2):
        assert (await post_json(f"{url}/api/instances/crasher/start"))[0] == 200
        await wait_for_status(url, "crasher", "crashed")
    assert (await post_json(f"{url}/api/instances/victim/start"))[0] == 200
    await wait_for_status(url, "victim", "running")
    os.killpg((await instance(url, "victim"))["pid"], signal.SIGKILL)
    await wait_for_status(url, "victim", "crashed")
    before = {name: await instance(url, name) for name in ("crasher", "victim")}
    assert before["crasher"]["restarts"] == 1
    assert set(before["crasher"]["last_exit"]) == {"code", "at"}
    assert before["crasher"]["last_exit"]["code"] == 3
    assert before["victim"]["restarts"] == 0
    assert before["victim"]["last_exit"]["signal"] == signal.SIGKILL
    await daemon.stop()
    await daemon.start()
    url = daemon.url
    client = await WSClient.connect(url, "/ws/instances")
    snapshot = await client.frame_of("snapshot")
    await client.close()
    shown = {i["name"]: i for i in snapshot["instances"]}
    for name, was in before.items():
        now = await instance(url, name)
        assert (now["restarts"], now["last_exit"]) == (was["restarts"], was["last_exit"])
        assert (shown[name]["restarts"], shown[name]["last_exit"]) == (
            was["restarts"],
            was["last_exit"],
        )


async def wait_for_status(url: str, name: str, status: str, timeout: float = 15.0) -> None:
    """Poll REST until the instance is in ``status``."""
    seen = ""
    for _ in range(int(timeout / 0.1)):
        seen = (await instance(url, name))["status"]
        if seen == status:
            return
        await sleep(0.1)
    raise AssertionError(f"{name} is {seen}, never {status}")


@pytest_twisted.ensureDeferred
async def test_the_demo_shows_cost_retries_and_a_dead_letter_within_a_minute(data_dir):
    """``--demo``: within a minute agent-1 is seen burning CPU (a third of a core) and holding
    more memory, a report was retried and succeeded, and another is a dead letter."""
    demo = Daemon(data_dir, "--demo", "--usage-interval", "1")
    await demo.start()
    url = demo.url
    try:
        peak, rss, stats = 0.0, [], {}
        deadline = reactor.seconds() + 90  # a minute, and slack for a loaded machine
        while reactor.seconds() < deadline:
            agent = await instance(url, "agent-1")
            if agent["usage"]:
                peak = max(peak, agent["usage"]["cpu"])
                rss.append(agent["usage"]["rss"])
            stats = (await get_json(f"{url}/api/messages/stats"))[1]
            grown = rss and rss[-1] - min(rss) >= 512 * 1024
            if peak >= 10 and stats["dead_letter"] >= 1 and grown:
                break
            await sleep(0.2)
        assert peak >= 10, peak  # 35 % of a core while it burns (less on a loaded machine)
        assert stats["dead_letter"] >= 1, stats
        assert rss and rss[-1] - min(rss) >= 512 * 1024, rss  # 256 KiB more every 10 s
        code, dead = await get_json(f"{url}/api/messages/dead_letter")
        assert dead[0]["message_type"] == "report.summary"
        code, found = await get_json(f"{url}/api/messages?type=report.summary&status=acknowledged")
        retried = [await get_json(f"{url}/api/messages/{m['id']}") for m in found]
        assert any([e["event"] for e in m["events"]].count("failed") == 1 for _, m in retried), (
            retried
        )
    finally:
        await demo.stop()
        kill_processes_with("CPSTREAM_URL", url)
