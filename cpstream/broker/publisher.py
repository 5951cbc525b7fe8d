"""The control plane's side of the Redis broker: every committed event, relayed.

The control plane stays the single writer. Its hubs are :class:`RelayHub`\\ s:
each event (already stamped with its SQLite ``seq`` and ``timestamp``) is handed
to :meth:`RedisPublisher._relay`, and once per reactor turn the turn's events of
a topic go to Redis in ONE script call (:data:`~cpstream.broker.scripts.PUBLISH`):
append to the stream (ids = seqs), trim, update the state, publish to the
gateways. The script refuses a batch that does not follow what the stream holds
(the ``prev`` it names), so Redis never gets a hole or a duplicate.

Never blocking, never breaking: nothing here waits for Redis. While Redis is
unreachable the relay drops events on the floor, on purpose: they are in the
database. Every (re)connection first catches up from the database: it reads the
seq Redis holds (``P:m:T``), re-sends every event after it from the SQLite tables
in one script call, then relays live again. When Redis lost its data or holds
another database's epoch, or is too far behind, the topic is reset instead: the
state and the last :data:`RESET_HISTORY` events are written in one script
call and the gateways are told, so they load again (and resume their clients,
or resync them when even that history does not reach back far enough).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger

from cpstream.broker.link import Link
from cpstream.broker.scripts import PUBLISH, RESET, Keys, ended_sessions
from cpstream.domain.broker import RelayHub, Source
from cpstream.domain.hub import Event, Hub, encode
from cpstream.domain.mirror import WINDOW

RESET_HISTORY = 1000
PREFIX = "cpstream"


class RedisPublisher(Service):
    """Relays the control plane's events to Redis and catches Redis up after an outage."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        url: str,
        epoch: str,
        maxlen: int = WINDOW,
        prefix: str = PREFIX,
        link: Callable[..., Link] = Link,
    ) -> None:
        self.reactor = reactor
        self.url = url
        self.epoch = epoch
        self.maxlen = maxlen
        self.prefix = prefix
        self._sources: dict[str, Source] = {}
        self._live: dict[str, bool] = {}
        self._sent: dict[str, int] = {}
        self._pending: dict[str, list[tuple[Event, bytes]]] = {}
        self._flush_call: Any = None
        self._proto: Any = None
        self._ended_sessions: Callable[[], list[str]] = list
        self.published = 0
        self.resets = 0
        self.link = link(reactor, url, self._catch_up, on_lost=self._lost, name="redis publisher")

    # -- the broker interface ----------------------------------------------------------

    def hub(
        self, topic: str, clock: Any, seq: int, prepare: Callable[[bytes], Any], **options: Any
    ) -> Hub:
        return RelayHub(topic, self._relay, clock, prepare=prepare, seq=seq, **options)

    def bind(self, topic: str, source: Source) -> None:
        self._sources[topic] = source
        self._live[topic] = False

    def sessions(self, ended: Callable[[], list[str]]) -> Callable[[str], None]:
        self._ended_sessions = ended
        return self._session_ended

    def _session_ended(self, session_id: str) -> None:
        """A logout: gateways refuse the session from now on (or from the next catch-up)."""
        proto = self._proto
        if proto is None:
            return
        key, channel = ended_sessions(self.prefix)
        for command in (("SADD", key, session_id), ("PUBLISH", channel, session_id)):
            sent = defer.maybeDeferred(proto.execute_command, *command)
            sent.addErrback(self._failed, "sessions")

    @defer.inlineCallbacks
    def _copy_sessions(self, proto: Any) -> Any:
        """The ended sessions, replaced at once (RENAME), then a notice to reload them."""
        key, channel = ended_sessions(self.prefix)
        ids = self._ended_sessions()
        if ids:
            yield proto.execute_command("SADD", key + ":new", *ids)
            yield proto.execute_command("RENAME", key + ":new", key)
        else:
            yield proto.execute_command("DEL", key)
        yield proto.execute_command("PUBLISH", channel, "")

    def health(self) -> dict[str, Any]:
        return {
            "kind": "redis",
            "reachable": self.link.reachable,
            "live": all(self._live.values()),
            "connection_failures": self.link.failures,
            "published": self.published,
            "resets": self.resets,
        }

    def startService(self) -> None:  # noqa: N802 (Twisted API)
        super().startService()
        self.link.startService()

    def stopService(self) -> defer.Deferred:  # noqa: N802 (Twisted API)
        super().stopService()
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
            self._flush()
        return self.link.stopService()

    # -- live ----------------------------------------------------------------------

    def _relay(self, topic: str, event: Event, text: bytes) -> None:
        """An event was committed and published locally (``text``: the encoding its local
        subscribers got): send it with this turn's others."""
        if not self._live.get(topic):
            return  # Redis is behind: the catch-up reads it from the database
        self._pending.setdefault(topic, []).append((event, text))
        if self._flush_call is None:
            self._flush_call = self.reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        pending, self._pending = self._pending, {}
        proto = self._proto
        for topic, batch in pending.items():
            if proto is None or not self._live.get(topic):
                continue
            self._send(proto, topic, batch)

    def _send(self, proto: Any, topic: str, batch: list[tuple[Event, bytes]]) -> defer.Deferred:
        """One PUBLISH script call for a batch (each event with its encoding) that follows
        what was sent before."""
        keys = Keys.of(self.prefix, topic)
        prev = self._sent[topic]
        events = [event for event, _ in batch]
        encoded = [text for _, text in batch]
        appended = [(e["seq"], text) for e, text in batch if "seq" in e]
        last = appended[-1][0] if appended else prev
        states = {
            key: b"" if value is None else encode(value)
            for key, value in self._states(topic, events).items()
        }
        message = b'{"p":%d,"s":%d,"ev":[%s],"st":{%s}}' % (
            prev,
            last,
            b",".join(encoded),
            b",".join(encode(key) + b":" + (value or b"null") for key, value in states.items()),
        )
        args: list[Any] = [self.epoch, prev, self.maxlen, keys.channel, message, len(appended)]
        for seq, text in appended:
            args += [seq, text]
        args.append(len(states))
        for key, value in states.items():
            args += [key, value]
        self._sent[topic] = last
        sent = defer.maybeDeferred(PUBLISH, proto, keys.all, args)
        sent.addCallbacks(self._published, self._failed, (topic, len(appended)), None, (topic,))
        return sent

    def _states(self, topic: str, events: list[Event]) -> dict[str, Any]:
        state = self._sources[topic].state
        if state is None:
            return {}
        ids = [event["id"] for event in events if "id" in event]
        for event in events:  # a usage sample changes its instances' snapshot items
            ids += [entry["id"] for entry in event.get("instances", ())]
        return {key: state(key) for key in ids}

    def _published(self, reply: list[Any], topic: str, count: int) -> None:
        if str(reply[0]) == "1":
            self.published += count
            return
        self.log.warn(
            "redis holds {topic} at {seq} (epoch {epoch}), not where we left it: catching up",
            topic=topic,
            seq=reply[2],
            epoch=reply[1],
        )
        self._resync(topic)

    def _failed(self, failure: Any, topic: str) -> None:
        self.log.warn("publishing {topic} to redis failed: {e}", topic=topic, e=failure.value)
        self._resync(topic)

    def _resync(self, topic: str) -> None:
        """Stop relaying and catch up on a fresh connection."""
        self._lost()
        self.link.drop()

    def _lost(self) -> None:
        """No usable connection: relay nothing until the next catch-up."""
        self._proto = None
        for name in self._live:
            self._live[name] = False

    # -- catching up -------------------------------------------------------------------

    @defer.inlineCallbacks
    def _catch_up(self, proto: Any) -> Any:
        """A new connection: bring every topic's stream up to the database, then go live."""
        self._lost()
        yield PUBLISH.load(proto)
        yield RESET.load(proto)
        self._proto = proto
        yield self._copy_sessions(proto)
        for topic in self._sources:
            yield self._catch_up_topic(proto, topic)

    @defer.inlineCallbacks
    def _catch_up_topic(self, proto: Any, topic: str) -> Any:
        keys = Keys.of(self.prefix, topic)
        epoch, held = yield proto.execute_command("HMGET", keys.meta, "e", "s")
        history = self._sources[topic].history
        top = history.seq
        if (
            epoch == self.epoch
            and held is not None
            and history.pruned() <= int(held) <= top
            and top - int(held) <= self.maxlen
        ):
            held = int(held)
            self._sent[topic] = held
            missed = history.after(held, top - held) if top > held else []
            self._live[topic] = True
            if missed:
                self.log.info(
                    "redis: re-sending {n} {topic} events after {seq}",
                    n=len(missed),
                    topic=topic,
                    seq=held,
                )
                yield self._send(proto, topic, [(event, encode(event)) for event in missed])
            return
        reset = self._reset(proto, topic, keys, top)
        self._sent[topic] = top
        self._live[topic] = True
        yield reset

    def _reset(self, proto: Any, topic: str, keys: Keys, top: int) -> defer.Deferred:
        """Write the topic anew: the last events, the whole state, the meta; tell gateways."""
        source = self._sources[topic]
        start = max(top - RESET_HISTORY, source.history.pruned())
        events = source.history.after(start, RESET_HISTORY)
        floor = events[0]["seq"] - 1 if events else top
        states = {}
        if source.state is not None and source.keys is not None:
            states = {key: source.state(key) for key in source.keys()}
        args: list[Any] = [self.epoch, top, floor, keys.channel, b'{"reset":true}', len(events)]
        for event in events:
            args += [event["seq"], encode(event)]
        args.append(len(states))
        for key, value in states.items():
            args += [key, encode(value)]
        self.resets += 1
        self.log.info(
            "redis: reset {topic} at seq {seq} with {n} events of history",
            topic=topic,
            seq=top,
            n=len(events),
        )
        return defer.maybeDeferred(RESET, proto, keys.all, args)
