"""One contract for both brokers: what the stream protocols are fed.

In-process, the protocols read the control plane's own hubs, registry and
messaging; through Redis, a gateway's mirrors kept by a :class:`RedisFeed`. Either
way, after real REST calls on a real control plane: every event reaches a hub
subscriber once, in seq order, as the same bytes; snapshots are current to the
hub's seq and equal the control plane's; the history replays exactly the events
after any seq, and names the database's epoch.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor as global_reactor

from cpstream.broker.feed import RedisFeed
from cpstream.domain.mirror import InstancesView, MessagesView
from cpstream.gatewaytap import mirrors
from tests.conftest import build_control_plane
from tests.support import authorize, create, kill_processes_with, post_json, read_token, wait_for


@dataclass
class Fed:
    """The control plane, and what a stream server of this broker is fed."""

    cp: Any
    hubs: dict[str, Any]
    instances: Any
    messages: Any
    feed: Any = None

    @property
    def url(self) -> str:
        return self.cp.web.url

    async def caught_up(self) -> None:
        """Wait until the fed hubs are at the control plane's seqs."""
        await wait_for(
            lambda: all(self.hubs[k].seq == self.cp.hubs[k].seq for k in self.hubs), timeout=10
        )


class Raw:
    """A hub subscriber that keeps the exact bytes of every frame."""

    def __init__(self, hub: Any) -> None:
        self.payloads: list[bytes] = []
        hub.subscribe(lambda event: True, self)

    def write_frames(self, frames: Any) -> None:
        self.payloads.extend(frame.payload for frame in frames)

    @property
    def seq(self) -> int | None:
        """The seq of the last sequenced frame written to it."""
        for payload in reversed(self.payloads):
            seq = json.loads(payload).get("seq")
            if seq is not None:
                return seq
        return None

    def resync(self) -> None:
        raise AssertionError("a contract subscriber never lags")


@pytest_twisted.async_yield_fixture(params=["memory", "redis"])
async def fed(request: pytest.FixtureRequest, data_dir: Any) -> AsyncIterator[Fed]:
    args = ("--broker", request.getfixturevalue("redis_url")) if request.param == "redis" else ()
    cp = build_control_plane(data_dir, *args)
    cp.startService()
    authorize(cp.web.url, read_token(data_dir))
    feed = None
    try:
        if request.param == "memory":
            yield Fed(cp, cp.hubs, cp.registry, cp.messaging)
        else:
            kept = mirrors(global_reactor)
            feed = RedisFeed(global_reactor, args[1], kept)
            feed.startService()
            await wait_for(lambda: all(m.loaded for m in kept.values()), timeout=10)
            hubs = {topic: mirror.hub for topic, mirror in kept.items()}
            views = InstancesView(kept["instances"]), MessagesView(kept["messages"])
            yield Fed(cp, hubs, *views, feed=feed)
    finally:
        if feed is not None:
            await feed.stopService()
        await cp.stopService()
        kill_processes_with("CPSTREAM_URL", cp.web.url)


async def activity(url: str) -> None:
    """Instances created, archived, unarchived, cloned; messages sent and routed."""
    for name in ("a", "b", "c"):
        await create(url, name)
    await post_json(f"{url}/api/instances/c/archive")
    await post_json(f"{url}/api/instances/c/unarchive")
    await post_json(f"{url}/api/instances/a/clone", {"name": "a2"})
    await post_json(f"{url}/api/instances/a2/archive")
    rule = {"from_instance": "a", "to_instance": "b", "type_pattern": "task.*"}
    assert (await post_json(f"{url}/api/routing-rules", rule))[0] == 201
    for n in range(5):
        body = {
            "from_instance": "a",
            "to_instance": "b",
            "message_type": "task.x",
            "payload": {"n": n},
            "correlation_id": f"c{n % 2}",
        }
        assert (await post_json(f"{url}/api/messages", body))[0] == 201


async def test_every_event_arrives_once_in_order_as_the_same_bytes(fed: Fed) -> None:
    """A fed hub's subscriber gets the control plane's frames: same bytes, same order."""
    fed_raw = {topic: Raw(hub) for topic, hub in fed.hubs.items()}
    cp_raw = {topic: Raw(hub) for topic, hub in fed.cp.hubs.items()}
    loads = fed.feed.loads if fed.feed is not None else 0
    await activity(fed.url)
    await fed.caught_up()
    # the hubs hand frames over after a short coalescing window: wait for every last one
    written = [*fed_raw.items(), *cp_raw.items()]
    await wait_for(lambda: all(raw.seq == fed.cp.hubs[t].seq for t, raw in written), timeout=10)
    if fed.feed is not None:  # live, through Pub/Sub: no load (backfill) was needed
        assert fed.feed.loads == loads and fed.feed.batches > 0
    for topic in fed.hubs:
        assert fed_raw[topic].payloads == cp_raw[topic].payloads
        assert len(fed_raw[topic].payloads) >= 5


async def test_snapshots_are_current_and_the_control_planes(fed: Fed) -> None:
    """Snapshots carry the hub's seq and the same content as the control plane's own."""
    await activity(fed.url)
    await fed.caught_up()
    for archived in (False, True):
        snapshot = fed.instances.snapshot(archived)
        assert snapshot == fed.cp.registry.snapshot(archived)
        assert snapshot["seq"] == fed.hubs["instances"].seq
    for instance, correlation in ((None, None), ("a", None), ("b", "c1"), ("zz", None)):
        snapshot = fed.messages.snapshot(instance, correlation)
        assert snapshot == fed.cp.messaging.snapshot(instance, correlation)
        assert snapshot["seq"] == fed.hubs["messages"].seq


async def test_history_replays_exactly_what_follows_a_seq(fed: Fed) -> None:
    """since(S) is every event after S; another epoch and a future S are refused."""
    await activity(fed.url)
    await fed.caught_up()
    for view, truth in ((fed.instances, fed.cp.registry), (fed.messages, fed.cp.messaging)):
        epoch = truth.history.epoch
        assert view.history.epoch == epoch == fed.cp.store.meta.get("epoch")
        top = truth.history.seq
        for since in (0, 1, top // 2, top):
            assert view.history.since(since, epoch) == truth.history.since(since, epoch)
        assert view.history.since(top - 1, "another") == "epoch"
        assert view.history.since(top + 1, epoch) == "future"
