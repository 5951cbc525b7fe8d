"""A gateway's mirror of a stream kind: batches that do not follow are refused, loads
continue or replace it, and its snapshot and history are current to its seq."""

from __future__ import annotations

import json

from twisted.internet.task import Clock

from cpstream.domain.hub import Hub
from cpstream.domain.mirror import InstancesView, MessagesView, Mirror

EPOCH = "e" * 16


def event(seq: int, **fields) -> dict:
    return {"type": "status_changed", "id": f"i{seq}", **fields, "seq": seq, "timestamp": "t"}


def item(n: int, archived: bool = False) -> dict:
    return {
        "order": f"2026-01-0{n}",
        "item": {"id": f"i{n}", "name": f"n{n}", "archived_at": "x" if archived else None},
    }


class Subscriber:
    """Records frames (decoded seqs) and resync reasons."""

    def __init__(self, hub: Hub) -> None:
        self.seqs: list[int] = []
        self.resyncs: list[str] = []
        self.subscription = hub.subscribe(lambda e: True, self)

    def write_frames(self, frames) -> None:
        self.seqs += [json.loads(f)["seq"] for f in frames]

    def resync(self) -> None:
        self.resyncs.append(self.subscription.reason)
        self.subscription.resynced()


def loaded(window: int = 100) -> tuple[Mirror, Clock, Subscriber]:
    clock = Clock()
    mirror = Mirror(Hub(clock, coalesce=0), window=window)
    mirror.load(EPOCH, 3, 0, {"i1": item(1)}, [event(1), event(2), event(3)])
    subscriber = Subscriber(mirror.hub)
    clock.advance(0)
    return mirror, clock, subscriber


def test_a_batch_that_does_not_follow_is_refused_and_changes_nothing():
    """A live batch naming another prev (one was lost) is refused: the caller loads."""
    mirror, clock, subscriber = loaded()
    assert not mirror.apply(4, [event(5)], {})
    assert mirror.seq == 3 and subscriber.seqs == []
    assert mirror.apply(3, [event(4)], {"i2": item(2)})
    clock.advance(0)
    assert mirror.seq == 4 and subscriber.seqs == [4] and "i2" in mirror.state


def test_a_load_that_continues_sends_only_the_missed_events():
    """Same epoch, history reaching back past the mirror's seq: the missed events go to
    the subscribers, in order, and nobody resyncs."""
    mirror, clock, subscriber = loaded()
    assert mirror.load(EPOCH, 6, 2, {}, [event(4), event(5), event(6)])
    clock.advance(0)
    assert subscriber.seqs == [4, 5, 6] and subscriber.resyncs == []
    assert mirror.history.since(3, EPOCH) == [event(4), event(5), event(6)]


def test_a_load_that_cannot_continue_resyncs_everyone_with_its_reason():
    """Another epoch: every subscriber resyncs with reason epoch; history that no longer
    reaches the mirror's seq: reason expired."""
    mirror, clock, subscriber = loaded()
    assert not mirror.load("f" * 16, 2, 0, {}, [event(1), event(2)])
    clock.advance(0)
    assert subscriber.resyncs == ["epoch"] and mirror.seq == 2
    assert not mirror.load("f" * 16, 90, 50, {}, [event(90)])
    clock.advance(0)
    assert subscriber.resyncs == ["epoch", "expired"] and mirror.seq == 90
    assert mirror.history.since(10, "f" * 16) == "expired"


def test_the_window_bounds_what_resumes():
    """Past the window the oldest events are dropped and resuming before them is expired."""
    mirror, clock, subscriber = loaded(window=3)
    for seq in range(4, 8):
        assert mirror.apply(seq - 1, [event(seq)], {})
    assert [e["seq"] for e in mirror.events] == [5, 6, 7]
    assert mirror.history.since(3, EPOCH) == "expired"
    assert mirror.history.since(4, EPOCH) == [event(5), event(6), event(7)]


def test_snapshots_are_current_to_the_seq_and_in_creation_order():
    """The instances snapshot sorts by creation order, hides archived ones unless asked;
    the messages snapshot is the last matching events as rows."""
    mirror, clock, subscriber = loaded()
    mirror.apply(3, [event(4)], {"i3": item(3, archived=True), "i2": item(2), "i1": None})
    view = InstancesView(mirror)
    assert [i["id"] for i in view.snapshot(False)["instances"]] == ["i2"]
    assert [i["id"] for i in view.snapshot(True)["instances"]] == ["i2", "i3"]
    assert view.snapshot(True)["seq"] == 4 and view.snapshot(True)["epoch"] == EPOCH
    messages = Mirror(Hub(clock, coalesce=0))
    frames = [
        {
            "type": "message_event",
            "message_id": f"m{n}",
            "event": "queued",
            "from": "a",
            "to": "b" if n % 2 else "c",
            "message_type": "t",
            "correlation_id": None,
            "detail": None,
            "seq": n,
            "timestamp": f"t{n}",
        }
        for n in range(1, 6)
    ]
    messages.load(EPOCH, 5, 0, {}, frames)
    snapshot = MessagesView(messages).snapshot("c", None)
    assert [r["message_id"] for r in snapshot["recent_events"]] == ["m2", "m4"]
    assert snapshot["recent_events"][0]["timestamp"] == "t2" and snapshot["seq"] == 5
