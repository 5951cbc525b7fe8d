"""Fan-out of one stream kind to its subscribers; no I/O.

``publish`` stamps a per-kind ``seq`` and a ``timestamp``, encodes the frame
once and offers the same object to every subscription whose filter accepts the
event. A subscription buffers at most ``size`` frames in a ``DeferredQueue``;
the offer that would overflow it marks it lagged and empties it, so a stuck
client costs a bounded amount of memory and is later resynchronised with a
fresh snapshot instead of stale deltas.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import DeferredQueue, QueueOverflow
from twisted.internet.interfaces import IReactorTime

from cpstream.events import isotime

Event = dict[str, Any]
QUEUE_SIZE = 256


def encode(event: Event) -> bytes:
    """The compact UTF-8 JSON text of one frame."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class Subscription:
    """One subscriber's bounded queue of encoded frames."""

    def __init__(self, hub: Hub, accepts: Callable[[Event], bool], size: int) -> None:
        self._hub = hub
        self.accepts = accepts
        self.queue: DeferredQueue = DeferredQueue(size=size)
        self.lagged = False
        self.deliver: Callable[[Any], None] | None = None

    def offer(self, frame: Any) -> None:
        """Hand a frame to a ready subscriber, else queue it; overflow marks the lag.

        ``deliver`` is set by the subscriber while it can write at once and has
        nothing queued (the common case); otherwise frames wait in the queue.
        """
        if self.lagged:
            return
        if self.deliver is not None and not self.queue.pending:
            self.deliver(frame)
            return
        try:
            self.queue.put(frame)
        except QueueOverflow:
            self.lagged = True
            self.queue.pending.clear()

    def resynced(self) -> None:
        """The subscriber got a fresh snapshot: forget the lag and anything queued."""
        self.lagged = False
        self.queue.pending.clear()

    def cancel(self) -> None:
        """Stop receiving frames."""
        self._hub._subscriptions.pop(self, None)


class Hub:
    """The publish point of one stream kind (instances or messages)."""

    def __init__(
        self,
        clock: IReactorTime,
        prepare: Callable[[bytes], Any] = bytes,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self._clock = clock
        self._prepare = prepare
        self._queue_size = queue_size
        self._subscriptions: dict[Subscription, None] = {}
        self.seq = 0
        self.timing: Callable[[], float] | None = None

    def publish(self, event: Event) -> Event:
        """Stamp, encode once and fan out one event; returns the stamped event.

        An event that already carries the ``timestamp`` of its change keeps it.
        """
        self.seq += 1
        fields = dict(event)
        stamp = fields.pop("timestamp", None) or isotime(self._clock.seconds())
        event = {**fields, "seq": self.seq, "timestamp": stamp}
        if self.timing is not None:
            event["mono"] = self.timing()  # bench only: publish-to-read latency
        frame = None
        for subscription in list(self._subscriptions):
            if subscription.accepts(event):
                if frame is None:
                    frame = self._prepare(encode(event))
                subscription.offer(frame)
        return event

    def subscribe(self, accepts: Callable[[Event], bool]) -> Subscription:
        """A new subscription; take the snapshot in the same reactor turn."""
        subscription = Subscription(self, accepts, self._queue_size)
        self._subscriptions[subscription] = None
        return subscription

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)
