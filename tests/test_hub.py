"""The hub: per-kind seq, one encoding per event, filters, bounded queues and lag."""

from __future__ import annotations

import json

import pytest
from twisted.internet.task import Clock

from cpstream.domain.hub import Hub, encode
from tests.support import Recorder


class Frames:
    """A subscriber that keeps the raw frames it is handed."""

    def __init__(self, hub: Hub, accepts=lambda e: True) -> None:
        self.frames: list = []
        self.subscription = hub.subscribe(accepts, self)

    def write_frames(self, frames) -> None:
        self.frames.extend(frames)


def publish(hub: Hub, event: dict) -> dict:
    """Publish ``event`` with the next seq, as the registry and messaging stamp them."""
    stamped = {**event, "seq": hub.seq + 1, "timestamp": "2026-01-01T00:00:00.000001Z"}
    hub.publish(stamped)
    return stamped


def test_the_hub_keeps_the_seq_of_each_event():
    """The hub's seq is the last event's (its row id); a seq that goes back is refused."""
    hub = Hub(Clock(), seq=41)
    consumer = Frames(hub)
    hub.publish({"type": "x", "seq": 42, "timestamp": "t"})
    assert hub.seq == 42 and json.loads(consumer.frames[0])["seq"] == 42
    with pytest.raises(AssertionError):
        hub.publish({"type": "x", "seq": 42, "timestamp": "t"})


def test_each_event_is_encoded_once_for_all_subscribers():
    """One prepared frame object is shared by every matching subscriber."""
    prepared = []

    def prepare(payload):
        prepared.append(payload)
        return ("frame", payload)

    hub = Hub(Clock(), prepare=prepare)
    subs = [Frames(hub) for _ in range(5)]
    publish(hub, {"type": "x"})
    assert len(prepared) == 1
    frames = [s.frames[0] for s in subs]
    assert all(f is frames[0] for f in frames)
    assert json.loads(frames[0][1])["seq"] == 1


def test_no_subscriber_no_encoding():
    """An event nobody wants is never encoded."""
    prepared = []
    hub = Hub(Clock(), prepare=lambda p: prepared.append(p) or p)
    Frames(hub, lambda e: e["type"] == "wanted")
    publish(hub, {"type": "unwanted"})
    assert prepared == []


def test_filters_choose_subscribers():
    """A subscription only receives the events its filter accepts."""
    hub = Hub(Clock(), coalesce=0.0)
    evens = Recorder(hub, lambda e: e["n"] % 2 == 0)
    for n in range(6):
        publish(hub, {"type": "x", "n": n})
    assert [f["n"] for f in evens.frames] == [0, 2, 4]


def test_overflow_marks_lagged_and_empties_the_queue():
    """The put that overflows 256 frames marks the subscription lagged and drops its queue."""
    hub = Hub(Clock())
    sub = Frames(hub).subscription
    sub.pause()
    for n in range(256):
        publish(hub, {"type": "x", "n": n})
    assert not sub.lagged and sub.queued == 256
    publish(hub, {"type": "x", "n": 256})
    assert sub.lagged and sub.queued == 0
    for n in range(1000):
        publish(hub, {"type": "x", "n": n})
    assert sub.queued == 0
    sub.resynced()
    publish(hub, {"type": "x", "n": 0})
    assert not sub.lagged and sub.queued == 1


def test_cancel_stops_delivery():
    """A cancelled subscription receives nothing more."""
    hub = Hub(Clock())
    consumer = Frames(hub)
    consumer.subscription.cancel()
    publish(hub, {"type": "x"})
    assert hub.subscribers == 0 and consumer.frames == [] and consumer.subscription.queued == 0


class Consumer:
    """A subscriber that records each write it is handed (the ``n`` of its frames)."""

    def __init__(self, hub: Hub) -> None:
        self.subscription = hub.subscribe(lambda e: True, self)
        self.writes: list[list[int]] = []

    def ready(self, ready: bool) -> None:
        if ready:
            self.subscription.resume()
        else:
            self.subscription.pause()

    def write_frames(self, frames) -> None:
        self.writes.append([json.loads(f)["n"] for f in frames])


def test_a_lone_event_goes_out_at_once():
    """After a quiet spell an event is delivered in the publishing turn."""
    clock = Clock()
    hub = Hub(clock)
    consumer = Consumer(hub)
    publish(hub, {"type": "x", "n": 1})
    clock.advance(1)
    publish(hub, {"type": "x", "n": 2})
    assert consumer.writes == [[1], [2]]


def test_a_burst_is_coalesced_into_one_write_per_window():
    """Events within the window after a send are flushed together when it ends."""
    clock = Clock()
    hub = Hub(clock, coalesce=0.002)
    consumer = Consumer(hub)
    for n in range(5):
        publish(hub, {"type": "x", "n": n})
    assert consumer.writes == [[0]]
    clock.advance(0.001)
    publish(hub, {"type": "x", "n": 5})
    assert consumer.writes == [[0]]
    clock.advance(0.001)
    assert consumer.writes == [[0], [1, 2, 3, 4, 5]]
    publish(hub, {"type": "x", "n": 6})
    clock.advance(0.002)
    assert consumer.writes == [[0], [1, 2, 3, 4, 5], [6]]


def test_a_paused_subscriber_keeps_its_frames_in_order():
    """Frames held for a paused subscriber stay queued and keep their order."""
    clock = Clock()
    hub = Hub(clock)
    consumer = Consumer(hub)
    consumer.ready(False)
    for n in range(3):
        publish(hub, {"type": "x", "n": n})
    clock.advance(1)
    assert consumer.writes == []
    consumer.ready(True)
    assert consumer.writes == [[0, 1, 2]]
    publish(hub, {"type": "x", "n": 3})
    clock.advance(0.002)
    assert consumer.writes == [[0, 1, 2], [3]]


def test_the_window_grows_to_the_cost_of_a_write_round():
    """After a round of writes that took 10 ms, events wait up to 10 ms, not 2 ms."""
    clock = Clock()
    hub = Hub(clock, coalesce=0.002)
    consumer = Consumer(hub)
    write = consumer.write_frames

    def slow_write(frames):
        clock.advance(0.010)
        write(frames)

    consumer.write_frames = slow_write
    publish(hub, {"type": "x", "n": 0})
    clock.advance(0.005)
    publish(hub, {"type": "x", "n": 1})
    clock.advance(0.004)
    assert consumer.writes == [[0]]
    clock.advance(0.001)
    assert consumer.writes == [[0], [1]]


class Reader(Frames):
    """A subscriber that always reads, and resyncs (records a marker) when told to."""

    def resync(self) -> None:
        self.frames.append("RESYNC")
        self.subscription.resynced()


def test_a_reading_subscriber_hit_by_a_burst_is_resynced_at_once():
    """More than 256 events in one window overflow a subscriber that never paused: at the
    flush it is told to resync, and the lag clears, so later events flow again."""
    clock = Clock()
    hub = Hub(clock, coalesce=0.002)
    reader = Reader(hub)
    for n in range(300):
        publish(hub, {"type": "x", "n": n})
    assert len(reader.frames) == 1 and reader.subscription.lagged
    clock.advance(0.002)
    assert reader.frames[1:] == ["RESYNC"] and not reader.subscription.lagged
    clock.advance(1)
    publish(hub, {"type": "x", "n": 300})
    assert json.loads(reader.frames[-1])["n"] == 300
    for _ in range(3):
        for n in range(300):
            publish(hub, {"type": "x", "n": n})
        clock.advance(1)
    assert reader.frames.count("RESYNC") == 4 and not reader.subscription.lagged


def test_a_lagged_subscriber_is_handed_no_frame_before_its_resync():
    """While lagged, not even an at-once event reaches the subscriber: the resync comes first."""
    clock = Clock()
    hub = Hub(clock)
    reader = Reader(hub)
    reader.subscription.pause()
    for n in range(257):
        publish(hub, {"type": "x", "n": n})
    reader.subscription.resume()
    assert reader.frames == ["RESYNC"]


def test_isotime_is_datetimes_format_to_the_microsecond():
    """The fast timestamp gives exactly what datetime gives, rounding included."""
    import random
    from datetime import UTC, datetime

    from cpstream.domain.frames import isotime

    rng = random.Random(14)
    for _ in range(20_000):
        seconds = rng.uniform(1.7e9, 1.9e9)
        if rng.random() < 0.2:
            seconds = round(seconds, rng.randint(0, 6)) + rng.choice((0, 4.9999995e-7))
        expected = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert isotime(seconds) == expected, seconds


def test_a_broadcast_has_no_seq_and_follows_the_queues_of_events():
    """A frame that is not an event (usage_changed) reaches subscribers encoded once, leaves
    the hub's seq alone, waits in a paused subscriber's queue in order with the events, and
    cannot carry a seq."""
    clock = Clock()
    hub = Hub(clock, seq=5)
    reading, paused = Consumer(hub), Consumer(hub)
    paused.ready(False)
    hub.broadcast({"type": "usage_changed", "n": 1})
    publish(hub, {"type": "x", "n": 2})
    clock.advance(1)
    assert hub.seq == 6 and reading.writes == [[1], [2]]
    paused.ready(True)
    assert paused.writes == [[1, 2]]
    with pytest.raises(AssertionError):
        hub.broadcast({"type": "usage_changed", "seq": 7})


def test_frames_and_bytes_are_counted_once_a_round_and_lags_counted():
    """The meter counts every frame handed over (at once, flushed, or on resume) and its bytes
    with one increment a round, not one a subscriber; a lag is counted once; every published
    frame is timed once, from its publish to the end of the round that wrote it."""
    clock = Clock()
    hub = Hub(clock, coalesce=0.002, kind="instances", queue_size=4)
    timings = []
    hub.meter.on_timing(lambda name, seconds: timings.append((name, seconds)))
    subscribers = [Consumer(hub) for _ in range(3)]
    first = publish(hub, {"type": "x", "n": 0})
    counts = hub.meter.counts
    assert counts[("stream_frames", "instances")] == 3
    assert counts[("stream_bytes", "instances")] == 3 * len(encode(first))
    publish(hub, {"type": "x", "n": 1})  # in the window: queued, flushed together
    clock.advance(0.002)
    assert counts[("stream_frames", "instances")] == 6
    assert [name for name, _ in timings] == ["publish_write", "publish_write"]
    assert timings[1][1] == pytest.approx(0.002)
    subscribers[0].ready(False)
    clock.advance(1)
    for n in range(5):
        publish(hub, {"type": "x", "n": n})
        clock.advance(1)
    assert counts[("stream_lagged", "instances")] == 1
    assert counts[("stream_frames", "instances")] == 6 + 2 * 5
    assert sum(len(w) for s in subscribers for w in s.writes) == 6 + 2 * 5
