"""Gateways: the control plane's stream protocol, byte for byte, fed by a real Redis.

A real control plane (``--broker redis://...``) and two real ``cpstream gateway``
processes on loopback; clients on each compare what they receive, as bytes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import pytest_twisted
import treq

from tests import wsraw
from tests.hardening import raw
from tests.redis import GatewayProcess
from tests.support import (
    Daemon,
    create,
    get_json,
    instance_log,
    kill_processes_with,
    post_json,
    read_token,
    sleep,
)
from tests.wsclient import WSClient


@dataclass
class Cluster:
    """A control plane and its gateways on one Redis."""

    cp: Daemon
    gateways: list[GatewayProcess]
    redis_url: str

    @property
    def token(self) -> str:
        return read_token(self.cp.data_dir)

    async def seq(self, topic: str = "instances") -> int:
        code, health = await get_json(f"{self.gateways[0].url}/api/health")
        return health["broker"]["topics"][topic]["seq"]


async def start_cluster(data_dir: Path, redis_url: str, gateways: int = 2, *args: str) -> Cluster:
    cp = Daemon(data_dir, "--broker", redis_url)
    await cp.start()
    started = []
    for _ in range(gateways):
        gateway = GatewayProcess(data_dir, redis_url, cp.url, *args)
        await gateway.start()
        started.append(gateway)
    cluster = Cluster(cp, started, redis_url)
    for gateway in started:
        await wait_truthy(lambda g=gateway: _loaded(g), timeout=15)
    return cluster


async def _loaded(gateway: GatewayProcess) -> bool:
    code, health = await get_json(f"{gateway.url}/api/health")
    return code == 200 and all(t["loaded"] for t in health["broker"]["topics"].values())


async def stop_cluster(cluster: Cluster) -> None:
    for gateway in cluster.gateways:
        await gateway.stop()
    await cluster.cp.stop()
    kill_processes_with("CPSTREAM_URL", cluster.cp.url)


@pytest_twisted.async_yield_fixture
async def cluster(data_dir: Path, redis_url: str) -> AsyncIterator[Cluster]:
    running = await start_cluster(data_dir, redis_url)
    try:
        yield running
    finally:
        await stop_cluster(running)


async def wait_truthy(check, timeout: float = 10.0) -> None:
    """Poll an async predicate until it holds."""
    deadline = 0.0
    while not await check():
        await sleep(0.05)
        deadline += 0.05
        assert deadline < timeout, "never true"


async def test_the_same_bytes_on_every_gateway_as_on_the_control_plane(cluster: Cluster) -> None:
    """Snapshots and deltas of /ws/instances and /ws/messages are the control plane's bytes."""
    await create(cluster.cp.url, "a")
    await create(cluster.cp.url, "b")
    await wait_truthy(lambda: _at(cluster, "instances", 2))
    servers = [cluster.cp, *cluster.gateways]
    for path in ("/ws/instances", "/ws/messages?instance=a", "/ws/messages"):
        clients = [await WSClient.connect(s.url, path) for s in servers]
        snapshots = [await c.frame() for c in clients]
        assert len({json.dumps(s) for s in snapshots}) == 1, snapshots
        assert len({bytes(c.raw[0]) for c in clients}) == 1
        for client in clients:
            await client.close()
    clients = [await WSClient.connect(s.url, "/ws/instances") for s in servers]
    for client in clients:
        await client.frame()
    await post_json(f"{cluster.cp.url}/api/instances/b/archive")
    await create(cluster.cp.url, "c")
    for client in clients:
        await client.frame_of("instance_created")
    assert len({tuple(bytes(r) for r in c.raw) for c in clients}) == 1
    for client in clients:
        await client.close()


async def _at(cluster: Cluster, topic: str, seq: int) -> bool:
    for gateway in cluster.gateways:
        code, health = await get_json(f"{gateway.url}/api/health")
        if health["broker"]["topics"][topic]["seq"] < seq:
            return False
    return True


async def test_a_client_resumes_on_another_gateway(cluster: Cluster) -> None:
    """Left gateway A at seq S; on gateway B ?since=S&epoch=E replays exactly what followed,
    as the control plane would."""
    first, second = cluster.gateways
    client = await WSClient.connect(first.url, "/ws/instances")
    snapshot = await client.frame()
    await client.close()
    for name in ("x", "y"):
        await create(cluster.cp.url, name)
    await post_json(f"{cluster.cp.url}/api/instances/x/archive")
    query = f"?since={snapshot['seq']}&epoch={snapshot['epoch']}"
    await wait_truthy(lambda: _at(cluster, "instances", snapshot["seq"] + 3))
    on_gateway = await WSClient.connect(second.url, "/ws/instances" + query)
    on_cp = await WSClient.connect(cluster.cp.url, "/ws/instances" + query)
    for resumed in (on_gateway, on_cp):
        frame = await resumed.frame()
        assert frame["type"] == "resumed" and frame["since"] == snapshot["seq"]
        for _ in range(3):
            await resumed.frame()
    assert [bytes(r) for r in on_gateway.raw] == [bytes(r) for r in on_cp.raw]
    stale = await WSClient.connect(second.url, f"/ws/instances?since=1&epoch={'0' * 32}")
    assert (await stale.frame())["reason"] == "epoch"
    for c in (on_gateway, on_cp, stale):
        await c.close()


async def test_logs_are_relayed_byte_for_byte_and_resume_anywhere(cluster: Cluster) -> None:
    """A gateway's log stream is the control plane's frames; its cursor resumes on the
    control plane, and an unknown instance closes 4404 through the gateway."""
    await create(cluster.cp.url, "logged")
    log = instance_log(cluster.cp.data_dir, "logged")
    log.write_bytes(b"".join(b"line %d\n" % n for n in range(50)))
    path = "/ws/instances/logged/logs?backlog=20"
    direct = await WSClient.connect(cluster.cp.url, path)
    relayed = await WSClient.connect(cluster.gateways[0].url, path)
    assert (await direct.frame()) == (await relayed.frame())
    with log.open("ab") as f:
        f.write(b"fresh 1\nfresh 2\n")
    live = await relayed.frame_of("lines")
    assert live == await direct.frame_of("lines")
    assert bytes(relayed.raw[-1]) == bytes(direct.raw[-1])
    with log.open("ab") as f:
        f.write(b"after the cursor\n")
    resumed = await WSClient.connect(
        cluster.cp.url, f"/ws/instances/logged/logs?cursor={quote(live['cursor'])}"
    )
    assert (await resumed.frame())["resumed"] is True
    assert (await resumed.frame_of("lines"))["lines"] == ["after the cursor"]
    missing = await WSClient.connect(cluster.gateways[1].url, "/ws/instances/nope/logs")
    assert (await missing.frame())["code"] == "instance_not_found"
    assert (await missing.wait_closed())[0] == 4404
    for c in (direct, relayed, resumed):
        await c.close()


async def test_the_gateway_keeps_the_request_policy_and_access_control(cluster: Cluster) -> None:
    """No token: 401 before any upgrade; a foreign Origin: 403; a bad since: 4400; health
    says only ok to anyone, and the broker's figures to the operator."""
    gateway = cluster.gateways[0]
    anonymous = await treq.get(f"{gateway.url}/api/health")
    assert anonymous.code == 200 and await anonymous.json() == {"status": "ok"}
    code, health = await get_json(f"{gateway.url}/api/health")
    assert health["broker"]["reachable"] is True and health["connections"] == 0
    upgrade = {"Upgrade": "websocket"}
    assert (await treq.get(f"{gateway.url}/ws/instances", headers=upgrade)).code == 401
    assert (await treq.get(f"{gateway.url}/api/instances")).code == 401
    code, body = await get_json(f"{gateway.url}/api/instances")
    assert code == 404 and "control plane" in body["error"]
    client = await raw.connect(gateway.port)
    auth = ("Authorization", f"Bearer {cluster.token}")
    client.write(
        wsraw.upgrade(
            "/ws/instances", f"127.0.0.1:{gateway.port}", [auth, ("Origin", "http://evil.example")]
        )
    )
    await client.until(lambda c: b"\r\n\r\n" in c.data, timeout=10)
    assert client.data.startswith(b"HTTP/1.1 403")
    client.transport.loseConnection()
    bad = await WSClient.connect(gateway.url, "/ws/instances?since=x")
    assert (await bad.frame())["code"] == "bad_request"
    assert (await bad.wait_closed())[0] == 4400


async def test_a_browser_session_of_the_control_plane_opens_gateway_streams(
    cluster: Cluster,
) -> None:
    """The control plane's session cookie (signed with the operator token) works on a
    gateway, under the control plane's cookie name; a forged one does not, nor one ended
    by a logout at the control plane."""
    login = await treq.post(
        f"{cluster.cp.url}/login",
        json={"token": cluster.token},
        headers={"Origin": cluster.cp.url},
        allow_redirects=False,
    )
    cookies = {c.name: c.value for c in login.cookies()}
    name = f"cpstream_session_{cluster.cp.port}"
    assert name in cookies, (login.code, cookies)
    gateway = cluster.gateways[0]
    for value, expected in ((cookies[name], b"HTTP/1.1 101"), ("x.1.forged", b"HTTP/1.1 401")):
        client = await raw.connect(gateway.port)
        client.write(
            wsraw.upgrade(
                "/ws/instances", f"127.0.0.1:{gateway.port}", [("Cookie", f"{name}={value}")]
            )
        )
        await client.until(lambda c: b"\r\n\r\n" in c.data, timeout=10)
        assert client.data.startswith(expected), client.data[:100]
        client.transport.loseConnection()
    logout = await treq.post(
        f"{cluster.cp.url}/logout",
        headers={"Origin": cluster.cp.url, "Cookie": f"{name}={cookies[name]}"},
        allow_redirects=False,
    )
    assert logout.code < 400, logout.code
    for _ in range(50):
        client = await raw.connect(gateway.port)
        client.write(
            wsraw.upgrade(
                "/ws/instances",
                f"127.0.0.1:{gateway.port}",
                [("Cookie", f"{name}={cookies[name]}")],
            )
        )
        await client.until(lambda c: b"\r\n\r\n" in c.data, timeout=10)
        client.transport.loseConnection()
        if client.data.startswith(b"HTTP/1.1 401"):
            break
        await sleep(0.1)
    assert client.data.startswith(b"HTTP/1.1 401"), client.data[:100]


async def test_max_connections_on_a_gateway(data_dir: Path, redis_url: str) -> None:
    """Past --max-connections a gateway's upgrade gets 503."""
    running = await start_cluster(data_dir, redis_url, 1, "--max-connections", "2")
    try:
        gateway = running.gateways[0]
        held = [await WSClient.connect(gateway.url, "/ws/instances") for _ in range(2)]
        for client in held:
            await client.frame()
        refused = await treq.get(
            f"{gateway.url}/ws/instances",
            headers={
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                "Authorization": f"Bearer {running.token}",
            },
        )
        assert refused.code == 503
        for client in held:
            await client.close()
    finally:
        await stop_cluster(running)


def test_gateway_options_refuse_what_cannot_work(tmp_path: Path, monkeypatch) -> None:
    """No --broker, a memory broker, a control URL that is not http, no token: usage
    errors, each saying what is wrong; a token file or CPSTREAM_TOKEN is enough."""
    from twisted.python import usage

    from cpstream.gatewaytap import Options

    monkeypatch.delenv("CPSTREAM_TOKEN", raising=False)
    token = tmp_path / "operator.token"
    token.write_text("secret\n")
    cases = [
        ([], "--broker"),
        (["--broker", "memory"], "--broker"),
        (["--broker", "http://x"], "redis://"),
        (["--broker", "redis://127.0.0.1:1/0", "--control", "ftp://x"], "--control"),
        (["--broker", "redis://127.0.0.1:1/0"], "token"),
    ]
    for argv, said in cases:
        with pytest.raises(usage.UsageError, match=said):
            Options().parseOptions(argv)
    options = Options()
    options.parseOptions(["--broker", "redis://127.0.0.1:1/0", "--token-file", str(token)])
    assert options["token"] == "secret" and options["listen"].startswith("tcp:18801")
    monkeypatch.setenv("CPSTREAM_TOKEN", "from-env")
    options = Options()
    options.parseOptions(["--broker", "redis://127.0.0.1:1/0"])
    assert options["token"] == "from-env"


async def test_usage_samples_reach_gateway_clients(cluster: Cluster) -> None:
    """usage_changed frames (no seq) are relayed live, the same bytes as the control
    plane's, and a gateway's snapshot carries the latest sample of a running instance."""
    instance = await create(cluster.cp.url, "u")
    assert (await post_json(f"{cluster.cp.url}/api/instances/u/start"))[0] == 200
    local = await WSClient.connect(cluster.cp.url, "/ws/instances")
    remote = await WSClient.connect(cluster.gateways[0].url, "/ws/instances")
    await local.frame()
    await remote.frame()
    sample = await remote.frame_of("usage_changed", timeout=15)
    assert "seq" not in sample and instance["id"] in {e["id"] for e in sample["instances"]}
    while (mine := await local.frame_of("usage_changed", timeout=15)) != sample:
        assert mine["timestamp"] < sample["timestamp"], (mine, sample)
    fresh = await WSClient.connect(cluster.gateways[1].url, "/ws/instances")
    snapshot = await fresh.frame()
    [item] = [i for i in snapshot["instances"] if i["id"] == instance["id"]]
    [sampled] = [e["usage"] for e in sample["instances"] if e["id"] == instance["id"]]
    assert item["usage"] is not None and item["usage"]["at"] >= sampled["at"]
    for client in (local, remote, fresh):
        await client.close()
