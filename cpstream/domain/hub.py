"""Fan-out of one stream kind to its subscribers.

``publish`` takes an event already stamped with its ``seq`` (the id of its
row in the kind's append-only table) and ``timestamp``, encodes the frame
once and offers the same object to every subscription whose filter accepts the
event. The hub does no I/O of its own: it hands frames to each subscriber's
:meth:`Subscriber.write_frames`, which writes them. Arrows point one way: the
hub offers frames and flushes subscriptions; a subscriber only pauses and
resumes its subscription through methods.

A subscription buffers at most ``size`` frames in a ``DeferredQueue``; the
offer that would overflow it marks it lagged and empties it, so a stuck
client costs a bounded amount of memory. A lagged subscription is handed no
more frames: at its next flush while it can write (at once for a reading
client hit by a burst, on resume for a paused one) its subscriber is told to
:meth:`~Subscriber.resync`, and the lag clears. Only this module touches the queue.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from twisted.internet.defer import DeferredQueue, QueueOverflow
from twisted.internet.interfaces import IReactorTime

from cpstream.domain.meter import Meter

Event = dict[str, Any]
LAGGED = "lagged"
QUEUE_SIZE = 256
COALESCE = 0.0005


def wire_size(frame: Any) -> int:
    """The bytes a prepared frame puts on the wire: a WebSocket frame's header and payload
    (``payloadHybi``), else the frame's own length."""
    return len(getattr(frame, "payloadHybi", frame))


def encode(event: Event) -> bytes:
    """The compact UTF-8 JSON text of one frame."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class Subscriber(Protocol):
    """What a subscription hands its frames to."""

    def write_frames(self, frames: Sequence[Any]) -> None:
        """Write these prepared frames now, in order."""

    def resync(self) -> None:
        """Frames were dropped: send a fresh snapshot now (then call ``resynced``)."""


class Subscription:
    """One subscriber's bounded queue of prepared frames.

    While the subscription is not paused, a frame offered when nothing is
    queued is handed to the subscriber at once; otherwise frames wait in the
    queue until the hub flushes it or the subscriber resumes.
    """

    def __init__(
        self, hub: Hub, accepts: Callable[[Event], bool], subscriber: Subscriber, size: int
    ) -> None:
        self._hub = hub
        self.accepts = accepts
        self._subscriber = subscriber
        self._queue: DeferredQueue = DeferredQueue(size=size)
        self._bytes = 0
        self.lagged = False
        self.reason = LAGGED
        self.paused = False

    # -- the subscriber's side ------------------------------------------------

    def pause(self) -> None:
        """The subscriber cannot write: queue frames until :meth:`resume`."""
        self.paused = True

    def resume(self) -> None:
        """The subscriber can write again: hand over what is queued, then frames at once."""
        self.paused = False
        self._hub._wrote(*self.flush())

    def resynced(self) -> None:
        """The subscriber got a fresh snapshot: forget the lag and anything queued."""
        self.lagged = False
        self.reason = LAGGED
        self._queue.pending.clear()
        self._bytes = 0

    def cancel(self) -> None:
        """Stop receiving frames."""
        self._hub._forget(self)

    @property
    def queued(self) -> int:
        """How many frames wait for the subscriber."""
        return len(self._queue.pending)

    # -- the hub's side ---------------------------------------------------------

    def offer(self, frame: Any, size: int, at_once: bool) -> bool:
        """Hand ``frame`` (``size`` bytes) over now if allowed and possible, else queue it;
        True if the subscription needs a flush."""
        if at_once and not self.paused and not self.lagged and not self._queue.pending:
            self._subscriber.write_frames((frame,))
            return False
        self._hold(frame, size)
        return True

    def _hold(self, frame: Any, size: int) -> None:
        """Queue a frame; the put that would overflow marks the subscription lagged."""
        if self.lagged:
            return
        try:
            self._queue.put(frame)
            self._bytes += size
        except QueueOverflow:
            self.lagged = True
            self._queue.pending.clear()
            self._bytes = 0
            self._hub._lagged()

    def flush(self) -> tuple[int, int]:
        """Hand everything queued to the subscriber in one call, if it can write now; a
        lagged one is told to resync instead. The frames and bytes handed over."""
        if self.paused:
            return 0, 0
        if self.lagged:
            self._subscriber.resync()
            return 0, 0
        if not self._queue.pending:
            return 0, 0
        frames, self._queue.pending = self._queue.pending, []
        size, self._bytes = self._bytes, 0
        self._subscriber.write_frames(frames)
        return len(frames), size


class Hub:
    """The publish point of one stream kind (instances or messages); ``seq`` is the
    last event's.

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
        seq: int = 0,
        meter: Meter | None = None,
        kind: str = "",
        size: Callable[[Any], int] = wire_size,
    ) -> None:
        self._clock = clock
        self._prepare = prepare
        self._size = size
        self.meter = meter if meter is not None else Meter()
        self.kind = kind
        self._published_at: list[float] = []
        self._queue_size = queue_size
        self._coalesce = coalesce
        self._subscriptions: dict[Subscription, None] = {}
        self._dirty: dict[Subscription, None] = {}
        self._last_send = float("-inf")
        self._window = coalesce
        self._flush_call: Any = None
        self.seq = seq

    def publish(self, event: Event, text: bytes | None = None) -> None:
        """Encode once and fan out one event stamped with its ``seq`` and ``timestamp``
        (``text``: its :func:`encode`, when the caller has it already)."""
        assert event["seq"] > self.seq, (event["seq"], self.seq)
        self.seq = event["seq"]
        self._fan_out(event, text)

    def broadcast(self, frame: Event, text: bytes | None = None) -> None:
        """Encode once and fan out a frame that is not history (no ``seq``): the same
        queues, lag and coalescing as an event, but nothing to replay on a resume."""
        assert "seq" not in frame, frame
        self._fan_out(frame, text)

    def _fan_out(self, event: Event, text: bytes | None) -> None:
        now = self._clock.seconds()
        at_once = self._flush_call is None and now - self._last_send >= self._window
        frame, size, written = None, 0, 0
        for subscription in list(self._subscriptions):
            if subscription.accepts(event):
                if frame is None:
                    frame = self._prepare(text if text is not None else encode(event))
                    size = self._size(frame)
                if subscription.offer(frame, size, at_once):
                    self._dirty[subscription] = None
                else:
                    written += 1
        if frame is not None and at_once:
            self._sent(now)
        if written:
            self._wrote(written, written * size)
            self.meter.time("publish_write", self._last_send - now)
        elif frame is not None:
            self._published_at.append(now)  # queued everywhere: timed when its flush ends
        if self._dirty and self._flush_call is None:
            delay = max(0.0, self._last_send + self._window - now)
            self._flush_call = self._clock.callLater(delay, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        started = self._clock.seconds()
        dirty, self._dirty = self._dirty, {}
        frames = size = 0
        for subscription in dirty:
            n, nbytes = subscription.flush()
            frames += n
            size += nbytes
        self._wrote(frames, size)
        self._sent(started)
        published, self._published_at = self._published_at, []
        for at in published:
            self.meter.time("publish_write", self._last_send - at)

    def _wrote(self, frames: int, size: int) -> None:
        """Count frames handed to subscribers (once per round, not per subscriber)."""
        if frames:
            self.meter.count(("stream_frames", self.kind), frames)
            self.meter.count(("stream_bytes", self.kind), size)

    def _lagged(self) -> None:
        self.meter.count(("stream_lagged", self.kind))

    def _sent(self, started: float) -> None:
        """A round of writes ended: the next window is at least as long as it took.

        So that a burst never spends more than half its time writing, however
        many subscribers there are.
        """
        self._last_send = self._clock.seconds()
        self._window = max(self._coalesce, self._last_send - started)

    def restart(self, seq: int, reason: str) -> None:
        """The kind's past was replaced (another epoch, or history lost): every subscriber
        gets a resync snapshot with ``reason`` at its next flush, and seq starts from ``seq``."""
        self.seq = seq
        for subscription in self._subscriptions:
            subscription.lagged = True
            subscription.reason = reason
            subscription._queue.pending.clear()
            self._dirty[subscription] = None
        if self._dirty and self._flush_call is None:
            self._flush_call = self._clock.callLater(0, self._flush)

    def subscribe(self, accepts: Callable[[Event], bool], subscriber: Subscriber) -> Subscription:
        """A new subscription handing frames to ``subscriber``; take the snapshot in the
        same reactor turn."""
        subscription = Subscription(self, accepts, subscriber, self._queue_size)
        self._subscriptions[subscription] = None
        return subscription

    def _forget(self, subscription: Subscription) -> None:
        self._subscriptions.pop(subscription, None)
        self._dirty.pop(subscription, None)

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)
