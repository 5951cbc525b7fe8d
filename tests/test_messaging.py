"""Messaging on a task.Clock: rules, send checks, leases, retries, TTL, redaction, events."""

from __future__ import annotations

import json
import sqlite3

import pytest
from twisted.internet import defer

from cpstream.domain.delivery import DeliveryWorker
from cpstream.domain.errors import DomainError
from cpstream.domain.messaging import MAX_PAYLOAD
from cpstream.web import bodies
from cpstream.web.errors import status_of
from tests.support import World

CANARY = "sk-canary0123456789abcdef"


class Messages(World):
    """Instances a, b and c, a rule a -> b for task.*, and messaging as REST drives it."""

    def __init__(self, tmp_path) -> None:
        super().__init__(tmp_path)
        self.worker = DeliveryWorker(self.messaging, self.clock)
        for name in ("a", "b", "c"):
            self.registry.create(name)
        self.rule = self.add_rule(
            {"from_instance": "a", "to_instance": "b", "type_pattern": "task.*", "max_retries": 2}
        )

    @property
    def frames(self) -> list[dict]:
        return self.message_frames.frames

    def add_rule(self, body):
        return self.rules.add(**bodies.rule_fields(body))

    def send(self, **extra):
        body = {
            "from_instance": "a",
            "to_instance": "b",
            "message_type": "task.handoff",
            "payload": {"n": 1},
            **extra,
        }
        answer = self.messaging.send(**bodies.send_fields(body))
        return (200 if answer.get("deduplicated") else 201), answer

    def events(self, message_id):
        return [e["event"] for e in self.store.messages.events_of(message_id)]

    def receive(self, wait=0):
        results = []
        self.inbox.receive("b", wait).addCallback(results.append)
        return results

    def lease_of(self, message_id):
        message = self.store.messages.get(message_id)
        return message["lease_id"] if message else "no-lease"

    def ack(self, message_id):
        """Acknowledge under the message's current lease, as its recipient would."""
        return self.messaging.acknowledge(message_id, self.lease_of(message_id))

    def fail(self, message_id, detail=None):
        """Fail under the message's current lease, as its recipient would."""
        return self.messaging.fail(message_id, self.lease_of(message_id), detail)

    def start_worker(self) -> None:
        self.worker.startService()
        self.inbox.startService()

    def stop_worker(self) -> None:
        self.worker.stopService()
        self.inbox.stopService()


@pytest.fixture
def world(tmp_path):
    made = Messages(tmp_path)
    yield made
    made.close()


def refused(call, *args, **kwargs) -> tuple[int, str]:
    with pytest.raises(DomainError) as info:
        call(*args, **kwargs)
    return status_of(info.value), info.value.message


def test_rule_validation(world):
    """Rules need existing instances, no wildcard ends, and an exact or prefix.* pattern."""
    add = world.add_rule
    base = {"from_instance": "a", "to_instance": "c", "type_pattern": "task.handoff"}
    assert refused(add, {**base, "to_instance": "ghost"})[0] == 404
    assert refused(add, {**base, "from_instance": "*"})[0] == 400
    for pattern in ("*", "task*", "task.*.x", "", "task..x", "*.task"):
        assert refused(add, {**base, "type_pattern": pattern})[0] == 400, pattern
    assert refused(add, {**base, "max_retries": -1})[0] == 400
    assert refused(add, {**base, "ttl_secs": 0})[0] == 400
    rule = add(base)
    assert (rule["max_retries"], rule["ttl_secs"]) == (5, 3600)
    assert refused(add, base)[0] == 409
    world.rules.delete(rule["id"])
    assert refused(world.rules.delete, rule["id"])[0] == 404


def test_send_checks_in_order(world):
    """Unknown instance 404, then payload 413, then hop_count 400, then no route 403."""
    big = {"x": "y" * MAX_PAYLOAD}
    assert refused(world.send, to_instance="ghost", payload=big, hop_count=9)[0] == 404
    assert refused(world.send, payload=big, hop_count=9, message_type="other.kind")[0] == 413
    assert refused(world.send, hop_count=8, message_type="other.kind")[0] == 400
    assert refused(world.send, message_type="other.kind")[0] == 403
    assert refused(world.send, to_instance="c")[0] == 403
    assert world.send(hop_count=7)[0] == 201
    assert world.send(payload={"x": "y" * (MAX_PAYLOAD - 8)})[0] == 201


def test_send_rejects_malformed_fields(world):
    """Missing or mistyped fields are 400 and store nothing."""
    for extra in (
        {"message_type": None},
        {"message_type": "has space"},
        {"hop_count": "1"},
        {"hop_count": -1},
        {"correlation_id": 5},
        {"surprise": 1},
    ):
        assert refused(world.send, **extra)[0] == 400, extra
    assert world.store.messages.search() == []


def test_send_queues_and_publishes(world):
    """A send stores the message, appends 'queued' and publishes one message_event."""
    status, answer = world.send(correlation_id="c-1")
    assert status == 201 and answer["status"] == "queued"
    assert answer["expires_at"] > world.messaging._now()
    assert world.events(answer["id"]) == ["queued"]
    frame = world.frames[-1]
    assert frame["type"] == "message_event" and frame["event"] == "queued"
    assert (frame["from"], frame["to"], frame["correlation_id"]) == ("a", "b", "c-1")
    assert "payload" not in frame


def test_most_specific_rule_sets_retries_and_ttl(world):
    """An exact rule wins over a wildcard for the same route."""
    world.add_rule(
        {"from_instance": "a", "to_instance": "b", "type_pattern": "task.handoff",
         "max_retries": 9, "ttl_secs": 60}
    )  # fmt: skip
    _, answer = world.send()
    message = world.store.messages.get(answer["id"])
    assert (message["max_retries"], message["ttl_secs"]) == (9, 60)


def test_idempotency_key_deduplicates_within_24h(world):
    """A repeated key within 24 h returns the first id; after 24 h it sends again."""
    first = world.send(idempotency_key="k1")
    again = world.send(idempotency_key="k1", payload={"other": True})
    assert again == (200, {"id": first[1]["id"], "deduplicated": True})
    assert len(world.store.messages.search()) == 1
    world.clock.advance(24 * 3600 + 1)
    later = world.send(idempotency_key="k1")
    assert later[0] == 201 and later[1]["id"] != first[1]["id"]


def test_payload_and_detail_are_redacted_before_storage(world, tmp_path):
    """Secrets in nested payloads and in failure details never reach the database file."""
    payload = {
        "note": f"use {CANARY} please",
        "nested": [{"password": "hunter2-canary"}, {"auth": {"token": "x"}}],
        "header": "Authorization: Bearer abcdefghijklmnop-canary",
        "pem": "-----BEGIN RSA PRIVATE KEY-----\nMIIcanary\n-----END RSA PRIVATE KEY-----",
        "ok": "keep me",
    }
    _, answer = world.send(payload=payload)
    stored = world.store.messages.get(answer["id"])["payload"]
    assert stored["ok"] == "keep me" and stored["nested"][0]["password"] == "[REDACTED]"
    [message] = world.receive()
    assert "canary" not in json.dumps(message)
    world.fail(answer["id"], f"upstream said password={CANARY}")
    world.store.close()
    for path in tmp_path.glob("cp.db*"):
        data = path.read_bytes()
        assert b"canary" not in data and CANARY.encode() not in data, path
    assert "canary" not in json.dumps(world.frames)


def test_receive_leases_oldest_first(world):
    """Receive leases the oldest queued message: delivered, attempts 1."""
    ids = [world.send()[1]["id"] for _ in range(3)]
    [first] = world.receive()
    assert first["id"] == ids[0] and first["status"] == "delivered" and first["attempts"] == 1
    assert first["payload"] == {"n": 1}
    assert world.receive()[0]["id"] == ids[1]


def test_waiting_receiver_is_woken_by_the_send(world):
    """A waiting receiver gets the message in the same turn as the send, no polling."""
    results = world.receive(wait=30)
    assert results == [] and world.inbox.waiting == 1
    _, answer = world.send()
    assert results[0]["id"] == answer["id"] and world.inbox.waiting == 0
    assert world.events(answer["id"]) == ["queued", "delivered"]


def test_waiting_receiver_times_out_with_null(world):
    """With nothing sent, the waiter answers None after `wait` seconds and is forgotten."""
    results = world.receive(wait=5)
    world.clock.advance(4.9)
    assert results == []
    world.clock.advance(0.1)
    assert results == [None] and world.inbox.waiting == 0


def test_cancelled_waiter_neither_leaks_nor_steals(world):
    """A receiver that disconnects is dropped; the next message stays queued for others."""
    waiting = world.inbox.receive("b", 30)
    waiting.addErrback(lambda f: f.trap(defer.CancelledError))
    waiting.cancel()
    assert world.inbox.waiting == 0 and not world.clock.getDelayedCalls()
    _, answer = world.send()
    assert world.store.messages.get(answer["id"])["status"] == "queued"


def test_concurrent_receivers_never_share_a_message(world):
    """Several waiters each get a different message, oldest waiter first."""
    waiters = [world.receive(wait=30) for _ in range(5)]
    ids = [world.send()[1]["id"] for _ in range(3)]
    got = [w[0]["id"] for w in waiters if w]
    assert got == ids and world.inbox.waiting == 2


def test_acknowledge_only_from_delivered(world):
    """Acknowledge moves delivered -> acknowledged; anything else is 409."""
    _, answer = world.send()
    assert refused(world.ack, answer["id"])[0] == 409
    world.receive()
    assert world.ack(answer["id"])["status"] == "acknowledged"
    assert refused(world.ack, answer["id"])[0] == 409
    assert refused(world.ack, "nope")[0] == 404


def test_fail_retries_with_backoff_then_dead_letters(world):
    """Fail requeues after 1 s, 2 s ... until max_retries, then dead-letters."""
    world.start_worker()
    _, answer = world.send()
    message_id = answer["id"]
    for backoff in (1.0, 2.0):
        [message] = world.receive()
        world.fail(message_id, "nope")
        assert world.store.messages.get(message_id)["status"] == "retry_scheduled"
        world.clock.advance(backoff - 0.5)
        assert world.receive() == [None]
        world.clock.advance(0.5)
        assert world.store.messages.get(message_id)["status"] == "queued"
    world.receive()
    world.fail(message_id, "still no")
    assert world.store.messages.get(message_id)["status"] == "dead_letter"
    assert world.events(message_id) == [
        "queued",
        *["delivered", "failed", "retry_scheduled", "queued"] * 2,
        "delivered", "failed", "dead_lettered",
    ]  # fmt: skip
    assert [m["id"] for m in world.messaging.search(status="dead_letter")] == [message_id]
    world.stop_worker()


def test_retry_wakes_a_waiting_receiver(world):
    """A waiter is handed the message as soon as its retry comes due."""
    world.start_worker()
    _, answer = world.send()
    world.receive()
    world.fail(answer["id"], "later")
    results = world.receive(wait=30)
    world.clock.advance(1.0)
    assert results and results[0]["id"] == answer["id"] and results[0]["attempts"] == 2
    world.stop_worker()


def test_unacknowledged_lease_returns_to_the_queue(world):
    """A lease not acknowledged within 60 s is failed and requeued by the worker."""
    world.start_worker()
    _, answer = world.send()
    world.receive()
    world.clock.advance(59)
    assert world.store.messages.get(answer["id"])["status"] == "delivered"
    world.clock.advance(1)
    assert world.store.messages.get(answer["id"])["status"] == "retry_scheduled"
    assert "lease expired" in world.store.messages.events_of(answer["id"])[-2]["detail"]
    world.clock.advance(1)
    assert world.receive()[0]["id"] == answer["id"]
    world.stop_worker()


def test_ttl_expires_to_dead_letter_and_replay_requeues(world):
    """Undelivered past its TTL: expired then dead_lettered; replay queues it again."""
    world.add_rule(
        {"from_instance": "a", "to_instance": "b", "type_pattern": "short.lived", "ttl_secs": 10}
    )
    world.start_worker()
    _, answer = world.send(message_type="short.lived")
    world.clock.advance(10)
    assert world.store.messages.get(answer["id"])["status"] == "dead_letter"
    assert world.events(answer["id"]) == ["queued", "expired", "dead_lettered"]
    assert refused(world.ack, answer["id"])[0] == 409
    results = world.receive(wait=30)
    world.messaging.replay(answer["id"])
    assert results[0]["id"] == answer["id"] and results[0]["attempts"] == 1
    assert world.events(answer["id"])[-2:] == ["replayed", "delivered"]
    assert refused(world.messaging.replay, answer["id"])[0] == 409
    world.stop_worker()


def test_every_event_row_is_published_once(world):
    """Published frames match the event log one to one, with increasing seq."""
    world.start_worker()
    _, answer = world.send()
    world.receive()
    world.fail(answer["id"], "x")
    world.clock.advance(1)
    world.receive()
    world.ack(answer["id"])
    published = [(f["event"], f["detail"], f["timestamp"]) for f in world.frames]
    stored = [
        (e["event"], e["detail"], e["timestamp"])
        for e in world.store.messages.events_of(answer["id"])
    ]
    assert published == stored
    seqs = [f["seq"] for f in world.frames]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    world.stop_worker()


def test_message_events_are_append_only(world, tmp_path):
    """SQLite triggers reject UPDATE and DELETE on message_events."""
    world.send()
    raw = sqlite3.connect(tmp_path / "cp.db")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        raw.execute("UPDATE message_events SET event = 'acknowledged'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        raw.execute("DELETE FROM message_events")


def test_deleting_an_instance_keeps_its_messages(world):
    """Messages and events survive the deletion of their instances."""
    _, answer = world.send()
    b = world.registry.get("b")
    world.registry.archive(b)
    world.registry.delete(b)
    assert world.messaging.get(answer["id"])["events"][0]["event"] == "queued"


def test_stop_answers_waiters_with_none(world):
    """Stopping messaging answers every waiting receiver so long polls end at once."""
    world.start_worker()
    results = world.receive(wait=60)
    world.stop_worker()
    assert results == [None] and world.inbox.waiting == 0


def test_acknowledge_and_fail_need_the_current_lease(world):
    """A stale lease (an earlier delivery's) or another's is 409 and changes nothing; the
    recipient's own lease settles it. The retried fail of a former leaseholder is refused."""
    _, answer = world.send()
    first = world.receive()[0]["lease_id"]
    world.messaging.fail(answer["id"], first, "try again")
    world.clock.advance(1)
    world.messaging.sweep()
    second = world.receive()[0]["lease_id"]
    assert first != second
    before = world.events(answer["id"])
    assert refused(world.messaging.fail, answer["id"], first, "late retry")[0] == 409
    assert refused(world.messaging.acknowledge, answer["id"], "made-up")[0] == 409
    assert world.events(answer["id"]) == before
    assert world.messaging.acknowledge(answer["id"], second)["status"] == "acknowledged"


def test_only_the_recipient_may_settle_a_message(world):
    """Settling a message delivered to someone else is 403, whatever the lease."""
    _, answer = world.send()
    lease = world.receive()[0]["lease_id"]
    assert refused(world.messaging.acknowledge, answer["id"], lease, "c")[0] == 403
    assert world.messaging.acknowledge(answer["id"], lease, "b")["status"] == "acknowledged"


@pytest.mark.parametrize("bad", ["task.x\n", "task\r.x", "task\x00x", "tаsk.x", "task.x\n.y"])
def test_message_types_are_matched_in_full(world, bad):
    """A trailing newline, CR, NUL or a Unicode look-alike is not a message type (400)."""
    assert refused(world.send, message_type=bad)[0] == 400


def test_what_a_change_publishes_waits_for_its_commit(world):
    """Inside a transaction that rolls back, nothing that was changed is published."""
    before = len(world.frames)
    with pytest.raises(RuntimeError):
        with world.store.transaction():
            world.send()
            world.send()
            assert len(world.frames) == before
            raise RuntimeError("roll back")
    assert len(world.frames) == before and world.store.messages.search() == []
    with world.store.transaction():
        world.send()
    assert len(world.frames) == before + 1


def test_a_batch_publishes_every_event_before_it_wakes_a_receiver(world):
    """Two messages sent in one transaction to a waiting receiver: both queued events are
    published, then the receiver's lease (whose events come after) — seq never goes back."""
    results = world.receive(wait=30)
    with world.store.transaction():
        world.send()
        world.send()
    assert results and results[0] is not None
    events = [(f["event"], f["seq"]) for f in world.frames[-3:]]
    assert [e for e, _ in events] == ["queued", "queued", "delivered"]
    assert [s for _, s in events] == sorted(s for _, s in events)
