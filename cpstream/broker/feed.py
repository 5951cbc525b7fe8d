"""A gateway's side of the Redis broker: mirrors fed by Pub/Sub, backfilled from Streams.

For each topic the feed SUBSCRIBEs first and only then loads (the
:data:`~cpstream.broker.scripts.LOAD` script: meta, state and history read in
one atomic call), buffering live batches meanwhile; a buffered batch the load
already covers is dropped. A live batch names the seq it follows (``p``): one
that does not follow the mirror's seq (a batch was lost, the subscriber
reconnected) triggers a load that backfills from the stream. A ``reset``
message (the publisher rewrote the topic) triggers a load too. So the mirror
either continues without a hole or is replaced, and its clients resync.

A heartbeat reads every topic's meta each second: a frozen Redis times out
(the connection is aborted and ``/api/health`` says unreachable), and a stream
ahead of the mirror with nothing arriving is loaded.
"""

from __future__ import annotations

import json
from typing import Any

import txredisapi
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from cpstream.broker.link import Link
from cpstream.broker.publisher import PREFIX
from cpstream.broker.scripts import LOAD, Keys, ended_sessions
from cpstream.domain.mirror import Mirror

HEARTBEAT = 1.0


class _Subscriber(txredisapi.SubscriberProtocol):
    """Hands every Pub/Sub message to its feed."""

    feed: RedisFeed | None = None

    def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:  # noqa: N802
        if self.feed is not None:
            self.feed.received(channel, message)


class EndedSessions:
    """Browser sessions ended by a logout at the control plane, as Redis tells them."""

    def __init__(self) -> None:
        self.ids: set[str] = set()

    def ended(self, session_id: str) -> bool:
        return session_id in self.ids


class RedisFeed(Service):
    """Keeps one mirror per topic current from Redis."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        url: str,
        mirrors: dict[str, Mirror],
        prefix: str = PREFIX,
        on_loaded: Any = lambda: None,
    ) -> None:
        self.reactor = reactor
        self._on_loaded = on_loaded
        self.url = url
        self.mirrors = mirrors
        self.keys = {topic: Keys.of(prefix, topic) for topic in mirrors}
        self._by_channel = {keys.channel: topic for topic, keys in self.keys.items()}
        self._ended_key, self._ended_channel = ended_sessions(prefix)
        self.ended_sessions = EndedSessions()
        self._loading: dict[str, bool] = dict.fromkeys(mirrors, False)
        self._again: dict[str, bool] = dict.fromkeys(mirrors, False)
        self._buffer: dict[str, list[dict[str, Any]]] = {topic: [] for topic in mirrors}
        self._behind: dict[str, int | None] = dict.fromkeys(mirrors)
        self._subscribed = False
        self.loads = 0
        self.batches = 0
        self.commands = Link(reactor, url, self._commands_ready, name="redis")
        self.subscriber = Link(
            reactor,
            url,
            self._subscribe,
            on_lost=self._unsubscribed,
            protocol_class=_Subscriber,
            name="redis subscriber",
        )
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = reactor

    @property
    def reachable(self) -> bool:
        return self.commands.reachable and self.subscriber.reachable

    def health(self) -> dict[str, Any]:
        return {
            "kind": "redis",
            "reachable": self.reachable,
            "loaded": all(m.loaded for m in self.mirrors.values()),
            "topics": {
                topic: {"seq": m.seq, "epoch": m.epoch, "loaded": m.loaded}
                for topic, m in self.mirrors.items()
            },
            "loads": self.loads,
            "connection_failures": self.commands.failures + self.subscriber.failures,
        }

    def startService(self) -> None:  # noqa: N802 (Twisted API)
        super().startService()
        self.subscriber.startService()
        self.commands.startService()
        self._heartbeat.start(HEARTBEAT, now=False)

    @defer.inlineCallbacks
    def stopService(self):  # noqa: N802 (Twisted API)
        super().stopService()
        if self._heartbeat.running:
            self._heartbeat.stop()
        yield self.subscriber.stopService()
        yield self.commands.stopService()

    # -- connections -------------------------------------------------------------------

    def _subscribe(self, proto: Any) -> Any:
        proto.feed = self
        subscribed = proto.subscribe([*self._by_channel, self._ended_channel])
        subscribed.addCallback(lambda _: self._now_subscribed())
        return subscribed

    def _now_subscribed(self) -> None:
        """Subscribed (again): whatever was published meanwhile is loaded."""
        self._subscribed = True
        self._load_sessions()
        for topic in self.mirrors:
            self.load(topic)

    def _unsubscribed(self) -> None:
        self._subscribed = False

    def _commands_ready(self, proto: Any) -> Any:
        loaded = LOAD.load(proto)
        loaded.addCallback(lambda _: self.reactor.callLater(0, self._load_all))
        return loaded

    def _load_all(self) -> None:
        self._load_sessions()
        for topic in self.mirrors:
            self.load(topic)

    def _load_sessions(self) -> None:
        """Read every ended session (at each connection, and when the publisher says so)."""
        proto = self.commands.protocol
        if proto is None:
            return
        reading = defer.maybeDeferred(proto.execute_command, "SMEMBERS", self._ended_key)
        reading.addCallbacks(self._sessions_loaded, self._load_failed, errbackArgs=("sessions",))

    def _sessions_loaded(self, ids: list[str]) -> None:
        self.ended_sessions.ids = set(ids or ())

    # -- live --------------------------------------------------------------------------

    def received(self, channel: str, message: str) -> None:
        """A Pub/Sub message: a batch to apply, or a reset to load."""
        if channel == self._ended_channel:
            if message:
                self.ended_sessions.ids.add(message)
            else:
                self._load_sessions()
            return
        topic = self._by_channel.get(channel)
        if topic is None:
            return
        try:
            batch = json.loads(message)
        except ValueError:
            self.log.warn("redis: a message on {channel} is not JSON", channel=channel)
            return
        if self._loading[topic]:
            self._buffer[topic].append(batch)
            return
        self._take(topic, batch)

    def _take(self, topic: str, batch: dict[str, Any]) -> None:
        mirror = self.mirrors[topic]
        if batch.get("reset"):
            self.load(topic)
            return
        if _covered(batch, mirror):
            return
        self.batches += 1
        if not mirror.apply(batch["p"], batch["ev"], batch["st"]):
            self._buffer[topic].append(batch)
            self.load(topic)

    # -- loading -----------------------------------------------------------------------

    def load(self, topic: str) -> None:
        """Read the topic atomically and bring the mirror up to it (once at a time)."""
        proto = self.commands.protocol
        if proto is None or not self._subscribed:
            return  # loaded when both connections are up
        if self._loading[topic]:
            self._again[topic] = True
            return
        self._loading[topic] = True
        mirror = self.mirrors[topic]
        keys = self.keys[topic]
        reading = defer.maybeDeferred(
            LOAD, proto, keys.all, [mirror.epoch, mirror.seq, mirror.window]
        )
        reading.addCallbacks(self._loaded, self._load_failed, (topic,), None, (topic,))

    def _loaded(self, reply: list[Any], topic: str) -> None:
        epoch, seq, floor, flat, entries, whole = reply
        seq, floor = int(seq), int(floor)
        if str(whole) == "1":
            entries = list(reversed(entries))
            if len(entries) >= self.mirrors[topic].window:
                floor = max(floor, _seq_of(entries[0]) - 1)
        events = [json.loads(fields[1]) for _, fields in entries]
        state = {flat[i]: json.loads(flat[i + 1]) for i in range(0, len(flat), 2)}
        mirror = self.mirrors[topic]
        self.loads += 1
        if epoch == "":
            self._done_loading(topic)
            return  # nothing published yet: keep serving what we have
        continued = mirror.load(epoch, seq, floor, state, events)
        if all(m.loaded for m in self.mirrors.values()) and self._on_loaded is not None:
            on_loaded, self._on_loaded = self._on_loaded, None
            on_loaded()
        if not continued:
            self.log.info(
                "redis: {topic} loaded anew at seq {seq} (epoch {epoch})",
                topic=topic,
                seq=seq,
                epoch=epoch,
            )
        self._done_loading(topic)

    def _done_loading(self, topic: str) -> None:
        self._loading[topic] = False
        buffered, self._buffer[topic] = self._buffer[topic], []
        again, self._again[topic] = self._again[topic], False
        for batch in buffered:
            if batch.get("reset"):
                again = True
                continue
            mirror = self.mirrors[topic]
            if _covered(batch, mirror):
                continue
            if not mirror.apply(batch["p"], batch["ev"], batch["st"]):
                again = True
                break
        if again:
            self.load(topic)

    def _load_failed(self, failure: Any, topic: str) -> None:
        if topic in self._loading:
            self._loading[topic] = False
        self.log.warn("redis: loading {topic} failed: {e}", topic=topic, e=failure.value)
        self.commands.drop()

    # -- heartbeat ---------------------------------------------------------------------

    def _beat(self) -> None:
        """Notice a frozen Redis (the command times out) and a stream ahead of us."""
        proto = self.commands.protocol
        if proto is None:
            return
        for topic, keys in self.keys.items():
            checking = defer.maybeDeferred(proto.execute_command, "HMGET", keys.meta, "e", "s")
            checking.addCallbacks(self._checked, self._beat_failed, (topic,))

    def _checked(self, reply: list[Any], topic: str) -> None:
        epoch, seq = reply
        mirror = self.mirrors[topic]
        if epoch is None or self._loading[topic]:
            return
        if epoch != mirror.epoch:
            self.load(topic)
        elif int(seq) > mirror.seq:
            # a batch may be on its way on the other connection: load if still behind
            # at the next beat
            if self._behind[topic] is not None and mirror.seq < self._behind[topic]:
                self.load(topic)
            self._behind[topic] = int(seq)
            return
        self._behind[topic] = None

    def _beat_failed(self, failure: Any) -> None:
        self.log.warn("redis: heartbeat failed: {e}", e=failure.value)
        self.commands.drop()
        self.subscriber.drop()


def _covered(batch: dict[str, Any], mirror: Mirror) -> bool:
    """Whether a load already brought the mirror past this batch. A batch of live-only
    frames (no seq: ``p`` = ``s``) at the mirror's seq is not: it is relayed."""
    return batch["p"] < mirror.seq and batch["s"] <= mirror.seq


def _seq_of(entry: list[Any]) -> int:
    return int(entry[0].split("-", 1)[0])
