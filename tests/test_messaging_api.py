"""Messaging over REST on a real socket, and the demo pair exchanging messages for real."""

from __future__ import annotations

import json

import pytest_twisted
from twisted.internet import defer, protocol
from twisted.logger import formatEvent, globalLogPublisher

from cpstream.domain.inbox import Inbox
from tests.support import (
    Daemon,
    get_json,
    http,
    instance_log,
    kill_processes_with,
    post_json,
    read_token,
    sleep,
    wait_for,
)

CANARIES = [
    "sk-canaryAAAA1111bbbb2222",
    "password=hunter2-canary-pw",
    "Bearer canaryBEARERtoken0123456789",
    "ghp_canary0123456789abcdefghijklmn",
]
PEM = "-----BEGIN PRIVATE KEY-----\nMIIEcanaryPEMbody\n-----END PRIVATE KEY-----"


async def setup_pair(cp):
    for name in ("a", "b"):
        code, _ = await post_json(cp.api("/instances"), {"name": name})
        assert code == 201
    code, rule = await post_json(
        cp.api("/routing-rules"),
        {"from_instance": "a", "to_instance": "b", "type_pattern": "task.*"},
    )
    assert code == 201
    return rule


def send_body(**extra):
    return {
        "from_instance": "a",
        "to_instance": "b",
        "message_type": "task.handoff",
        "payload": {"n": 1},
        **extra,
    }


@pytest_twisted.ensureDeferred
async def test_routing_rules_crud(cp):
    """Rules are listed, created (201) and deleted; bad input gets its status."""
    rule = await setup_pair(cp)
    assert (await get_json(cp.api("/routing-rules")))[1] == [rule]
    code, body = await post_json(
        cp.api("/routing-rules"),
        {"from_instance": "a", "to_instance": "ghost", "type_pattern": "x"},
    )
    assert code == 404
    response = await http.delete(cp.api(f"/routing-rules/{rule['id']}"))
    assert response.code == 200
    response = await http.delete(cp.api(f"/routing-rules/{rule['id']}"))
    assert response.code == 404


@pytest_twisted.ensureDeferred
async def test_send_errors_over_rest(cp):
    """Each refused send has its own status and a clear JSON error."""
    await setup_pair(cp)
    cases = [
        (send_body(to_instance="ghost"), 404),
        (send_body(payload="x" * 70_000), 413),
        (send_body(hop_count=8), 400),
        (send_body(message_type="chat.hello"), 403),
        (send_body(extra=1), 400),
    ]
    for body, status in cases:
        code, answer = await post_json(cp.api("/messages"), body)
        assert code == status and answer["error"], (body, answer)
    code, answer = await post_json(cp.api("/messages"), send_body(idempotency_key="k"))
    assert code == 201 and answer["status"] == "queued"
    again = await post_json(cp.api("/messages"), send_body(idempotency_key="k"))
    assert again == (200, {"id": answer["id"], "deduplicated": True})


@pytest_twisted.ensureDeferred
async def test_full_flow_and_observability(cp):
    """Send, receive, ack, then read it back by id, search, per-instance and dead letters."""
    await setup_pair(cp)
    _, sent = await post_json(cp.api("/messages"), send_body(correlation_id="chain-1"))
    code, got = await get_json(cp.api("/instances/b/messages/pending?wait=1"))
    assert code == 200 and got["message"]["id"] == sent["id"]
    assert got["message"]["payload"] == {"n": 1}
    lease = {"lease_id": got["message"]["lease_id"]}
    code, acked = await post_json(cp.api(f"/messages/{sent['id']}/acknowledge"), lease)
    assert (code, acked["status"]) == (200, "acknowledged")
    code, again = await post_json(cp.api(f"/messages/{sent['id']}/acknowledge"), lease)
    assert code == 409
    code, one = await get_json(cp.api(f"/messages/{sent['id']}"))
    assert [e["event"] for e in one["events"]] == ["queued", "delivered", "acknowledged"]
    code, found = await get_json(cp.api("/messages?instance=b&correlation_id=chain-1"))
    assert [m["id"] for m in found] == [sent["id"]] and "payload" not in found[0]
    code, found = await get_json(cp.api("/messages?status=bogus"))
    assert code == 400
    code, inbound = await get_json(cp.api("/instances/b/messages?direction=in"))
    code, outbound = await get_json(cp.api("/instances/b/messages?direction=out"))
    assert len(inbound) == 1 and outbound == []
    code, dead = await get_json(cp.api("/messages/dead_letter"))
    assert (code, dead) == (200, [])
    code, body = await get_json(cp.api("/messages/no-such-id"))
    assert code == 404


@pytest_twisted.ensureDeferred
async def test_fail_and_replay_over_rest(cp):
    """Fail with max_retries 0 dead-letters at once; replay queues it again."""
    for name in ("a", "b"):
        await post_json(cp.api("/instances"), {"name": name})
    await post_json(
        cp.api("/routing-rules"),
        {"from_instance": "a", "to_instance": "b", "type_pattern": "task.*", "max_retries": 0},
    )
    _, sent = await post_json(cp.api("/messages"), send_body())
    _, got = await get_json(cp.api("/instances/b/messages/pending"))
    lease = got["message"]["lease_id"]
    code, failed = await post_json(
        cp.api(f"/messages/{sent['id']}/fail"), {"lease_id": lease, "detail": "bad"}
    )
    assert (code, failed["status"]) == (200, "dead_letter")
    code, dead = await get_json(cp.api("/messages/dead_letter"))
    assert [m["id"] for m in dead] == [sent["id"]]
    code, replayed = await post_json(cp.api(f"/messages/{sent['id']}/replay"))
    assert (code, replayed["status"]) == (200, "queued")
    code, body = await post_json(cp.api(f"/messages/{sent['id']}/replay"))
    assert code == 409


@pytest_twisted.ensureDeferred
async def test_secrets_never_reach_db_responses_or_log(cp):
    """Canaries in payloads and details appear in no DB file, API response or log line."""
    logged: list[str] = []

    def observe(event):
        logged.append(formatEvent(event) + repr(event.get("log_failure", "")))

    globalLogPublisher.addObserver(observe)
    responses: list[str] = []
    try:
        await setup_pair(cp)
        payload = {
            "text": " ".join(CANARIES),
            "deep": {"list": [{"api_key": "canary-apikey-value"}, PEM]},
            "password": "canary-plain-password",
        }
        for _ in range(3):
            code, sent = await post_json(cp.api("/messages"), send_body(payload=payload))
            responses.append(json.dumps(sent))
            code, got = await get_json(cp.api("/instances/b/messages/pending"))
            responses.append(json.dumps(got))
            code, failed = await post_json(
                cp.api(f"/messages/{sent['id']}/fail"),
                {
                    "lease_id": got["message"]["lease_id"],
                    "detail": f"crashed with token={CANARIES[0]} and {CANARIES[2]}",
                },
            )
            responses.append(json.dumps(failed))
            for path in (f"/messages/{sent['id']}", "/messages", "/messages/dead_letter"):
                responses.append(json.dumps((await get_json(cp.api(path)))[1]))
        code, refused = await post_json(
            cp.api("/messages"), send_body(payload="x" * 70_000 + CANARIES[0])
        )
        responses.append(json.dumps(refused))
    finally:
        globalLogPublisher.removeObserver(observe)
    await cp.service.stopService()
    haystacks = {"responses": "\n".join(responses), "log": "\n".join(logged)}
    for path in cp.data_dir.glob("cp.db*"):
        haystacks[path.name] = path.read_bytes().decode("latin-1")
    assert "cp.db" in haystacks
    for where, text in haystacks.items():
        assert "canary" not in text.lower(), where
    assert "[REDACTED]" in haystacks["responses"]


class Hanging(protocol.Protocol):
    def connectionMade(self) -> None:  # noqa: N802 (Twisted API)
        self.transport.write(self.factory.request)


@pytest_twisted.ensureDeferred
async def test_disconnected_long_poll_leaks_nothing(cp, reactor):
    """A receiver that hangs up while waiting is forgotten; the message stays queued."""
    await setup_pair(cp)
    [inbox] = [w for w in cp.service.workers if isinstance(w, Inbox)]
    port = cp.service.web.port.getHost().port
    factory = protocol.ClientFactory.forProtocol(Hanging)
    factory.request = (
        b"GET /api/instances/b/messages/pending?wait=30 HTTP/1.1\r\n"
        b"Host: 127.0.0.1:%d\r\nAuthorization: Bearer %s\r\n\r\n"
        % (port, read_token(cp.data_dir).encode())
    )
    connector = reactor.connectTCP("127.0.0.1", port, factory)
    await wait_for(lambda: inbox.waiting == 1)
    connector.disconnect()
    await wait_for(lambda: inbox.waiting == 0)
    _, sent = await post_json(cp.api("/messages"), send_body())
    code, one = await get_json(cp.api(f"/messages/{sent['id']}"))
    assert one["status"] == "queued"


@pytest_twisted.ensureDeferred
async def test_concurrent_long_polls_get_distinct_messages(cp):
    """Five receivers waiting at once each get a different message."""
    await setup_pair(cp)
    url = cp.api("/instances/b/messages/pending?wait=20")
    polls = [defer.ensureDeferred(get_json(url)) for _ in range(5)]
    [inbox] = [w for w in cp.service.workers if isinstance(w, Inbox)]
    await wait_for(lambda: inbox.waiting == 5)
    sent = [(await post_json(cp.api("/messages"), send_body()))[1]["id"] for _ in range(5)]
    got = [(await poll)[1]["message"]["id"] for poll in polls]
    assert sorted(got) == sorted(sent)


@pytest_twisted.ensureDeferred
async def test_pending_validates_wait_and_instance(cp):
    """wait outside 0..60 is 400; an unknown instance is 404; nothing queued is null."""
    await setup_pair(cp)
    assert (await get_json(cp.api("/instances/b/messages/pending?wait=61")))[0] == 400
    assert (await get_json(cp.api("/instances/ghost/messages/pending")))[0] == 404
    assert await get_json(cp.api("/instances/b/messages/pending?wait=0")) == (
        200,
        {"message": None},
    )


@pytest_twisted.ensureDeferred
async def test_demo_agents_exchange_and_acknowledge(data_dir):
    """With --demo, agent-1's task.handoffs reach agent-2 and are acknowledged, live."""
    daemon = Daemon(data_dir, "--demo")
    await daemon.start()
    try:
        chains: list = []

        async def acknowledged() -> list:
            code, found = await get_json(daemon.url + "/api/messages?instance=agent-2")
            return [m for m in found if m["status"] == "acknowledged"]

        for _ in range(600):  # generous: a loaded CI machine starts Python slowly
            chains = await acknowledged()
            if len(chains) >= 2:
                break
            await sleep(0.1)
        assert len(chains) >= 2, chains
        code, one = await get_json(daemon.url + f"/api/messages/{chains[-1]['id']}")
        assert [e["event"] for e in one["events"]] == ["queued", "delivered", "acknowledged"]
        assert one["correlation_id"].startswith("agent-1-")
        log = instance_log(data_dir, "agent-2").read_text()
        assert f"received task.handoff {one['id']}" in log
    finally:
        url = daemon.url
        await daemon.stop()
        kill_processes_with("CPSTREAM_URL", url)
