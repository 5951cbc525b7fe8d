"""Inter-agent messaging: routing rules, the queue, leases, retries, TTL, dead letters.

Agents message each other only through the control plane. Every message
state transition is one store transaction that updates the message and
appends to the append-only ``message_events`` log, followed by one published
message event per appended row: this class is the only place a message
changes. Payloads and failure details are redacted before anything stores
them. Receivers long-poll; a waiting receiver is a Deferred woken by the send
(or retry, or replay) that makes a message available, never a sleep loop.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from cpstream.events import isotime
from cpstream.hub import Hub
from cpstream.redact import redact, redact_text
from cpstream.registry import NAME_RE, Registry
from cpstream.store import Conflict, Store

MAX_PAYLOAD = 64 * 1024
MAX_HOPS = 8
MAX_WAIT = 60
LEASE_SECS = 60.0
IDEMPOTENCY_WINDOW = 24 * 3600
MAX_BACKOFF = 60.0
MAX_DETAIL = 2000
BATCH = 500
TYPE_RE = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")
PATTERN_RE = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*(\.\*)?$")
STATUSES = ("queued", "delivered", "acknowledged", "retry_scheduled", "dead_letter")
SEND_FIELDS = frozenset(
    {
        "from_instance",
        "to_instance",
        "message_type",
        "payload",
        "correlation_id",
        "idempotency_key",
        "hop_count",
    }
)
RULE_FIELDS = frozenset({"from_instance", "to_instance", "type_pattern", "max_retries", "ttl_secs"})


class Refused(Exception):
    """A messaging request refused with an HTTP status and a message safe to show."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def pattern_matches(pattern: str, message_type: str) -> bool:
    """Exact match, or ``prefix.*`` matching any type under ``prefix.``."""
    if pattern.endswith(".*"):
        return message_type.startswith(pattern[:-1])
    return pattern == message_type


def _specificity(rule: dict[str, Any]) -> tuple[int, int]:
    pattern = rule["type_pattern"]
    return (0 if pattern.endswith(".*") else 1, len(pattern))


def _optional_text(body: dict[str, Any], key: str, limit: int = 200) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > limit:
        raise Refused(400, f"{key} must be a non-empty string of at most {limit} characters")
    return value


def _int_field(body: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = body.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise Refused(400, f"{key} must be an integer from {low} to {high}")
    return value


def public(message: dict[str, Any]) -> dict[str, Any]:
    """The API shape of a message (its payload only if the record carries one)."""
    keys = (
        "id",
        "from_instance",
        "to_instance",
        "message_type",
        "payload",
        "correlation_id",
        "idempotency_key",
        "hop_count",
        "status",
        "attempts",
        "max_retries",
        "created_at",
        "updated_at",
        "expires_at",
    )
    return {key: message[key] for key in keys if key in message}


class Messaging(Service):
    """Routing rules and the message queue; the delivery worker runs while started."""

    log = Logger()

    def __init__(
        self,
        store: Store,
        hub: Hub,
        clock: Any,
        registry: Registry,
        lease_secs: float = LEASE_SECS,
        interval: float = 1.0,
    ) -> None:
        self._store = store
        self._hub = hub
        self._clock = clock
        self._registry = registry
        self._lease_secs = lease_secs
        self._interval = interval
        self._waiters: dict[str, list[defer.Deferred]] = {}
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock

    def _now(self, later: float = 0.0) -> str:
        return isotime(self._clock.seconds() + later)

    # -- service -----------------------------------------------------------

    def startService(self) -> None:  # noqa: N802 (Twisted API)
        super().startService()
        self._loop.start(self._interval, now=True)

    def stopService(self) -> defer.Deferred:  # noqa: N802 (Twisted API)
        """Stop the worker and answer every waiting receiver with no message."""
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        waiters = [w for queue in self._waiters.values() for w in queue]
        self._waiters.clear()
        for waiter in waiters:
            waiter.callback(None)
        return defer.succeed(None)

    @property
    def waiting(self) -> int:
        """Receivers currently waiting (for tests and leak checks)."""
        return sum(len(queue) for queue in self._waiters.values())

    # -- routing rules -------------------------------------------------------

    def add_rule(self, body: dict[str, Any]) -> dict[str, Any]:
        """Allow messages from one instance to another whose type matches a pattern."""
        unknown = sorted(set(body) - RULE_FIELDS)
        if unknown:
            raise Refused(400, f"unknown field(s): {', '.join(unknown)}")
        ends = {}
        for key in ("from_instance", "to_instance"):
            value = body.get(key)
            if not isinstance(value, str) or not value:
                raise Refused(400, f"{key} is required")
            if "*" in value:
                raise Refused(400, f"{key} cannot be a wildcard")
            ends[key] = value
        pattern = body.get("type_pattern")
        if not isinstance(pattern, str) or not PATTERN_RE.match(pattern):
            raise Refused(400, "type_pattern must be a type like 'task.handoff' or 'task.*'")
        for key in ("from_instance", "to_instance"):
            self._instance(ends[key])
        rule = {
            "id": str(uuid.uuid4()),
            **ends,
            "type_pattern": pattern,
            "max_retries": _int_field(body, "max_retries", 5, 0, 100),
            "ttl_secs": _int_field(body, "ttl_secs", 3600, 1, 30 * 24 * 3600),
            "created_at": self._now(),
        }
        try:
            self._store.insert_rule(rule)
        except Conflict:
            raise Refused(409, "that routing rule already exists") from None
        return rule

    def rules(self) -> list[dict[str, Any]]:
        return self._store.rules()

    def delete_rule(self, rule_id: str) -> None:
        if not self._store.delete_rule(rule_id):
            raise Refused(404, f"no routing rule {rule_id}")

    def _instance(self, name: str) -> None:
        if not NAME_RE.match(name) or self._registry.find(name) is None:
            raise Refused(404, f"No instance named '{name}'")

    # -- send --------------------------------------------------------------------

    def send(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Queue a message; returns the HTTP status and answer (201, or 200 when deduplicated)."""
        unknown = sorted(set(body) - SEND_FIELDS)
        if unknown:
            raise Refused(400, f"unknown field(s): {', '.join(unknown)}")
        for key in ("from_instance", "to_instance"):
            if not isinstance(body.get(key), str) or not body[key]:
                raise Refused(400, f"{key} is required")
        message_type = body.get("message_type")
        if not isinstance(message_type, str) or len(message_type) > 200:
            raise Refused(400, "message_type is required, e.g. 'task.handoff'")
        if not TYPE_RE.match(message_type):
            raise Refused(400, "message_type must be dot-separated words, e.g. 'task.handoff'")
        correlation_id = _optional_text(body, "correlation_id")
        key = _optional_text(body, "idempotency_key")
        hop_count = body.get("hop_count", 0)
        if not isinstance(hop_count, int) or isinstance(hop_count, bool) or hop_count < 0:
            raise Refused(400, "hop_count must be a non-negative integer")
        sender, recipient = body["from_instance"], body["to_instance"]

        self._instance(sender)
        self._instance(recipient)
        payload = body.get("payload")
        size = len(json.dumps(payload, separators=(",", ":")).encode("utf-8"))
        if size > MAX_PAYLOAD:
            raise Refused(413, f"payload is {size} bytes; the limit is {MAX_PAYLOAD}")
        if hop_count >= MAX_HOPS:
            raise Refused(400, f"hop_count {hop_count} reached the limit of {MAX_HOPS}")
        matching = [
            rule
            for rule in self._store.routes(sender, recipient)
            if pattern_matches(rule["type_pattern"], message_type)
        ]
        if not matching:
            raise Refused(
                403, f"no routing rule allows {message_type} from {sender} to {recipient}"
            )
        rule = max(matching, key=_specificity)
        now = self._now()
        if key is not None:
            since = self._now(-IDEMPOTENCY_WINDOW)
            existing = self._store.idempotent_message(sender, key, since)
            if existing is not None:
                return 200, {"id": existing, "deduplicated": True}

        message = {
            "id": str(uuid.uuid4()),
            "from_instance": sender,
            "to_instance": recipient,
            "message_type": message_type,
            "payload": redact(payload),
            "correlation_id": correlation_id,
            "idempotency_key": key,
            "hop_count": hop_count,
            "status": "queued",
            "attempts": 0,
            "max_retries": rule["max_retries"],
            "ttl_secs": rule["ttl_secs"],
            "created_at": now,
            "updated_at": now,
            "expires_at": self._now(rule["ttl_secs"]),
            "available_at": now,
            "lease_expires_at": None,
        }
        with self._store.transaction():
            self._store.insert_message(message)
            if key is not None:
                self._store.remember_key(sender, key, message["id"], now)
            self._store.append_event(message["id"], "queued", None, now)
        self._publish(message, "queued", None, now)
        self._wake(recipient)
        return 201, {"id": message["id"], "status": "queued", "expires_at": message["expires_at"]}

    # -- receive -------------------------------------------------------------------

    def receive(self, name: str, wait: float) -> defer.Deferred:
        """Lease the oldest queued message for ``name``, waiting up to ``wait`` seconds."""
        self._instance(name)
        message = self._lease(name)
        if message is not None or wait <= 0:
            return defer.succeed(message)
        waiter: defer.Deferred = defer.Deferred(lambda d: self._forget(name, d))
        self._waiters.setdefault(name, []).append(waiter)
        timer = self._clock.callLater(wait, self._expire_waiter, name, waiter)

        def done(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        return waiter.addBoth(done)

    def _expire_waiter(self, name: str, waiter: defer.Deferred) -> None:
        self._forget(name, waiter)
        waiter.callback(None)

    def _forget(self, name: str, waiter: defer.Deferred) -> None:
        queue = self._waiters.get(name, [])
        if waiter in queue:
            queue.remove(waiter)
        if not queue:
            self._waiters.pop(name, None)

    def _wake(self, name: str) -> None:
        """Hand available messages to waiting receivers, oldest waiter first."""
        queue = self._waiters.get(name)
        while queue:
            message = self._lease(name)
            if message is None:
                return
            waiter = queue.pop(0)
            if not queue:
                self._waiters.pop(name, None)
            waiter.callback(message)

    def _lease(self, name: str) -> dict[str, Any] | None:
        message = self._store.oldest_queued(name)
        if message is None:
            return None
        self._change(
            message,
            [("delivered", None)],
            status="delivered",
            attempts=message["attempts"] + 1,
            lease_expires_at=self._now(self._lease_secs),
        )
        return public(message)

    # -- acknowledge, fail, replay -------------------------------------------------

    def acknowledge(self, message_id: str) -> dict[str, Any]:
        message = self._get(message_id)
        if message["status"] != "delivered":
            raise Refused(409, f"message {message_id} is {message['status']}, not delivered")
        self._change(
            message, [("acknowledged", None)], status="acknowledged", lease_expires_at=None
        )
        return {"id": message_id, "status": "acknowledged"}

    def fail(self, message_id: str, detail: Any) -> dict[str, Any]:
        message = self._get(message_id)
        if message["status"] != "delivered":
            raise Refused(409, f"message {message_id} is {message['status']}, not delivered")
        if detail is not None and not isinstance(detail, str):
            raise Refused(400, "detail must be a string")
        self._retry_or_bury(message, redact_text((detail or "failed")[:MAX_DETAIL]))
        return {"id": message_id, "status": message["status"]}

    def _retry_or_bury(self, message: dict[str, Any], detail: str) -> None:
        if message["attempts"] > message["max_retries"]:
            self._change(
                message,
                [("failed", detail), ("dead_lettered", "retries exhausted")],
                status="dead_letter",
                lease_expires_at=None,
            )
            return
        delay = min(MAX_BACKOFF, 2.0 ** (message["attempts"] - 1))
        self._change(
            message,
            [("failed", detail), ("retry_scheduled", f"retry {message['attempts']} in {delay:g}s")],
            status="retry_scheduled",
            lease_expires_at=None,
            available_at=self._now(delay),
        )

    def replay(self, message_id: str) -> dict[str, Any]:
        message = self._get(message_id)
        if message["status"] != "dead_letter":
            raise Refused(409, f"message {message_id} is {message['status']}, not dead_letter")
        self._change(
            message,
            [("replayed", None)],
            status="queued",
            attempts=0,
            available_at=self._now(),
            expires_at=self._now(message["ttl_secs"]),
        )
        self._wake(message["to_instance"])
        return {"id": message_id, "status": "queued"}

    # -- reads -----------------------------------------------------------------------

    def get(self, message_id: str) -> dict[str, Any]:
        """The message (payload already redacted) with its event timeline, oldest first."""
        message = public(self._get(message_id))
        message["events"] = self._store.events_of(message_id)
        return message

    def search(self, **filters: Any) -> list[dict[str, Any]]:
        status = filters.get("status")
        if status is not None and status not in STATUSES:
            raise Refused(400, f"status must be one of {', '.join(STATUSES)}")
        return [public(m) for m in self._store.search_messages(**filters)]

    def snapshot(self, instance: str | None, correlation_id: str | None) -> dict[str, Any]:
        """A ``/ws/messages`` snapshot: the last 100 matching events, oldest first."""
        events = self._store.recent_events(instance, correlation_id, 100)
        return {
            "type": "snapshot",
            "recent_events": [_frame_fields(e) for e in events],
            "seq": self._hub.seq,
        }

    def _get(self, message_id: str) -> dict[str, Any]:
        message = self._store.message(message_id)
        if message is None:
            raise Refused(404, f"no message {message_id}")
        return message

    # -- the one place a message changes ----------------------------------------------

    def _change(
        self, message: dict[str, Any], events: list[tuple[str, str | None]], **fields: Any
    ) -> None:
        """Update the message and append its events in one transaction, then publish them."""
        now = self._now()
        fields["updated_at"] = now
        with self._store.transaction():
            self._store.update_message(message["id"], **fields)
            for event, detail in events:
                self._store.append_event(message["id"], event, detail, now)
        message.update(fields)
        for event, detail in events:
            self._publish(message, event, detail, now)

    def _publish(self, message: dict[str, Any], event: str, detail: str | None, now: str) -> None:
        self._hub.publish(
            {
                "type": "message_event",
                "message_id": message["id"],
                "event": event,
                "from": message["from_instance"],
                "to": message["to_instance"],
                "message_type": message["message_type"],
                "correlation_id": message["correlation_id"],
                "detail": detail,
                "timestamp": now,
            }
        )

    # -- the delivery worker -----------------------------------------------------------

    def _tick(self) -> None:
        """Expire leases and TTLs, release due retries; errors are logged, never fatal."""
        try:
            self._sweep()
        except Exception:
            self.log.failure("delivery worker pass failed")

    def _sweep(self) -> None:
        now = self._now()
        for message in self._store.messages_due("delivered", "lease_expires_at", now, BATCH):
            self._retry_or_bury(
                message, f"lease expired: not acknowledged within {self._lease_secs:g}s"
            )
        for status in ("queued", "retry_scheduled"):
            for message in self._store.messages_due(status, "expires_at", now, BATCH):
                self._change(
                    message,
                    [("expired", f"not delivered within {message['ttl_secs']}s"),
                     ("dead_lettered", "expired")],
                    status="dead_letter",
                )  # fmt: skip
        woken = set()
        for message in self._store.messages_due("retry_scheduled", "available_at", now, BATCH):
            self._change(message, [("queued", f"retry {message['attempts']}")], status="queued")
            woken.add(message["to_instance"])
        for name in woken:
            self._wake(name)


def _frame_fields(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "message_id": event["message_id"],
        "event": event["event"],
        "from": event["from_instance"],
        "to": event["to_instance"],
        "message_type": event["message_type"],
        "correlation_id": event["correlation_id"],
        "detail": event["detail"],
        "timestamp": event["timestamp"],
    }
