"""The brief's gate tests for /ws/ streams, over real loopback sockets.

Test names follow the brief's test plan (``ws_instances_upgrade`` ... ), then
its four integration tests, then the decisions of DESIGN.md section 4.
"""

from __future__ import annotations

import json
import os
import re
import socket
import zlib

import pytest_twisted
from twisted.internet import protocol

from tests import wsraw
from tests.hardening import raw
from tests.support import (
    authorize,
    create,
    get_json,
    http,
    instance_log,
    post_json,
    read_token,
    sequenced,
    sleep,
    wait_for,
)
from tests.wsclient import WSClient

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
CANARY = "sk-streamcanary0123456789"


def log_path(cp, name):
    return instance_log(cp.data_dir, name)


def append(path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


async def lines_until(client: WSClient, last: str) -> list[str]:
    """Log lines (``<rotated>`` for a rotation) received up to and including ``last``."""
    got: list[str] = []
    while last not in got:
        frame = await client.frame(timeout=2)
        got += frame["lines"] if frame["type"] == "lines" else ["<rotated>"]
    return got


async def raw_upgrade(
    cp, path: str, headers: list[tuple[str, str]] = (), host: str | None = None
) -> raw.Raw:
    """An upgrade request sent by hand on a fresh connection (with the operator token),
    once the response head is in; ``host`` replaces the Host header's ``127.0.0.1:PORT``."""
    port = cp.service.web.port.getHost().port
    client = await raw.connect(port)
    token = ("Authorization", f"Bearer {read_token(cp.data_dir)}")
    client.write(wsraw.upgrade(path, host or f"127.0.0.1:{port}", [token, *headers]))
    await client.until(lambda c: b"\r\n\r\n" in c.data, timeout=10)
    return client


# -- /ws/instances ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_ws_instances_upgrade(cp):
    """GET /ws/instances with Upgrade answers 101 Switching Protocols, no version leaked."""
    client = await raw_upgrade(cp, "/ws/instances")
    head = client.data.split(b"\r\n\r\n")[0].decode()
    assert head.startswith("HTTP/1.1 101 ")
    assert "autobahn" not in head.lower() and "twisted" not in head.lower()
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_ws_instances_snapshot(cp):
    """The first frame is a complete snapshot of active instances, with its seq."""
    await create(cp.url, "a", port=18850)
    await create(cp.url, "b")
    await post_json(cp.api("/instances/b/archive"))
    client = await WSClient.connect(cp.url, "/ws/instances")
    snapshot = await client.frame()
    assert snapshot["type"] == "snapshot" and snapshot["include_archived"] is False
    assert [(i["name"], i["status"], i["port"], i["pid"], i["archived_at"])
            for i in snapshot["instances"]] == [("a", "stopped", 18850, None, None)]  # fmt: skip
    assert snapshot["seq"] == cp.service.hubs["instances"].seq
    await client.close()


@pytest_twisted.ensureDeferred
async def test_ws_instances_delta_on_start(cp):
    """Starting an instance produces status_changed deltas (starting, then running) within 1 s."""
    await create(cp.url, "a")
    client = await WSClient.connect(cp.url, "/ws/instances")
    snapshot = await client.frame()
    started = cp.service.web.port.reactor.seconds()
    await post_json(cp.api("/instances/a/start"))
    starting = await client.frame(timeout=1)
    elapsed = cp.service.web.port.reactor.seconds() - started
    assert starting["type"] == "status_changed" and starting["status"] == "starting"
    assert starting["name"] == "a" and starting["pid"] > 0 and elapsed < 1
    assert starting["seq"] == snapshot["seq"] + 1 and TIMESTAMP.match(starting["timestamp"])
    running = await client.frame(timeout=3)
    assert (running["status"], running["pid"]) == ("running", starting["pid"])
    await post_json(cp.api("/instances/a/stop"))
    await client.close()


@pytest_twisted.ensureDeferred
async def test_ws_instances_delta_on_create(cp):
    """Creating an instance produces instance_created."""
    client = await WSClient.connect(cp.url, "/ws/instances")
    await client.frame()
    created = await create(cp.url, "a", port=18851)
    delta = await client.frame(timeout=1)
    assert {k: delta[k] for k in ("type", "name", "id", "port", "status")} == {
        "type": "instance_created",
        "name": "a",
        "id": created["id"],
        "port": 18851,
        "status": "stopped",
    }
    await client.close()


@pytest_twisted.ensureDeferred
async def test_ws_instances_delta_on_archive(cp):
    """Archiving produces instance_archived; unarchive produces instance_unarchived."""
    await create(cp.url, "a")
    client = await WSClient.connect(cp.url, "/ws/instances")
    await client.frame()
    await post_json(cp.api("/instances/a/archive"))
    assert (await client.frame(timeout=1))["type"] == "instance_archived"
    await post_json(cp.api("/instances/a/unarchive"))
    unarchived = await client.frame(timeout=1)
    assert unarchived["type"] == "instance_unarchived" and unarchived["status"] == "stopped"
    await client.close()


@pytest_twisted.ensureDeferred
async def test_ws_instances_delta_on_every_lifecycle_operation(cp):
    """Start, stop, restart, archive, create, clone and delete each reach the client in order."""
    client = await WSClient.connect(cp.url, "/ws/instances")
    client.send({"type": "set_include_archived", "value": True})
    await client.frame_of("snapshot")
    await client.frame_of("snapshot")
    await create(cp.url, "a")
    await post_json(cp.api("/instances/a/start"))
    await post_json(cp.api("/instances/a/restart"))
    await post_json(cp.api("/instances/a/stop"))
    await post_json(cp.api("/instances/a/clone"), {"name": "b"})
    await post_json(cp.api("/instances/b/archive"))
    await http.delete(cp.api("/instances/b"))
    seen = []
    while len(seen) < 10:
        frame = await client.frame(timeout=2)
        if frame["type"] != "usage_changed":
            seen.append((frame["type"], frame["name"], frame.get("status")))
    assert seen == [
        ("instance_created", "a", "stopped"),
        ("status_changed", "a", "starting"),
        ("status_changed", "a", "stopping"),
        ("status_changed", "a", "stopped"),
        ("status_changed", "a", "starting"),
        ("status_changed", "a", "stopping"),
        ("status_changed", "a", "stopped"),
        ("instance_created", "b", "stopped"),
        ("instance_archived", "b", None),
        ("instance_deleted", "b", None),
    ]
    seqs = [f["seq"] for f in sequenced(client.received[2:])]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    await client.close()


@pytest_twisted.ensureDeferred
async def test_ws_instances_include_archived(cp):
    """set_include_archived answers with a snapshot and toggles archived visibility."""
    await create(cp.url, "a")
    await create(cp.url, "b")
    await post_json(cp.api("/instances/b/archive"))
    client = await WSClient.connect(cp.url, "/ws/instances")
    assert [i["name"] for i in (await client.frame())["instances"]] == ["a"]
    client.send({"type": "set_include_archived", "value": True})
    snapshot = await client.frame()
    assert snapshot["type"] == "snapshot" and snapshot["include_archived"] is True
    assert [(i["name"], i["status"]) for i in snapshot["instances"]] == [
        ("a", "stopped"),
        ("b", "archived"),
    ]
    await http.delete(cp.api("/instances/b"))
    assert (await client.frame())["type"] == "instance_deleted"
    client.send({"type": "set_include_archived", "value": False})
    assert (await client.frame())["include_archived"] is False
    await create(cp.url, "c")
    await post_json(cp.api("/instances/c/archive"))
    await http.delete(cp.api("/instances/c"))
    await create(cp.url, "d")
    kinds = [(await client.frame())["type"] for _ in range(3)]
    assert kinds == ["instance_created", "instance_archived", "instance_created"]
    await client.close()


class StuckClient(protocol.Protocol):
    """Opens /ws/instances with a small receive buffer; its test stops and resumes reading."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.buffer = b""
        self.handshake = b""
        self.parsed: list[dict] = []

    def connectionMade(self) -> None:  # noqa: N802 (Twisted API)
        self.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted API)
        self.buffer += data
        if not self.handshake:
            if b"\r\n\r\n" not in self.buffer:
                return
            self.handshake, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        frames, used = wsraw.server_frames(self.buffer)
        self.buffer = self.buffer[used:]
        self.parsed += [json.loads(payload) for opcode, payload in frames if opcode == 1]

    def frames(self) -> list[dict]:
        return self.parsed


@pytest_twisted.ensureDeferred
async def test_ws_instances_lagged_resnapshot(cp, reactor):
    """A client that stops reading is not sent stale deltas: it gets a resync snapshot."""
    instance = await create(cp.url, "a")
    registry = cp.registry
    port = cp.service.web.port.getHost().port
    token = ("Authorization", f"Bearer {read_token(cp.data_dir)}")
    stuck = StuckClient(wsraw.upgrade("/ws/instances", f"127.0.0.1:{port}", [token]))
    await protocol.ClientCreator(reactor, lambda: stuck).connectTCP("127.0.0.1", port)
    await wait_for(lambda: stuck.frames())
    stuck.transport.pauseProducing()
    server = next(iter(cp.service.streams.connections))
    live = await WSClient.connect(cp.url, "/ws/instances")
    await live.frame()
    target = registry.get("a")
    published = 0
    while not server._subscription.lagged and published < 200_000:
        for _ in range(200):
            registry.set_status(target, "running" if published % 2 else "unhealthy", pid=1)
            published += 1
        await sleep(0)
    assert server._subscription.lagged, "the stuck client never lagged"
    assert server.paused and server._subscription.queued == 0
    last = registry.snapshot(False)["seq"]
    stuck.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    stuck.transport.resumeProducing()
    await wait_for(lambda: any(f.get("resync") for f in stuck.frames()), timeout=20)
    frames = stuck.frames()
    resync_at = next(i for i, f in enumerate(frames) if f.get("resync"))
    resync = frames[resync_at]
    assert resync["type"] == "snapshot" and resync["seq"] >= last
    assert sequenced(frames[:resync_at])[-1]["seq"] < last - 256
    registry.set_status(target, "stopped")
    await wait_for(lambda: sequenced(stuck.frames())[-1].get("seq") == resync["seq"] + 1)
    await wait_for(lambda: len(sequenced(live.received)) >= published + 2, timeout=20)
    live_seqs = [f["seq"] for f in sequenced(live.received)[1:]]
    assert live_seqs == list(range(live_seqs[0], live_seqs[0] + len(live_seqs)))
    assert instance["name"] == resync["instances"][0]["name"]
    stuck.transport.loseConnection()
    await live.close()


# -- /ws/instances/:name/logs ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_ws_logs_backlog(cp):
    """The backlog holds the last N lines (default 100, clamped to 1000)."""
    await create(cp.url, "a")
    path = log_path(cp, "a")
    append(path, b"".join(b"line %d\n" % i for i in range(1500)))
    for query, count in (("", 100), ("?backlog=7", 7), ("?backlog=0", 0), ("?backlog=5000", 1000)):
        client = await WSClient.connect(cp.url, f"/ws/instances/a/logs{query}")
        backlog = await client.frame()
        assert backlog["type"] == "backlog" and backlog["count"] == count
        assert backlog["lines"] == [f"line {i}" for i in range(1500 - count, 1500)]
        await client.close()


@pytest_twisted.ensureDeferred
async def test_ws_logs_new_lines(cp, reactor):
    """Lines appended to the file arrive as a lines frame within 1 s."""
    await create(cp.url, "a")
    path = log_path(cp, "a")
    client = await WSClient.connect(cp.url, "/ws/instances/a/logs")
    assert (await client.frame())["lines"] == []
    started = reactor.seconds()
    append(path, b"hello\nworld\n")
    frame = await client.frame(timeout=1)
    cursor = frame.pop("cursor")
    assert frame == {"type": "lines", "lines": ["hello", "world"], "count": 2}
    assert isinstance(cursor, str) and cursor
    assert reactor.seconds() - started < 1
    await client.close()


@pytest_twisted.ensureDeferred
async def test_ws_logs_rotation(cp):
    """A rename rotation drains the old file, then sends rotated, then the new file."""
    await create(cp.url, "a")
    path = log_path(cp, "a")
    append(path, b"before\n")
    client = await WSClient.connect(cp.url, "/ws/instances/a/logs")
    await client.frame()
    append(path, b"just before 1\njust before 2\n")
    os.rename(path, path.with_name("daemon.log.1"))
    append(path, b"after\n")
    got = await lines_until(client, "after")
    assert got == ["just before 1", "just before 2", "<rotated>", "after"]
    os.truncate(path, 0)
    append(path, b"truncated\n")
    got = await lines_until(client, "truncated")
    assert got == ["<rotated>", "truncated"]
    await client.close()


@pytest_twisted.ensureDeferred
async def test_ws_logs_rotation_by_restart(cp):
    """Restarting an instance rotates its log; the viewer sees its old lines, then rotated."""
    await create(cp.url, "a")
    client = await WSClient.connect(cp.url, "/ws/instances/a/logs")
    await client.frame()
    await post_json(cp.api("/instances/a/start"))
    assert (await client.frame(timeout=3))["lines"] == ["up"]
    await post_json(cp.api("/instances/a/restart"))
    assert (await client.frame(timeout=3))["type"] == "rotated"
    assert (await client.frame(timeout=3))["lines"] == ["up"]
    await post_json(cp.api("/instances/a/stop"))
    await client.close()


@pytest_twisted.ensureDeferred
async def test_ws_logs_nonexistent_instance(cp):
    """An unknown instance gets an instance_not_found error frame, then close 4404."""
    client = await WSClient.connect(cp.url, "/ws/instances/nonexistent/logs")
    assert await client.frame() == {
        "type": "error",
        "code": "instance_not_found",
        "message": "No instance named 'nonexistent'",
    }
    assert (await client.wait_closed())[0] == 4404


@pytest_twisted.ensureDeferred
async def test_ws_logs_bad_backlog(cp):
    """A negative or non-integer backlog gets bad_request, then close 4400."""
    await create(cp.url, "a")
    for value in ("-1", "many", "1.5"):
        client = await WSClient.connect(cp.url, f"/ws/instances/a/logs?backlog={value}")
        frame = await client.frame()
        assert (frame["type"], frame["code"]) == ("error", "bad_request")
        assert (await client.wait_closed())[0] == 4400


# -- /ws/messages ----------------------------------------------------------------------------


async def messaging_pair(cp):
    for name in ("a", "b", "c"):
        await create(cp.url, name)
    for source, target in (("a", "b"), ("c", "b"), ("b", "c")):
        code, _ = await post_json(
            cp.api("/routing-rules"),
            {"from_instance": source, "to_instance": target, "type_pattern": "task.*"},
        )
        assert code == 201


async def send(cp, source="a", target="b", **extra):
    body = {
        "from_instance": source,
        "to_instance": target,
        "message_type": "task.handoff",
        "payload": {"secret_note": CANARY, "text": f"key {CANARY}"},
        **extra,
    }
    code, answer = await post_json(cp.api("/messages"), body)
    assert code == 201, answer
    return answer["id"]


@pytest_twisted.ensureDeferred
async def test_ws_messages_snapshot(cp):
    """The snapshot holds the recent events, oldest first, with the seq it is current to."""
    await messaging_pair(cp)
    first = await send(cp)
    _, got = await get_json(cp.api("/instances/b/messages/pending"))
    lease = {"lease_id": got["message"]["lease_id"]}
    await post_json(cp.api(f"/messages/{first}/acknowledge"), lease)
    client = await WSClient.connect(cp.url, "/ws/messages")
    snapshot = await client.frame()
    assert snapshot["type"] == "snapshot"
    assert [(e["message_id"], e["event"]) for e in snapshot["recent_events"]] == [
        (first, "queued"),
        (first, "delivered"),
        (first, "acknowledged"),
    ]
    event = snapshot["recent_events"][0]
    assert (event["from"], event["to"], event["message_type"]) == ("a", "b", "task.handoff")
    assert snapshot["seq"] == 3
    await client.close()


@pytest_twisted.ensureDeferred
async def test_ws_messages_snapshot_is_capped_at_100(cp):
    """Only the last 100 matching events are in the snapshot."""
    await messaging_pair(cp)
    for _ in range(120):
        await send(cp)
    client = await WSClient.connect(cp.url, "/ws/messages")
    snapshot = await client.frame()
    assert len(snapshot["recent_events"]) == 100
    await client.close()


@pytest_twisted.ensureDeferred
async def test_ws_messages_delta(cp):
    """Send, deliver and acknowledge each produce a message_event delta."""
    await messaging_pair(cp)
    client = await WSClient.connect(cp.url, "/ws/messages")
    await client.frame()
    message_id = await send(cp, correlation_id="corr-1")
    _, got = await get_json(cp.api("/instances/b/messages/pending"))
    lease = {"lease_id": got["message"]["lease_id"]}
    await post_json(cp.api(f"/messages/{message_id}/acknowledge"), lease)
    frames = [await client.frame(timeout=1) for _ in range(3)]
    assert [(f["type"], f["event"], f["message_id"]) for f in frames] == [
        ("message_event", "queued", message_id),
        ("message_event", "delivered", message_id),
        ("message_event", "acknowledged", message_id),
    ]
    assert frames[0]["correlation_id"] == "corr-1" and TIMESTAMP.match(frames[0]["timestamp"])
    assert [f["seq"] for f in frames] == [1, 2, 3]
    await client.close()


@pytest_twisted.ensureDeferred
async def test_ws_messages_filter_instance(cp):
    """?instance= keeps only events of messages from or to that instance."""
    await messaging_pair(cp)
    before = await send(cp, "b", "c")
    await send(cp, "a", "b")
    client = await WSClient.connect(cp.url, "/ws/messages?instance=c")
    snapshot = await client.frame()
    assert [e["message_id"] for e in snapshot["recent_events"]] == [before]
    await send(cp, "a", "b")
    to_c = await send(cp, "b", "c")
    from_c = await send(cp, "c", "b")
    got = [(await client.frame(timeout=1))["message_id"] for _ in range(2)]
    assert got == [to_c, from_c]
    await client.close()


@pytest_twisted.ensureDeferred
async def test_ws_messages_filter_correlation(cp):
    """?correlation_id= keeps only that chain, combined with the instance filter."""
    await messaging_pair(cp)
    client = await WSClient.connect(cp.url, "/ws/messages?correlation_id=chain-9&instance=b")
    await client.frame()
    await send(cp, correlation_id="chain-1")
    wanted = await send(cp, correlation_id="chain-9")
    await send(cp, correlation_id="chain-2")
    frame = await client.frame(timeout=1)
    assert frame["message_id"] == wanted and frame["correlation_id"] == "chain-9"
    await sleep(0.2)
    assert len(client.received) == 2
    await client.close()


@pytest_twisted.ensureDeferred
async def test_ws_no_secrets_in_message_stream(cp):
    """Message frames carry metadata only: no payload, no secret, even in failure details."""
    await messaging_pair(cp)
    client = await WSClient.connect(cp.url, "/ws/messages")
    await client.frame()
    message_id = await send(cp)
    _, got = await get_json(cp.api("/instances/b/messages/pending"))
    body = {"lease_id": got["message"]["lease_id"], "detail": f"token={CANARY}"}
    await post_json(cp.api(f"/messages/{message_id}/fail"), body)
    frames = [await client.frame(timeout=1) for _ in range(4)]
    for frame in frames:
        assert set(frame) == {
            "type", "message_id", "event", "from", "to", "message_type",
            "correlation_id", "detail", "seq", "timestamp",
        }  # fmt: skip
    again = await WSClient.connect(cp.url, "/ws/messages")
    await again.frame()
    raw = b"".join(client.raw + again.raw)
    assert CANARY.encode() not in raw and b"streamcanary" not in raw and b"payload" not in raw
    assert frames[2]["detail"] == "token=[REDACTED]"
    await client.close()
    await again.close()


# -- shared protocol ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_ws_keepalive(cp, reactor):
    """A ping frame is answered by a pong at once, on every stream."""
    await create(cp.url, "a")
    for path in ("/ws/instances", "/ws/messages", "/ws/instances/a/logs"):
        client = await WSClient.connect(cp.url, path)
        await client.frame()
        started = reactor.seconds()
        client.send({"type": "ping"})
        assert await client.frame(timeout=5) == {"type": "pong"}
        assert reactor.seconds() - started < 1
        await client.close()


@pytest_twisted.ensureDeferred
async def test_ws_idle_disconnect(data_dir):
    """No client frame for the idle timeout closes with 1001 'idle timeout'; a ping defers it."""
    from tests.conftest import build_control_plane

    service = build_control_plane(data_dir, "--idle-timeout", "0.6")
    service.startService()
    authorize(service.web.url, read_token(data_dir))
    try:
        client = await WSClient.connect(service.web.url, "/ws/instances")
        await client.frame()
        for _ in range(3):
            await sleep(0.3)
            client.send({"type": "ping"})
            assert (await client.frame())["type"] == "pong"
        code, reason = await client.wait_closed(timeout=3)
        assert (code, reason) == (1001, "idle timeout")
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_ws_graceful_shutdown(cp, reactor):
    """Stopping the service sends close 1001 'server shutdown' to every client, then stops."""
    await create(cp.url, "a")
    clients = [
        await WSClient.connect(cp.url, path)
        for path in ("/ws/instances", "/ws/messages", "/ws/instances/a/logs") * 3
    ]
    for client in clients:
        await client.frame()
    started = reactor.seconds()
    await cp.service.stopService()
    assert reactor.seconds() - started < 2.5
    for client in clients:
        assert await client.wait_closed() == (1001, "server shutdown")
    assert cp.service.streams.connections == set()


@pytest_twisted.ensureDeferred
async def test_invalid_frames_close_with_1008(cp):
    """Binary, non-JSON and unknown-type frames get invalid_frame, then close 1008."""
    for send_bad in (
        lambda c: c.send_raw(b"\x00\x01", binary=True),
        lambda c: c.send_raw(b"not json"),
        lambda c: c.send({"type": "launch_missiles"}),
        lambda c: c.send(["ping"]),
        lambda c: c.send({"type": "set_include_archived", "value": "yes"}),
    ):
        client = await WSClient.connect(cp.url, "/ws/instances")
        await client.frame()
        send_bad(client)
        frame = await client.frame()
        assert (frame["type"], frame["code"]) == ("error", "invalid_frame")
        assert (await client.wait_closed())[0] == 1008


STREAM_PATHS = ("/ws/instances", "/ws/messages", "/ws/instances/limits/logs")


@pytest_twisted.ensureDeferred
async def test_oversized_client_message_closes_with_1009(cp):
    """On every stream a client message over 64 KiB closes with 1009; 64 KiB exactly is fine."""
    await create(cp.url, "limits")
    log_path(cp, "limits").touch()
    for path in STREAM_PATHS:
        client = await WSClient.connect(cp.url, path)
        await client.frame()
        client.send_raw(json.dumps({"type": "ping", "pad": "x" * (65536 - 28)}).encode())
        assert (await client.frame_of("pong"))["type"] == "pong"
        client.send_raw(b" " * 65537)
        assert (await client.wait_closed())[0] == 1009, path


@pytest_twisted.ensureDeferred
async def test_compressed_oversized_message_closes_with_1009(cp):
    """With permessage-deflate the 64 KiB limit holds for the inflated size (no zip bomb)."""
    await create(cp.url, "bomb")
    log_path(cp, "bomb").touch()
    client = await WSClient.connect(cp.url, "/ws/instances/bomb/logs", compress=True)
    assert client.compressed
    await client.frame()
    client.send_raw(json.dumps({"type": "ping", "pad": "x" * (65536 - 28)}).encode())
    assert (await client.frame())["type"] == "pong"
    assert len(zlib.compress(b" " * 1024 * 1024)) < 4096
    client.send_raw(b" " * 1024 * 1024)
    assert (await client.wait_closed())[0] == 1009


@pytest_twisted.ensureDeferred
async def test_unknown_paths_and_plain_gets(cp):
    """Unknown /ws/ paths are 404 before any upgrade; a plain GET is a JSON 400."""
    for path in ("/ws/nothing", "/ws/instances/a/other", "/ws/instances/a", "/ws/messages/x"):
        client = await raw_upgrade(cp, path)
        assert client.data.startswith(b"HTTP/1.1 404 "), (path, client.data)
    response = await http.get(cp.url + "/ws/instances?redirect=http://evil.example")
    body = await response.content()
    assert response.code == 400 and b"<html" not in body.lower()
    assert response.headers.getRawHeaders(b"location") is None


@pytest_twisted.ensureDeferred
async def test_foreign_origin_is_refused_before_upgrade(cp):
    """A foreign Origin gets 403 and no frame; same-origin upgrades."""
    port = cp.service.web.port.getHost().port
    refused = await raw_upgrade(cp, "/ws/instances", [("Origin", "http://evil.example")])
    assert refused.data.startswith(b"HTTP/1.1 403 ")
    allowed = await raw_upgrade(cp, "/ws/instances", [("Origin", f"http://127.0.0.1:{port}")])
    assert allowed.data.startswith(b"HTTP/1.1 101 ")
    allowed.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_connection_cap_answers_503(data_dir):
    """Past --max-connections the next upgrade is 503; open streams are unaffected."""
    from tests.conftest import build_control_plane

    service = build_control_plane(data_dir, "--max-connections", "2")
    service.startService()
    authorize(service.web.url, read_token(data_dir))
    try:
        clients = [await WSClient.connect(service.web.url, "/ws/instances") for _ in range(2)]
        port = service.web.port.getHost().port
        over = await raw.connect(port)
        token = ("Authorization", f"Bearer {read_token(data_dir)}")
        over.write(wsraw.upgrade("/ws/messages", f"127.0.0.1:{port}", [token]))
        await wait_for(lambda: b"\r\n\r\n" in over.data)
        assert over.data.startswith(b"HTTP/1.1 503 ")
        clients[0].send({"type": "ping"})
        await clients[0].frame()
        assert (await clients[0].frame())["type"] == "pong"
        for client in clients:
            await client.close()
    finally:
        await service.stopService()


# -- the brief's integration tests ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_integration_dashboard_sees_every_delta(cp):
    """Connect a dashboard client; create/start/stop/archive; every delta arrives."""
    client = await WSClient.connect(cp.url, "/ws/instances")
    await client.frame()
    await create(cp.url, "a")
    await post_json(cp.api("/instances/a/start"))
    await wait_for(lambda: cp.registry.get("a").status == "running")
    await post_json(cp.api("/instances/a/stop"))
    await post_json(cp.api("/instances/a/archive"))
    kinds = []
    while len(kinds) < 6:
        frame = await client.frame(timeout=2)
        kinds.append(frame.get("status") or frame["type"])
    assert kinds == [
        "stopped",
        "starting",
        "running",
        "stopping",
        "stopped",
        "instance_archived",
    ]
    await client.close()


@pytest_twisted.ensureDeferred
async def test_integration_log_written_externally_streams(cp):
    """Open a log stream, write to the file from outside, see the lines."""
    await create(cp.url, "a")
    path = log_path(cp, "a")
    client = await WSClient.connect(cp.url, "/ws/instances/a/logs")
    await client.frame()
    for n in range(5):
        append(path, b"external %d\n" % n)
        await sleep(0.05)
    lines = []
    while len(lines) < 5:
        lines += (await client.frame(timeout=2))["lines"]
    assert lines == [f"external {n}" for n in range(5)]
    await client.close()


@pytest_twisted.ensureDeferred
async def test_integration_multiple_clients_receive_the_same_events(cp):
    """Several clients receive byte-identical delta frames in the same order."""
    clients = [await WSClient.connect(cp.url, "/ws/instances") for _ in range(5)]
    for client in clients:
        await client.frame()
    for name in ("a", "b", "c"):
        await create(cp.url, name)
    for client in clients:
        await wait_for(lambda c=client: len(c.raw) == 4)
    assert len({tuple(c.raw[1:]) for c in clients}) == 1
    for client in clients:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_integration_rest_polling_alongside_streams(cp):
    """REST keeps answering unchanged while streams are open."""
    await create(cp.url, "a")
    clients = [
        await WSClient.connect(cp.url, path)
        for path in ("/ws/instances", "/ws/messages", "/ws/instances/a/logs")
    ]
    for _ in range(3):
        code, listed = await get_json(cp.api("/instances"))
        assert code == 200 and listed[0]["name"] == "a"
        code, health = await get_json(cp.api("/health"))
        assert health["status"] == "ok"
        code, logs = await get_json(cp.api("/instances/a/logs"))
        assert code == 200
    for client in clients:
        await client.close()


# -- DESIGN.md 4 decisions ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_snapshot_and_subscription_leave_no_gap(cp, reactor):
    """Clients connecting while events flow see contiguous seqs after their snapshot."""
    await create(cp.url, "a")
    target = cp.registry.get("a")
    clients = []
    for round_ in range(10):
        clients.append(await WSClient.connect(cp.url, "/ws/instances"))
        for n in range(20):
            cp.registry.set_status(target, "running" if n % 2 else "unhealthy", pid=round_ + 1)
    final = cp.registry.snapshot(False)["seq"]
    for client in clients:
        await wait_for(lambda c=client: sequenced(c.received)[-1].get("seq") == final)
        snapshot, *deltas = sequenced(client.received)
        assert [d["seq"] for d in deltas] == list(range(snapshot["seq"] + 1, final + 1))
        await client.close()


@pytest_twisted.ensureDeferred
async def test_server_frames_may_exceed_the_client_message_limit(cp):
    """Backlogs, batches and snapshots over 64 KiB are sent whole (the limit is inbound)."""
    for n in range(500):
        await create(cp.url, f"agent-with-a-rather-long-name-{n:04d}", port=20000 + n)
    client = await WSClient.connect(cp.url, "/ws/instances")
    snapshot = await client.frame()
    assert len(snapshot["instances"]) == 500 and len(client.raw[0]) > 65536
    path = log_path(cp, "agent-with-a-rather-long-name-0000")
    append(path, b"".join(b"%04d %s\n" % (n, b"y" * 200) for n in range(1000)))
    logs = await WSClient.connect(
        cp.url, "/ws/instances/agent-with-a-rather-long-name-0000/logs?backlog=1000"
    )
    backlog = await logs.frame()
    assert backlog["count"] == 1000 and len(logs.raw[0]) > 65536
    append(path, b"".join(b"%04d %s\n" % (n, b"z" * 200) for n in range(1000)))
    batch = await logs.frame(timeout=3)
    assert batch["count"] == 1000 and len(logs.raw[1]) > 65536
    await client.close()
    await logs.close()
