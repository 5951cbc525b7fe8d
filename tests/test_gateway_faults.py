"""Faults with gateways, on real processes: Redis restarting (with and without its data)
or frozen, the control plane restarting, a gateway killed with kill -9 under 500 clients.

Clients sit on the control plane and on two gateways; after each fault the
stream-integrity checker's oracles (:mod:`tests.checker`) compare every client's
view with the database: every event once, in order, or an explicit resync — and
the control plane's REST and its own streams keep working while Redis is down.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_twisted

from tests import wsraw
from tests.checker import Checker
from tests.hardening import raw
from tests.redis import RedisServer
from tests.support import get_json, kill_processes_with, read_token, sequenced, sleep


@pytest_twisted.async_yield_fixture
async def fleet(tmp_path: Path, private_redis: RedisServer) -> AsyncIterator[Checker]:
    """A control plane and two gateways on a private Redis, three instances with routes,
    and clients on every server."""
    checker = Checker(tmp_path / "data", redis=private_redis, gateways=2, max_connections=600)
    await checker.start()
    try:
        for name in ("a", "b", "c"):
            await checker.create(name)
            await checker.call("POST", f"/instances/{name}/start")
        for source in ("a", "b"):
            for target in ("a", "b"):
                rule = {"from_instance": source, "to_instance": target, "type_pattern": "task.*"}
                await checker.call("POST", "/routing-rules", rule)
        for via in (0, 1, 2):
            await checker.connect("instances", via=via)
            await checker.connect("messages", via=via)
        await checker.connect("messages", "instance=a", {"instance": "a"}, via=2)
        await checker.connect("/ws/instances/a/logs", "backlog=1000", via=1)
        yield checker
    finally:
        url = checker.url
        await checker.stop()
        kill_processes_with("CPSTREAM_URL", url)


async def activity(checker: Checker, rounds: int = 3) -> None:
    """Lifecycle changes, messages sent and leased, log lines: a few of each, via REST."""
    for n in range(rounds):
        code, _ = await checker.call(
            "POST",
            "/messages",
            {"from_instance": "a", "to_instance": "b", "message_type": "task.x", "payload": {}},
        )
        assert code == 201, code
        await checker.call("POST", f"/instances/{'abc'[n % 3]}/restart")
        await checker.call("GET", "/instances/b/messages/pending?wait=0")
        checker.write_lines("a", 5, split_last=False)


async def health(checker: Checker, index: int) -> tuple[int, dict]:
    return await get_json(f"{checker.gateways[index].url}/api/health")


async def until_health(checker: Checker, index: int, status: str, timeout: float = 10) -> None:
    for _ in range(int(timeout / 0.1)):
        if (await health(checker, index))[1]["status"] == status:
            return
        await sleep(0.1)
    raise AssertionError(f"gateway {index} never {status}: {await health(checker, index)}")


async def until_broker(checker: Checker, reachable: bool, timeout: float = 10) -> dict:
    """The control plane's own broker link says ``reachable`` (it notices a loss and
    reconnects on its own backoff, independently of the gateways): its health section."""
    for _ in range(int(timeout / 0.1)):
        code, own = await get_json(f"{checker.url}/api/health")
        assert code == 200, code  # the control plane answers whatever Redis does
        if own["broker"]["reachable"] is reachable:
            return own["broker"]
        await sleep(0.1)
    raise AssertionError(f"the control plane's broker never reachable={reachable}: {own}")


async def settle_and_check(checker: Checker) -> None:
    await checker.settle(timeout=30)
    await checker.check()


async def test_redis_restarting_without_its_data(fleet: Checker) -> None:
    """Redis stops; the control plane keeps answering REST and serving its own streams; the
    gateways say degraded; Redis comes back empty: nothing was lost silently."""
    await activity(fleet)
    await settle_and_check(fleet)
    await fleet.redis.stop_async()
    fleet.redis.wipe()
    await until_health(fleet, 0, "degraded")
    await until_broker(fleet, reachable=False)  # the control plane says so too
    await activity(fleet)  # REST works without Redis (asserted inside)
    await fleet.create("d")
    local = [v for v in fleet.views if v.via == 0 and v.kind == "instances"][0]
    for _ in range(100):
        local.pump()
        if any(f.get("name") == "d" for f in local.frames):
            break
        await sleep(0.05)
    assert any(f.get("name") == "d" for f in local.frames), "the control plane's own stream"
    await fleet.redis.start_async()
    await until_health(fleet, 0, "ok")
    assert (await until_broker(fleet, reachable=True))["resets"] >= 1
    await activity(fleet)
    await settle_and_check(fleet)
    assert fleet.stats["events"] > 0
    assert fleet.stats["resyncs"] == 0  # the publisher restored the history: all resumed


async def test_redis_restarting_with_its_data(fleet: Checker) -> None:
    """Redis stops (saving), events happen, Redis comes back with its data: the publisher
    re-sends what it missed from the database and every client gets it."""
    await activity(fleet)
    await fleet.restart_redis(keep_data=True)
    await activity(fleet)
    await fleet.redis.stop_async()
    await activity(fleet)
    await fleet.redis.start_async()
    await activity(fleet)
    await settle_and_check(fleet)
    assert fleet.stats["resyncs"] == 0


async def test_a_network_stall_between_gateways_and_redis(fleet: Checker) -> None:
    """Redis frozen (SIGSTOP) past the reply timeout: gateways report it; when it thaws,
    every event made meanwhile arrives."""
    await activity(fleet)
    fleet.redis.pause()
    try:
        await activity(fleet)
        await until_health(fleet, 1, "degraded")
    finally:
        fleet.redis.resume()
    await until_health(fleet, 1, "ok")
    await activity(fleet)
    await settle_and_check(fleet)


async def test_the_control_plane_restarting(fleet: Checker) -> None:
    """The control plane restarts: gateway clients stay connected and lose nothing; the
    control plane's own clients resume."""
    await activity(fleet)
    await fleet.restart()
    for view in [v for v in fleet.views if v.via == 0]:
        await fleet.reconnect(view)
    await activity(fleet)
    await settle_and_check(fleet)


async def test_a_gateway_killed_with_500_clients(fleet: Checker) -> None:
    """kill -9 a gateway holding 500 stream clients; each reconnects to the other gateway
    with since/epoch and resumes with nothing lost (or an explicit resync)."""
    gateway = fleet.gateways[0]
    other = fleet.gateways[1]
    token = read_token(fleet.daemon.data_dir)
    auth = ("Authorization", f"Bearer {token}")
    clients = []
    for _ in range(500):
        client = await raw.connect(gateway.port)
        client.write(wsraw.upgrade("/ws/instances", f"127.0.0.1:{gateway.port}", [auth]))
        clients.append(client)
    await _until(lambda: all(_frames(c) for c in clients), 30)
    snapshots = [_frames(c)[0] for c in clients]
    assert {s["type"] for s in snapshots} == {"snapshot"}
    await activity(fleet, 2)
    await sleep(0.5)
    positions = [_position(_frames(c)) for c in clients]
    await fleet.kill_gateway(0)  # kill -9; the checker's own clients move to the other one
    await activity(fleet, 2)  # events the killed gateway's clients did not see
    resumed = []
    for (seq, epoch), old in zip(positions, clients, strict=True):
        old.abort()
        client = await raw.connect(other.port)
        path = f"/ws/instances?since={seq}&epoch={epoch}"
        client.write(wsraw.upgrade(path, f"127.0.0.1:{other.port}", [auth]))
        resumed.append(client)
    await fleet.settle(timeout=30)
    top = fleet.last_ids()[0]
    await _until(lambda: all(_last_seq(_frames(c)) == top for c in resumed), 30)
    with fleet.db() as db:
        ids = [row[0] for row in db.execute("SELECT id FROM instance_events ORDER BY id")]
    resyncs = 0
    for (seq, _), client in zip(positions, resumed, strict=True):
        frames = _frames(client)
        if frames[0]["type"] == "snapshot":
            resyncs += 1  # explicit: allowed, never silent
            continue
        assert frames[0]["type"] == "resumed" and frames[0]["since"] == seq
        assert [f["seq"] for f in sequenced(frames[1:])] == [i for i in ids if i > seq]
    assert resyncs == 0
    for client in resumed:
        client.abort()


def _frames(client: raw.Raw) -> list[dict]:
    data = client.data
    head = data.find(b"\r\n\r\n")
    if head < 0:
        return []
    frames, at = [], head + 4
    while (found := wsraw.next_frame(data, at)) is not None:
        opcode, payload, at = found
        if opcode == wsraw.OP_TEXT:
            frames.append(json.loads(payload))
    return frames


def _position(frames: list[dict]) -> tuple[int, str]:
    seq, epoch = frames[0]["seq"], frames[0]["epoch"]
    for frame in frames[1:]:
        seq = frame.get("seq", seq)
    return seq, epoch


def _last_seq(frames: list[dict]) -> int | None:
    seqs = [f["seq"] for f in frames if "seq" in f]
    return seqs[-1] if seqs else None


async def _until(predicate, timeout: float) -> None:
    for _ in range(int(timeout / 0.1)):
        if predicate():
            return
        await sleep(0.1)
    raise AssertionError("never true")
