"""The message queue: send, lease, acknowledge, fail, replay, expire.

Agents message each other only through the control plane. Every message
state transition is one store transaction that updates the message and
appends to the append-only ``message_events`` log, followed by one published
message event per appended row: :meth:`Messaging._change` is the only place a
message changes. Payloads and failure details are redacted before anything
stores them. Whoever waits for messages (the :class:`~cpstream.domain.inbox.Inbox`)
listens for :meth:`Messaging.when_available`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from cpstream.domain import frames
from cpstream.domain.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Invalid,
    NotFound,
    TooLarge,
)
from cpstream.domain.frames import Frame, isotime, seconds_of
from cpstream.domain.history import History
from cpstream.domain.hub import Hub
from cpstream.domain.ids import new_id
from cpstream.domain.meter import Meter
from cpstream.domain.redact import redact, redact_text
from cpstream.domain.routing import TYPE_RE, RoutingRules
from cpstream.domain.store import Store

MAX_PAYLOAD = 64 * 1024
MAX_HOPS = 8
LEASE_SECS = 60.0
IDEMPOTENCY_WINDOW = 24 * 3600
MAX_BACKOFF = 60.0
MAX_DETAIL = 2000
BATCH = 500
STATUSES = ("queued", "delivered", "acknowledged", "retry_scheduled", "dead_letter")
# Not finished: waiting to be leased, leased and not settled, or waiting out a retry's delay.
IN_FLIGHT = ("queued", "delivered", "retry_scheduled")


class Messaging:
    """The one place a message changes; reads of messages and their events."""

    def __init__(
        self,
        store: Store,
        hub: Hub,
        clock: Any,
        rules: RoutingRules,
        lease_secs: float = LEASE_SECS,
        meter: Meter | None = None,
    ) -> None:
        self._store = store
        self._meter = meter if meter is not None else Meter()
        self._rows = store.messages
        self._hub = hub
        self._clock = clock
        self._rules = rules
        self.lease_secs = lease_secs
        self._listeners: list[Callable[[str], None]] = []
        self.history = History(
            store.meta.get("epoch"),
            hub,
            self._missed,
            lambda: int(store.meta.get("pruned:message_events")),
        )

    def _missed(self, since: int, limit: int) -> list[Frame]:
        return [frames.message_event_row(row) for row in self._rows.events_after(since, limit)]

    def _now(self, later: float = 0.0) -> str:
        return isotime(self._clock.seconds() + later)

    def when_available(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(name)`` whenever a message becomes available to ``name``."""
        self._listeners.append(listener)

    def _available(self, name: str) -> None:
        for listener in self._listeners:
            listener(name)

    # -- send --------------------------------------------------------------------

    def send(
        self,
        sender: str,
        recipient: str,
        message_type: str,
        payload: Any = None,
        correlation_id: str | None = None,
        idempotency_key: str | None = None,
        hop_count: int = 0,
    ) -> dict[str, Any]:
        """Queue a message: ``{id, status, expires_at}``, or ``{id, deduplicated: true}``
        for a key this sender used within 24 h."""
        if not TYPE_RE.fullmatch(message_type):
            raise Invalid("message_type must be dot-separated words, e.g. 'task.handoff'")
        self._rules.check_instance(sender)
        self._rules.check_instance(recipient)
        size = len(json.dumps(payload, separators=(",", ":")).encode("utf-8"))
        if size > MAX_PAYLOAD:
            raise TooLarge(f"payload is {size} bytes; the limit is {MAX_PAYLOAD}")
        if hop_count >= MAX_HOPS:
            raise Invalid(f"hop_count {hop_count} reached the limit of {MAX_HOPS}")
        rule = self._rules.route(sender, recipient, message_type)
        now = self._now()
        key = idempotency_key
        if key is not None:
            existing = self._rows.idempotent(sender, key, self._now(-IDEMPOTENCY_WINDOW))
            if existing is not None:
                return {"id": existing, "deduplicated": True}

        message = {
            "id": new_id(),
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
            "lease_id": None,
        }
        with self._store.transaction():
            self._rows.insert(message)
            if key is not None:
                self._rows.remember_key(sender, key, message["id"], now)
            seq = self._rows.append_event(message, "queued", None, now)
            frame = frames.message_event(message, "queued", None, seq, now)
            self._store.on_commit(lambda: self._published([frame], sent=True))
            self._store.on_commit(lambda: self._available(recipient), last=True)
        return {"id": message["id"], "status": "queued", "expires_at": message["expires_at"]}

    def send_many(self, items: list[dict[str, Any]]) -> list[dict[str, Any] | DomainError]:
        """Queue several messages in one transaction; each item (``send``'s arguments) is
        answered on its own: its answer, or the :class:`DomainError` that refused it."""
        results: list[dict[str, Any] | DomainError] = []
        with self._store.transaction():
            for item in items:
                try:
                    results.append(self.send(**item))
                except DomainError as e:
                    results.append(e)
        return results

    # -- lease, acknowledge, fail, replay --------------------------------------------

    def lease(self, name: str) -> dict[str, Any] | None:
        """Deliver the oldest queued message for ``name`` (now ``delivered``), if any."""
        leased = self.lease_many(name, 1)
        return leased[0] if leased else None

    def lease_many(self, name: str, count: int) -> list[dict[str, Any]]:
        """Deliver up to ``count`` of the oldest queued messages for ``name``, in one
        transaction."""
        messages = self._rows.oldest_queued(name, count)
        if messages:  # no transaction at all for an empty inbox (most polls)
            with self._store.transaction():
                for message in messages:
                    self._deliver(message)
        return messages

    def _deliver(self, message: dict[str, Any]) -> None:
        waited = self._clock.seconds() - seconds_of(message["available_at"])
        self._store.on_commit(lambda: self._meter.time("send_to_lease", waited))
        self._change(
            message,
            [("delivered", None)],
            status="delivered",
            attempts=message["attempts"] + 1,
            lease_expires_at=self._now(self.lease_secs),
            lease_id=str(uuid.uuid4()),
        )

    def settle_many(
        self, verb: str, items: list[dict[str, Any]], recipient: str | None = None
    ) -> list[dict[str, Any] | DomainError]:
        """``acknowledge`` or ``fail`` several messages in one transaction; each item
        (``{id, lease_id[, detail]}``) is answered on its own."""
        settle = self.acknowledge if verb == "acknowledge" else self.fail
        results: list[dict[str, Any] | DomainError] = []
        with self._store.transaction():
            for item in items:
                try:
                    results.append(settle(recipient=recipient, **item))
                except DomainError as e:
                    results.append(e)
        return results

    def acknowledge(
        self, message_id: str, lease_id: str, recipient: str | None = None
    ) -> dict[str, Any]:
        """The leaseholder is done with the message (``recipient``: only if it is theirs)."""
        message = self._leased(message_id, lease_id, recipient)
        leased_at = seconds_of(message["lease_expires_at"]) - self.lease_secs
        held = self._clock.seconds() - leased_at
        self._store.on_commit(lambda: self._meter.time("lease_to_ack", held))
        self._change(
            message,
            [("acknowledged", None)],
            status="acknowledged",
            lease_expires_at=None,
            lease_id=None,
        )
        return {"id": message_id, "status": "acknowledged"}

    def fail(
        self,
        message_id: str,
        lease_id: str,
        detail: str | None = None,
        recipient: str | None = None,
    ) -> dict[str, Any]:
        """The leaseholder could not handle the message: retry it later, or bury it."""
        message = self._leased(message_id, lease_id, recipient)
        self._retry_or_bury(message, redact_text((detail or "failed")[:MAX_DETAIL]))
        return {"id": message_id, "status": message["status"]}

    def _leased(self, message_id: str, lease_id: str, recipient: str | None) -> dict[str, Any]:
        """The message under this lease: :class:`Forbidden` if it is not ``recipient``'s,
        :class:`Conflict` if it is not delivered or the lease is another (a stale one)."""
        message = self._get(message_id)
        if recipient is not None and message["to_instance"] != recipient:
            raise Forbidden(f"message {message_id} was not sent to {recipient}")
        if message["status"] != "delivered":
            raise Conflict(f"message {message_id} is {message['status']}, not delivered")
        if message["lease_id"] != lease_id:
            raise Conflict(f"lease {lease_id!r} is not the current lease of message {message_id}")
        return message

    def _retry_or_bury(self, message: dict[str, Any], detail: str) -> None:
        if message["attempts"] > message["max_retries"]:
            self._change(
                message,
                [("failed", detail), ("dead_lettered", "retries exhausted")],
                status="dead_letter",
                lease_expires_at=None,
                lease_id=None,
            )
            return
        delay = min(MAX_BACKOFF, 2.0 ** (message["attempts"] - 1))
        self._change(
            message,
            [("failed", detail), ("retry_scheduled", f"retry {message['attempts']} in {delay:g}s")],
            status="retry_scheduled",
            lease_expires_at=None,
            lease_id=None,
            available_at=self._now(delay),
        )

    def replay(self, message_id: str) -> dict[str, Any]:
        message = self._get(message_id)
        if message["status"] != "dead_letter":
            raise Conflict(f"message {message_id} is {message['status']}, not dead_letter")
        self._change(
            message,
            [("replayed", None)],
            status="queued",
            attempts=0,
            available_at=self._now(),
            expires_at=self._now(message["ttl_secs"]),
        )
        self._available(message["to_instance"])
        return {"id": message_id, "status": "queued"}

    # -- due work ---------------------------------------------------------------------

    def sweep(self) -> None:
        """Expire leases and TTLs and release due retries (at most ``BATCH`` of each)."""
        now = self._now()
        for message in self._rows.due("delivered", "lease_expires_at", now, BATCH):
            self._retry_or_bury(
                message, f"lease expired: not acknowledged within {self.lease_secs:g}s"
            )
        for status in ("queued", "retry_scheduled"):
            for message in self._rows.due(status, "expires_at", now, BATCH):
                self._change(
                    message,
                    [("expired", f"not delivered within {message['ttl_secs']}s"),
                     ("dead_lettered", "expired")],
                    status="dead_letter",
                )  # fmt: skip
        released = set()
        for message in self._rows.due("retry_scheduled", "available_at", now, BATCH):
            self._change(message, [("queued", f"retry {message['attempts']}")], status="queued")
            released.add(message["to_instance"])
        for name in released:
            self._available(name)

    # -- reads -----------------------------------------------------------------------

    def get(self, message_id: str) -> dict[str, Any]:
        """The message (payload already redacted) with its event timeline, oldest first."""
        message = self._get(message_id)
        message["events"] = self._rows.events_of(message_id)
        return message

    def search(self, **filters: Any) -> list[dict[str, Any]]:
        status = filters.get("status")
        if status is not None and status not in STATUSES:
            raise Invalid(f"status must be one of {', '.join(STATUSES)}")
        return self._rows.search(**filters)

    def counts(self) -> dict[str, int]:
        """How many messages are in each status (every status, zeros included)."""
        found = self._rows.count_by_status()
        return {status: found.get(status, 0) for status in STATUSES}

    def stats(self) -> dict[str, Any]:
        """``{by_status, in_flight, dead_letter}``: in flight is every message not finished
        (queued, delivered or waiting to be retried)."""
        counts = self.counts()
        return {
            "by_status": counts,
            "in_flight": sum(counts[status] for status in IN_FLIGHT),
            "dead_letter": counts["dead_letter"],
        }

    def snapshot(self, instance: str | None, correlation_id: str | None) -> dict[str, Any]:
        """A ``/ws/messages`` snapshot: the last 100 matching events, oldest first."""
        rows = self._rows.recent_events(instance, correlation_id, 100)
        return frames.messages_snapshot(rows, self._hub.seq, self.history.epoch)

    def _get(self, message_id: str) -> dict[str, Any]:
        message = self._rows.get(message_id)
        if message is None:
            raise NotFound(f"no message {message_id}")
        return message

    # -- the one place a message changes ----------------------------------------------

    def _change(
        self, message: dict[str, Any], events: list[tuple[str, str | None]], **fields: Any
    ) -> None:
        """Update the message and append its events in one transaction, then publish them."""
        now = self._now()
        fields["updated_at"] = now
        with self._store.transaction():
            self._rows.update(message["id"], **fields)
            message.update(fields)
            published = [
                frames.message_event(
                    message,
                    event,
                    detail,
                    self._rows.append_event(message, event, detail, now),
                    now,
                )
                for event, detail in events
            ]
            self._store.on_commit(lambda: self._published(published))

    def _published(self, published: list[Frame], sent: bool = False) -> None:
        """Publish committed events, and count them (by event; sends on their own)."""
        if sent:
            self._meter.count("messages_sent")
        for frame in published:
            self._meter.count(("message_event", frame["event"]))
            self._hub.publish(frame)
