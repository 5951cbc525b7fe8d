"""Case 12: secrets at volume. Canaries in 1,000 payloads and in failure details appear in
no frame, no REST answer, no SQLite file (WAL included) and not in the daemon's log."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet import defer

from tests.hardening.report import record
from tests.support import http, post_json, sleep, wait_for
from tests.wsclient import WSClient

MARK = "c4n4ry"
MESSAGES = 1000
FAILURES = 100
CONCURRENCY = 20


def pem(n: int) -> str:
    body = f"MIIEow{MARK}{n:05d}AAKCAQEAx" + "A" * 40
    return f"-----BEGIN RSA PRIVATE KEY-----\n{body}\n{body}\n-----END RSA PRIVATE KEY-----"


def payload(n: int) -> dict:
    """Every kind of canary the issue names, in values and keys and free text."""
    return {
        "task": f"job-{n}",
        "note": f"call it with sk-{MARK}{n:05d}abcdefgh and be quick",
        "config": f"db=main password={MARK}{n:05d}pw retries=3",
        "headers": {"X-Trace": f"t-{n}", "Authorization": f"Bearer {MARK}{n:05d}tokenvalue"},
        "log": f"curl -H 'Authorization: Bearer {MARK}{n:05d}zzzzzzzz' http://x",
        "password": f"{MARK}{n:05d}plain",
        "nested": [{"api_key": f"{MARK}{n:05d}key"}, {"text": pem(n)}],
    }


def detail(n: int) -> str:
    return (
        f"upstream said 401 for Bearer {MARK}{n:05d}failtoken; retried with "
        f"password={MARK}{n:05d}again and sk-{MARK}{n:05d}failkey\n{pem(n)}"
    )


@pytest.mark.timeout(120)
@pytest_twisted.ensureDeferred
async def test_canaries_never_leave_the_redactor(daemons):
    """Zero canary hits in frames, REST answers, the SQLite files and the daemon's log."""
    daemon = await daemons.start()
    url = daemon.url
    for name in ("a", "b"):
        await post_json(url + "/api/instances", {"name": name})
    rule = {"from_instance": "a", "to_instance": "b", "type_pattern": "task.*", "max_retries": 0}
    assert (await post_json(url + "/api/routing-rules", rule))[0] == 201
    streams = [await WSClient.connect(url, path) for path in ("/ws/messages", "/ws/instances")]
    answers: list[bytes] = []

    async def call(method: str, path: str, body: object = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        headers = {b"Content-Type": [b"application/json"]} if data is not None else {}
        response = await http.request(method, url + path, data=data, headers=headers)
        raw = await response.content()
        answers.append(raw)
        assert response.code < 300, (path, response.code, raw[:200])
        return json.loads(raw)

    ids: list[str] = []

    async def sender(worker: int) -> None:
        for n in range(worker, MESSAGES, CONCURRENCY):
            body = {
                "from_instance": "a",
                "to_instance": "b",
                "message_type": "task.secret",
                "payload": payload(n),
                "correlation_id": f"chain-{n}",
            }
            ids.append((await call("POST", "/api/messages", body))["id"])

    await defer.gatherResults([defer.ensureDeferred(sender(w)) for w in range(CONCURRENCY)])
    for n in range(FAILURES):
        leased = await call("GET", "/api/instances/b/messages/pending")
        message = leased["message"]
        body = {"lease_id": message["lease_id"], "detail": detail(n)}
        await call("POST", f"/api/messages/{message['id']}/fail", body)
    for _ in range(50):
        leased = await call("GET", "/api/instances/b/messages/pending")
        message = leased["message"]
        lease = {"lease_id": message["lease_id"]}
        await call("POST", f"/api/messages/{message['id']}/acknowledge", lease)
    for message_id in ids[:200]:
        await call("GET", f"/api/messages/{message_id}")
    for path in (
        "/api/messages?limit=1000",
        "/api/messages/dead_letter?limit=1000",
        "/api/instances/a/messages?direction=out&limit=1000",
        "/api/instances/b/logs",
    ):
        await call("GET", path)
    expected_events = MESSAGES + 3 * FAILURES + 2 * 50
    await wait_for(lambda: len(streams[0].received) >= 1 + expected_events, timeout=30)
    late = await WSClient.connect(url, "/ws/messages")
    await late.frame()
    streams.append(late)
    await sleep(0.5)

    frames = b"".join(b"".join(client.raw) for client in streams)
    db_files = sorted(daemon.data_dir.glob("cp.db*"))
    stored = {path.name: path.read_bytes() for path in db_files}
    for client in streams:
        await client.close()
    await daemon.stop()
    stored_after = {path.name: path.read_bytes() for path in sorted(daemon.data_dir.glob("cp.db*"))}
    log = daemon.output
    sinks = {
        "frames": frames,
        "REST answers": b"".join(answers),
        **{f"{name} (running)": data for name, data in stored.items()},
        **{f"{name} (stopped)": data for name, data in stored_after.items()},
        "daemon log": log,
    }
    hits = {name: data.count(MARK.encode()) for name, data in sinks.items()}
    assert b"[REDACTED]" in frames and b"[REDACTED]" in b"".join(answers)
    assert any(name.endswith("-wal (running)") for name in sinks), sorted(sinks)
    assert sum(hits.values()) == 0, hits
    volume = {name: len(data) for name, data in sinks.items()}
    record(
        "12 secret canaries",
        f"{MESSAGES} messages whose payloads carry sk-..., password=..., Bearer tokens, PEM "
        f"private keys (as values, secret-named keys and free text), {FAILURES} failures "
        "with canary details",
        "redacted before storage: nothing to find anywhere",
        f"0 hits in {len(answers)} REST answers, {sum(len(c.raw) for c in streams)} frames, "
        f"{len(stored)} SQLite files (cp.db, -wal, -shm) while running and after stop, and "
        f"{len(log) // 1024} KiB of daemon log",
        hits=hits,
        bytes_scanned=volume,
    )
