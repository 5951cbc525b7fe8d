"""Stream integrity against a real daemon: nothing lost silently, resume across restarts."""

from __future__ import annotations

import os

import pytest_twisted
from twisted.internet import defer

from tests.hardening import raw
from tests.support import (
    create,
    get_json,
    instance_log,
    post_json,
    read_token,
    sequenced,
    sleep,
    wait_for,
)
from tests.wsclient import WSClient


def deltas_are_contiguous(frames: list[dict]) -> bool:
    """Every delta's seq is the previous one's + 1, counting from a snapshot's seq or a
    resume's ``since``."""
    last = None
    for frame in frames:
        if frame["type"] == "snapshot":
            last = frame["seq"]
        elif frame["type"] == "resumed":
            last = frame["since"]
        elif "seq" in frame:
            if last is not None and frame["seq"] != last + 1:
                return False
            last = frame["seq"]
    return True


@pytest_twisted.ensureDeferred
async def test_a_sweep_burst_never_loses_events_silently(daemon):
    """150 messages expiring in one sweep (300 events in one reactor turn): a reading
    client gets every event in order or a resync snapshot, never a silent jump."""
    for name in ("a", "b"):
        await create(daemon.url, name)
    rule = {"from_instance": "a", "to_instance": "b", "type_pattern": "t.*", "ttl_secs": 1}
    assert (await post_json(f"{daemon.url}/api/routing-rules", rule))[0] == 201
    watcher = await WSClient.connect(daemon.url, "/ws/messages")
    sends = [
        defer.ensureDeferred(
            post_json(
                f"{daemon.url}/api/messages",
                {"from_instance": "a", "to_instance": "b", "message_type": "t.x"},
            )
        )
        for _ in range(150)
    ]
    await defer.gatherResults(sends)
    await wait_for(
        lambda: (
            sum(f.get("event") == "dead_lettered" for f in watcher.received) == 150
            or any(f.get("resync") for f in watcher.received)
        ),
        timeout=20,
    )
    await sleep(0.5)
    assert deltas_are_contiguous(watcher.received), [f.get("seq") for f in watcher.received]
    last = watcher.received[-1]
    _, stored = await get_json(f"{daemon.url}/api/messages?status=dead_letter&limit=1000")
    assert len(stored) == 150
    assert last.get("event") == "dead_lettered" or last.get("resync")
    await watcher.close()


@pytest_twisted.ensureDeferred
async def test_resume_across_a_daemon_restart(daemon):
    """A client that left at seq S resumes after a restart with exactly what it missed:
    the resumed frame, the events before and after the restart, then live ones."""
    await create(daemon.url, "a")
    client = await WSClient.connect(daemon.url, "/ws/instances")
    snapshot = await client.frame()
    await client.close()
    await create(daemon.url, "b")
    await daemon.stop()
    await daemon.start()
    await create(daemon.url, "c")
    query = f"since={snapshot['seq']}&epoch={snapshot['epoch']}"
    client = await WSClient.connect(daemon.url, f"/ws/instances?{query}")
    resumed = await client.frame()
    assert resumed["type"] == "resumed" and resumed["since"] == snapshot["seq"]
    created = [await client.frame_of("instance_created") for _ in range(2)]
    assert [f["name"] for f in created] == ["b", "c"]
    await create(daemon.url, "d")
    live = await client.frame_of("instance_created")
    assert live["name"] == "d"
    assert deltas_are_contiguous(client.received)
    assert sequenced(client.received)[-1]["seq"] == resumed["seq"] + 1
    await client.close()


@pytest_twisted.ensureDeferred
async def test_a_resume_from_another_database_gets_a_snapshot(daemon):
    """An epoch the database does not have: snapshot, resync, reason epoch."""
    client = await WSClient.connect(daemon.url, "/ws/messages?since=3&epoch=0000")
    first = await client.frame()
    assert (first["type"], first["resync"], first["reason"]) == ("snapshot", True, "epoch")
    await client.close()


@pytest_twisted.ensureDeferred
async def test_the_log_cursor_resumes_across_a_daemon_restart(daemon):
    """A log viewer's last cursor resumes after a restart, right after its last line."""
    await create(daemon.url, "a")
    path = instance_log(daemon.data_dir, "a")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"one\ntwo\n")
    viewer = await WSClient.connect(daemon.url, "/ws/instances/a/logs")
    backlog = await viewer.frame()
    assert backlog["lines"] == ["one", "two"]
    await viewer.close()
    await daemon.stop()
    with open(path, "ab") as f:
        f.write(b"three\n")
    await daemon.start()
    viewer = await WSClient.connect(daemon.url, f"/ws/instances/a/logs?cursor={backlog['cursor']}")
    first = await viewer.frame()
    assert first["type"] == "backlog" and first["resumed"] is True and first["lines"] == []
    lines = await viewer.frame_of("lines")
    assert lines["lines"] == ["three"]
    await viewer.close()
    gone = await WSClient.connect(daemon.url, "/ws/instances/a/logs?cursor=AQAA")
    assert (await gone.frame())["code"] == "bad_request"
    assert (await gone.wait_closed())[0] == 4400


@pytest_twisted.ensureDeferred
async def test_a_download_sends_exactly_its_content_length(daemon):
    """A log that grows during a download: the body is the file as it was, and the next
    request on the same connection is answered normally."""
    await create(daemon.url, "a")
    path = instance_log(daemon.data_dir, "a")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * 4_000_000 + b"\n")
    client = await raw.connect(daemon.port, rcvbuf=4096)
    head = (
        f"Host: 127.0.0.1:{daemon.port}\r\n"
        f"Authorization: Bearer {read_token(daemon.data_dir)}\r\n\r\n"
    )
    client.write(f"GET /api/instances/a/logs/download HTTP/1.1\r\n{head}".encode())
    await client.until(lambda c: b"\r\n\r\n" in c.data, timeout=10)
    with open(path, "ab") as f:
        f.write(b"y" * 1_000_000 + b"\n")
    client.transport.getHandle().setsockopt(raw.socket.SOL_SOCKET, raw.socket.SO_RCVBUF, 1 << 22)
    answer = await client.response(timeout=20)
    assert answer.status == 200 and len(answer.body) == 4_000_001
    assert answer.body == b"x" * 4_000_000 + b"\n"
    await sleep(0.5)
    assert raw.parse_response(client.data).rest == b"", "bytes past the Content-Length"
    client.data = b""
    client.write(f"GET /api/health HTTP/1.1\r\n{head}".encode())
    second = await client.response(timeout=10)
    assert second.status == 200 and b'"status": "ok"' in second.body
    client.abort()


@pytest_twisted.ensureDeferred
async def test_instance_history_is_served_by_rest(daemon):
    """GET /api/instances/NAME/events: the lifecycle rows, newest first, with their seq."""
    await create(daemon.url, "a")
    await post_json(f"{daemon.url}/api/instances/a/start")
    await wait_for(lambda: True)
    code, events = await get_json(f"{daemon.url}/api/instances/a/events?limit=10")
    assert code == 200 and events[-1]["type"] == "instance_created"
    assert [e["seq"] for e in events] == sorted((e["seq"] for e in events), reverse=True)
    code, error = await get_json(f"{daemon.url}/api/instances/a/events?before=x")
    assert code == 400 and "before" in error["error"]
    await post_json(f"{daemon.url}/api/instances/a/stop")
    assert os.path.exists(daemon.data_dir / "cp.db")
