"""Persistent seq and epoch: the event tables, what a resume can replay, and retention."""

from __future__ import annotations

import sqlite3

import pytest

from cpstream.domain.delivery import DeliveryWorker
from cpstream.domain.history import REPLAY_LIMIT
from cpstream.domain.hub import Hub
from cpstream.domain.messaging import Messaging
from cpstream.domain.registry import Registry
from cpstream.domain.retention import Retention
from cpstream.domain.routing import RoutingRules
from cpstream.domain.store import Store
from tests.support import Recorder


def test_every_instance_event_is_a_row_and_its_seq_is_the_row_id(world):
    """Each change appends one instance_events row; the frame's seq is its id, and
    the frame rebuilt from the row is the frame that was published."""
    a = world.registry.create("a")
    world.registry.set_status(a, "starting", pid=7, started_at="t")
    world.registry.set_status(a, "crashed", exit={"signal": "SIGKILL"})
    copy = world.registry.clone(a, "b")
    world.registry.archive(copy)
    world.registry.unarchive(copy)
    world.registry.archive(copy)
    world.registry.delete(copy)
    published = world.instance_frames.frames
    assert [f["seq"] for f in published] == list(range(1, 9))
    assert published[2]["exit"] == {"signal": "SIGKILL"}
    assert published[3]["cloned_from"] == "a"
    assert world.registry.history.since(0, world.registry.history.epoch) == published


def test_an_instance_history_pages_newest_first(world):
    """GET .../events serves one instance's rows newest first, paged by ``before``."""
    a = world.registry.create("a")
    world.registry.create("other")
    for status in ("starting", "running", "stopping", "stopped"):
        world.registry.set_status(a, status, pid=1 if status != "stopped" else None)
    page = world.registry.events(a, 2)
    assert [f["status"] for f in page] == ["stopped", "stopping"]
    older = world.registry.events(a, 10, before=page[-1]["seq"])
    assert [f.get("status") for f in older] == ["running", "starting", "stopped"]
    assert older[-1]["type"] == "instance_created"


def test_seq_and_epoch_survive_a_restart(tmp_path):
    """A new store, hub and registry on the same file go on from the same seq and epoch."""
    store = Store.open(tmp_path / "cp.db")
    hub = Hub(_clock(), seq=store.instance_events.last_id())
    registry = Registry(store, hub, _clock(), ["agent"])
    registry.create("a")
    epoch, seq = registry.history.epoch, hub.seq
    store.close()
    store = Store.open(tmp_path / "cp.db")
    hub = Hub(_clock(), seq=store.instance_events.last_id())
    again = Registry(store, hub, _clock(), ["agent"])
    assert (again.history.epoch, hub.seq) == (epoch, seq)
    recorder = Recorder(hub)
    again.create("b")
    assert recorder.frames[0]["seq"] == seq + 1
    assert again.snapshot(False)["epoch"] == epoch
    store.close()


def test_each_database_has_its_own_epoch(tmp_path):
    """Two databases never share an epoch (so a resume never crosses databases)."""
    epochs = {Store.open(tmp_path / f"{n}.db").meta.get("epoch") for n in range(5)}
    assert len(epochs) == 5


def test_history_answers_why_it_cannot_replay(world):
    """Another epoch, a seq from the future, pruned events, too many events: each has its
    reason; otherwise exactly the events after the seq."""
    history = world.registry.history
    for n in range(3):
        world.registry.create(f"i{n}")
    assert history.since(0, "another") == "epoch"
    assert history.since(4, history.epoch) == "future"
    assert [f["seq"] for f in history.since(1, history.epoch)] == [2, 3]
    assert history.since(3, history.epoch) == []
    world.store.meta.set("pruned:instance_events", "2")
    assert history.since(1, history.epoch) == "expired"
    assert [f["seq"] for f in history.since(2, history.epoch)] == [3]


def test_a_replay_too_long_is_expired(world):
    """More than REPLAY_LIMIT missed events are not replayed: a snapshot is cheaper."""
    a = world.registry.create("a")
    with world.store.transaction():
        for n in range(REPLAY_LIMIT + 1):
            world.store.instance_events.append(a.id, "a", "instance_archived", {}, f"t{n}")
    hub = Hub(world.clock, seq=world.store.instance_events.last_id())
    registry = Registry(world.store, hub, world.clock, ["agent"])
    assert registry.history.since(0, registry.history.epoch) == "expired"
    assert len(registry.history.since(2, registry.history.epoch)) == REPLAY_LIMIT


def test_message_events_replay_with_their_original_seq(world):
    """Message events are replayed from the table as the frames that were published."""
    messaging, rules = world.messaging, world.rules
    for name in ("a", "b"):
        world.registry.create(name)
    rules.add("a", "b", "task.*")
    sent = messaging.send("a", "b", "task.x", {"n": 1}, correlation_id="c")
    lease = messaging.lease("b")["lease_id"]
    messaging.acknowledge(sent["id"], lease)
    published = world.message_frames.frames
    assert messaging.history.since(0, messaging.history.epoch) == published
    assert [f["seq"] for f in published] == [1, 2, 3]


def test_filtered_message_snapshots_use_an_index(world):
    """Snapshots filtered by instance or correlation id read an index, never scan or sort
    the whole event table."""
    db = world.store._db
    for instance, correlation in (("a", None), (None, "c"), ("a", "c")):
        plans = []
        real = db.execute

        def explain(sql, *args, real=real, plans=plans):
            if sql.lstrip().startswith("SELECT") and "message_events" in sql:
                plans.extend(row[3] for row in real("EXPLAIN QUERY PLAN " + sql, *args))
            return real(sql, *args)

        world.store.messages._db = _Proxy(db, explain)
        world.store.messages.recent_events(instance, correlation, 100)
        world.store.messages._db = db
        text = " | ".join(plans)
        assert "USING" in text and "SCAN message_events" not in text, (instance, correlation, text)
        assert "TEMP B-TREE FOR ORDER BY" not in text.split("UNION")[0], text


class _Proxy:
    def __init__(self, db, execute) -> None:
        self._db = db
        self.execute = execute


def _clock():
    from twisted.internet.task import Clock

    clock = Clock()
    clock.advance(1_790_000_000)
    return clock


def _messaging_world(world):
    for name in ("a", "b"):
        world.registry.create(name)
    world.rules.add("a", "b", "task.*")
    return world.messaging


def test_retention_prunes_old_terminal_messages_in_batches(world):
    """Acknowledged and dead messages older than the window go with their events, in
    batches; live ones stay; the watermark makes older resumes expire."""
    messaging = _messaging_world(world)
    done = []
    for _ in range(5):
        sent = messaging.send("a", "b", "task.x", {}, idempotency_key=None)
        lease = messaging.lease("b")["lease_id"]
        messaging.acknowledge(sent["id"], lease)
        done.append(sent["id"])
    waiting = messaging.send("a", "b", "task.x", {})["id"]
    world.clock.advance(8 * 24 * 3600)
    recent = messaging.send("a", "b", "task.x", {})["id"]
    retention = Retention(world.store, world.clock, keep=7 * 24 * 3600, batch=2)
    assert retention.prune_batch() is True
    assert retention.prune_batch() is True
    assert retention.prune_batch() is True
    assert retention.prune_batch() is False
    assert all(world.store.messages.get(m) is None for m in done)
    assert world.store.messages.get(waiting) and world.store.messages.get(recent)
    pruned = int(world.store.meta.get("pruned:message_events"))
    assert pruned >= 15
    assert messaging.history.since(pruned - 1, messaging.history.epoch) == "expired"
    assert messaging.history.since(pruned, messaging.history.epoch) != "expired"


def test_retention_runs_batch_after_batch_on_later_turns(world):
    """Started, the pruner keeps going on later reactor turns until nothing is left."""
    a = world.registry.create("a")
    for _ in range(5):
        world.registry.set_status(a, "running", pid=1)
        world.registry.set_status(a, "stopped")
    world.clock.advance(8 * 24 * 3600)
    retention = Retention(world.store, world.clock, keep=7 * 24 * 3600, batch=3)
    retention.startService()
    assert len(world.store.instance_events.of_instance(a.id, 100)) == 8
    for _ in range(5):
        world.clock.advance(0)
    assert world.store.instance_events.of_instance(a.id, 100) == []
    retention.stopService()


def test_the_event_logs_stay_append_only_outside_the_pruner(world, tmp_path):
    """Raw UPDATE or DELETE on either event table is refused by a trigger."""
    _messaging_world(world).send("a", "b", "task.x", {})
    world.store.close()
    raw = sqlite3.connect(tmp_path / "cp.db")
    for table in ("instance_events", "message_events"):
        assert raw.execute(f"SELECT count(*) FROM {table}").fetchone()[0] > 0
        for sql in (f"UPDATE {table} SET timestamp = 'x'", f"DELETE FROM {table}"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                raw.execute(sql)


def test_the_delivery_worker_and_messaging_share_the_history(world):
    """Expiries published by the worker are rows too: replay equals what was published."""
    messaging = _messaging_world(world)
    worker = DeliveryWorker(messaging, world.clock)
    worker.startService()
    world.rules.add("a", "b", "short.x", ttl_secs=1)
    for _ in range(3):
        messaging.send("a", "b", "short.x", {})
    world.clock.advance(2)
    worker.stopService()
    published = world.message_frames.frames
    assert [f["event"] for f in published].count("expired") == 3
    assert messaging.history.since(0, messaging.history.epoch) == published


def test_rules_and_messaging_build_on_the_shared_world(world):
    """(Sanity) the shared world's pieces are the real ones."""
    assert isinstance(world.rules, RoutingRules) and isinstance(world.messaging, Messaging)
