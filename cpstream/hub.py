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
COALESCE = 0.0005


def encode(event: Event) -> bytes:
    """The compact UTF-8 JSON text of one frame."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class Subscription:
    """One subscriber's bounded queue of encoded frames.

    While the subscriber can write at once it sets ``deliver`` (one frame, used
    when nothing is queued) and ``drain`` (everything queued); while it is
    paused both are ``None`` and frames wait in the queue.
    """

    def __init__(self, hub: Hub, accepts: Callable[[Event], bool], size: int) -> None:
        self._hub = hub
        self.accepts = accepts
        self.queue: DeferredQueue = DeferredQueue(size=size)
        self.lagged = False
        self.deliver: Callable[[Any], None] | None = None
        self.drain: Callable[[], None] | None = None

    def hold(self, frame: Any) -> None:
        """Queue a frame; the put that would overflow marks the subscription lagged."""
        if self.lagged:
            return
        try:
            self.queue.put(frame)
        except QueueOverflow:
            self.lagged = True
            self.queue.pending.clear()

    def flush(self) -> None:
        """Send what is queued, if the subscriber can write now."""
        if self.drain is not None and self.queue.pending:
            self.drain()

    def resynced(self) -> None:
        """The subscriber got a fresh snapshot: forget the lag and anything queued."""
        self.lagged = False
        self.queue.pending.clear()

    def cancel(self) -> None:
        """Stop receiving frames."""
        self._hub._subscriptions.pop(self, None)
        self._hub._dirty.pop(self, None)


class Hub:
    """The publish point of one stream kind (instances or messages).

    An event published after a quiet spell goes out at once. Events that follow
    within the window after a send (``coalesce`` seconds, or as long as that send
    took if longer) are queued and flushed together when the window ends, one
    write per subscriber: a burst costs a few system calls per client instead of
    one per event, and a lone event waits for nothing.
    """

    def __init__(
        self,
        clock: IReactorTime,
        prepare: Callable[[bytes], Any] = bytes,
        queue_size: int = QUEUE_SIZE,
        coalesce: float = COALESCE,
    ) -> None:
        self._clock = clock
        self._prepare = prepare
        self._queue_size = queue_size
        self._coalesce = coalesce
        self._subscriptions: dict[Subscription, None] = {}
        self._dirty: dict[Subscription, None] = {}
        self._last_send = float("-inf")
        self._window = coalesce
        self._flush_call: Any = None
        self.seq = 0
        self.timing: Callable[[], float] | None = None

    def publish(self, event: Event) -> Event:
        """Stamp, encode once and fan out one event; returns the stamped event.

        An event that already carries the ``timestamp`` of its change keeps it.
        """
        self.seq += 1
        fields = dict(event)
        now = self._clock.seconds()
        stamp = fields.pop("timestamp", None) or isotime(now)
        event = {**fields, "seq": self.seq, "timestamp": stamp}
        if self.timing is not None:
            event["mono"] = self.timing()  # bench only: publish-to-read latency
        at_once = self._flush_call is None and now - self._last_send >= self._window
        frame = None
        for subscription in list(self._subscriptions):
            if subscription.accepts(event):
                if frame is None:
                    frame = self._prepare(encode(event))
                if at_once and subscription.deliver is not None and not subscription.queue.pending:
                    subscription.deliver(frame)
                else:
                    subscription.hold(frame)
                    self._dirty[subscription] = None
        if frame is not None and at_once:
            self._sent(now)
        if self._dirty and self._flush_call is None:
            delay = max(0.0, self._last_send + self._window - now)
            self._flush_call = self._clock.callLater(delay, self._flush)
        return event

    def _flush(self) -> None:
        self._flush_call = None
        started = self._clock.seconds()
        dirty, self._dirty = self._dirty, {}
        for subscription in dirty:
            subscription.flush()
        self._sent(started)

    def _sent(self, started: float) -> None:
        """A round of writes ended: the next window is at least as long as it took.

        So that a burst never spends more than half its time writing, however
        many subscribers there are.
        """
        self._last_send = self._clock.seconds()
        self._window = max(self._coalesce, self._last_send - started)

    def subscribe(self, accepts: Callable[[Event], bool]) -> Subscription:
        """A new subscription; take the snapshot in the same reactor turn."""
        subscription = Subscription(self, accepts, self._queue_size)
        self._subscriptions[subscription] = None
        return subscription

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)
