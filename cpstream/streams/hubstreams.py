"""``/ws/instances`` and ``/ws/messages``: a snapshot, then the hub's deltas."""

from __future__ import annotations

from typing import Any

from cpstream.domain import frames
from cpstream.domain.history import History
from cpstream.domain.hub import Event, Hub, Subscription, encode
from cpstream.domain.messaging import Messaging
from cpstream.domain.registry import Registry
from cpstream.streams.connections import Streams
from cpstream.streams.protocol import StreamFactory, StreamProtocol
from cpstream.streams.settings import INSTANCES, MESSAGES, prepare_frame

MAX_FILTER = 200


class HubStream(StreamProtocol):
    """A snapshot (or a resume), then the hub's deltas; a lagged subscriber is resynced.

    The protocol is its subscription's subscriber: the hub hands it frames to
    write (:meth:`write_frames`) and tells it to :meth:`resync` after a lag.
    While the transport is paused the protocol pauses its subscription, so
    frames wait in the subscription's bounded queue; on resume they are handed
    over in one write. ``?since=S&epoch=E`` resumes: the missed events are sent
    (after a ``resumed`` frame) instead of the snapshot when the history has them.
    """

    factory: HubStreamFactory

    def __init__(self) -> None:
        super().__init__()
        self._snapshot_owed = False
        self._subscription: Subscription | None = None
        self.since: int | None = None
        self.epoch: str | None = None

    def parse(self, request: Any) -> None:
        since = query(request, "since")
        self.epoch = query(request, "epoch")
        if since is not None:
            try:
                self.since = int(since)
            except ValueError:
                self.problem = ("bad_request", "since must be an integer", 4400)

    def opened(self) -> None:
        self._subscription = self.factory.hub.subscribe(self.accepts, self)
        if self.since is None:
            self._send_snapshot()
            return
        missed = self.history().since(self.since, self.epoch or "")
        if isinstance(missed, str):
            self._send_snapshot(reason=missed)
            return
        self.send_json(frames.resumed(self.since, self.factory.hub.seq, self.history().epoch))
        replayed = [prepare_frame(encode(event)) for event in missed if self.accepts(event)]
        if replayed:
            self.write_own(replayed)

    def accepts(self, event: Event) -> bool:
        return True

    def snapshot(self) -> Event:
        raise NotImplementedError

    def history(self) -> History:
        raise NotImplementedError

    def _send_snapshot(self, reason: str | None = None) -> None:
        """A fresh snapshot replaces everything queued (it already includes it)."""
        assert self._subscription is not None
        self._subscription.resynced()
        frame = self.snapshot()
        if reason is not None:
            self.factory.streams.meter.count(("stream_resyncs", self.endpoint, reason))
        self.send_json(frame if reason is None else frames.resync(frame, reason))

    def resync(self) -> None:
        """The subscription lagged (frames were dropped), or the hub restarted: a resync
        snapshot now, with the subscription's reason."""
        assert self._subscription is not None
        self._snapshot_owed = False
        self._send_snapshot(reason=self._subscription.reason)

    def resnapshot(self) -> None:
        """Answer a command with a snapshot, now or once the client reads again."""
        if self.paused:
            self._snapshot_owed = True
        else:
            self._send_snapshot()

    def stream_paused(self) -> None:
        if self._subscription is not None:
            self._subscription.pause()

    def stream_resumed(self) -> None:
        if self._subscription is None:
            return
        if self._snapshot_owed and not self._subscription.lagged:
            self._snapshot_owed = False
            self._send_snapshot()
        if not self.paused:
            self._subscription.resume()

    def ended(self) -> None:
        if self._subscription is not None:
            self._subscription.cancel()


class HubStreamFactory(StreamFactory):
    """A hub stream's factory: the hub its connections subscribe to."""

    def __init__(self, streams: Streams, hub: Hub) -> None:
        super().__init__(streams)
        self.hub = hub


class InstancesProtocol(HubStream):
    """``/ws/instances``: instance snapshots and lifecycle deltas."""

    endpoint = INSTANCES
    commands = ("set_include_archived",)
    factory: InstancesFactory

    def parse(self, request: Any) -> None:
        super().parse(request)
        self.include_archived = False

    def accepts(self, event: Event) -> bool:
        return self.include_archived or event["type"] != "instance_deleted"

    def snapshot(self) -> Event:
        return self.factory.registry.snapshot(self.include_archived)

    def history(self) -> History:
        return self.factory.registry.history

    def command(self, kind: str, frame: dict[str, Any]) -> None:
        value = frame.get("value")
        if not isinstance(value, bool):
            self.refuse_frame("set_include_archived needs a boolean 'value'")
            return
        self.include_archived = value
        self.resnapshot()


class InstancesFactory(HubStreamFactory):
    protocol = InstancesProtocol

    def __init__(self, streams: Streams, hub: Hub, registry: Registry) -> None:
        super().__init__(streams, hub)
        self.registry = registry


def query(request: Any, name: str) -> str | None:
    """The first value of a query parameter of the upgrade request."""
    values = request.params.get(name)
    return values[0] if values else None


class MessagesProtocol(HubStream):
    """``/ws/messages``: recent message events, then live ones, filtered."""

    endpoint = MESSAGES
    factory: MessagesFactory

    def parse(self, request: Any) -> None:
        super().parse(request)
        self.instance = query(request, "instance") or None
        self.correlation_id = query(request, "correlation_id") or None
        for value in (self.instance, self.correlation_id):
            if value is not None and len(value) > MAX_FILTER:
                self.problem = ("bad_request", "filters are at most 200 characters", 4400)

    def accepts(self, event: Event) -> bool:
        if self.instance is not None and self.instance not in (event["from"], event["to"]):
            return False
        return self.correlation_id is None or event["correlation_id"] == self.correlation_id

    def snapshot(self) -> Event:
        return self.factory.messaging.snapshot(self.instance, self.correlation_id)

    def history(self) -> History:
        return self.factory.messaging.history


class MessagesFactory(HubStreamFactory):
    protocol = MessagesProtocol

    def __init__(self, streams: Streams, hub: Hub, messaging: Messaging) -> None:
        super().__init__(streams, hub)
        self.messaging = messaging
