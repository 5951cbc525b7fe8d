"""A stream kind as a gateway sees it: fed by a broker instead of the database.

A :class:`Mirror` holds what the control plane's registry and messaging hold
for the streams, rebuilt from the broker: the epoch, the last ``seq``, a window
of recent events (for resumes) and, for instances, the state a snapshot is made
of. It feeds a local :class:`~cpstream.domain.hub.Hub` exactly as the store's
commits feed the control plane's, so the stream protocols run unchanged on it.

Two ways in, both synchronous (the broker client does the I/O):

* :meth:`Mirror.load`: an atomic read of the broker (epoch, seq, floor, state,
  retained events). When it continues what the mirror already has (same epoch,
  and the broker still holds every event after the mirror's seq), the events the
  mirror missed are published to the hub, so connected clients lose nothing.
  Otherwise the mirror is replaced and every subscriber is resynced.
* :meth:`Mirror.apply`: a live batch naming the seq it follows (``prev``). A batch
  that does not follow the mirror's seq is refused: the caller loads again
  (a backfill from the broker's history), so a lost live message is never silent.

The snapshot a gateway serves is therefore always current to ``hub.seq``: state
and seq change together, in one reactor turn, from one atomic read or one batch.
"""

from __future__ import annotations

import bisect
from collections import deque
from typing import Any

from cpstream.domain import frames
from cpstream.domain.frames import Frame
from cpstream.domain.history import History
from cpstream.domain.hub import Hub

WINDOW = 10_000
RECENT = 100


class Mirror:
    """One stream kind's epoch, seq, recent events and state, from a broker."""

    def __init__(self, hub: Hub, window: int = WINDOW) -> None:
        self.hub = hub
        self.window = window
        self.events: deque[Frame] = deque()
        self.floor = 0
        self.state: dict[str, Frame] = {}
        self.history = History("", hub, self._after, lambda: self.floor)
        self.loaded = False

    @property
    def seq(self) -> int:
        return self.hub.seq

    @property
    def epoch(self) -> str:
        return self.history.epoch

    def _after(self, since: int, limit: int) -> list[Frame]:
        seqs = [event["seq"] for event in self.events]
        start = bisect.bisect_right(seqs, since)
        return list(self.events)[start : start + limit]

    def _keep(self, event: Frame) -> None:
        if len(self.events) >= self.window:
            self.floor = self.events.popleft()["seq"]
        self.events.append(event)

    def continues(self, epoch: str, seq: int, floor: int) -> bool:
        """Whether a broker at (epoch, seq, floor) still holds every event after ours."""
        return self.loaded and epoch == self.epoch and floor <= self.seq <= seq

    def load(
        self,
        epoch: str,
        seq: int,
        floor: int,
        state: dict[str, Frame],
        events: list[Frame],
    ) -> bool:
        """Take an atomic read of the broker; True if it continued the mirror (connected
        clients got the missed events), False if the mirror was replaced (they resync)."""
        if self.continues(epoch, seq, floor):
            for event in events:
                if event["seq"] > self.hub.seq:
                    self._keep(event)
                    self.hub.publish(event)
            self.state = state
            return True
        reason = "epoch" if epoch != self.epoch else "expired"
        self.history.epoch = epoch
        self.events = deque(events[-self.window :])
        self.floor = floor if len(self.events) == len(events) else self.events[0]["seq"] - 1
        self.state = state
        was_loaded, self.loaded = self.loaded, True
        self.hub.restart(seq, reason if was_loaded else "epoch")
        return False

    def apply(self, prev: int, events: list[Frame], state: dict[str, Frame | None]) -> bool:
        """A live batch that follows ``prev``: publish it; False (nothing done) if ``prev``
        is not our seq, and the caller must load again."""
        if not self.loaded or prev != self.hub.seq:
            return False
        for event in events:
            if "seq" in event:
                self._keep(event)
                self.hub.publish(event)
            else:
                self.hub.broadcast(event)
        for key, value in state.items():
            if value is None:
                self.state.pop(key, None)
            else:
                self.state[key] = value
        return True


class InstancesView:
    """What ``/ws/instances`` needs of the registry, from a mirror."""

    def __init__(self, mirror: Mirror) -> None:
        self.mirror = mirror
        self.history = mirror.history

    def snapshot(self, include_archived: bool) -> dict[str, Any]:
        """The same frame as :meth:`Registry.snapshot`, current to the mirror's seq."""
        rows = sorted(self.mirror.state.values(), key=lambda s: (s["order"], s["item"]["id"]))
        items = [s["item"] for s in rows if include_archived or s["item"]["archived_at"] is None]
        return {
            "type": "snapshot",
            "instances": items,
            "include_archived": include_archived,
            "seq": self.mirror.seq,
            "epoch": self.mirror.epoch,
        }


class MessagesView:
    """What ``/ws/messages`` needs of messaging, from a mirror.

    The control plane's snapshot is the last 100 matching events of the whole
    retained table; a gateway's is the last 100 matching events of its window
    (the broker's retained history, 10,000 events by default): the same for
    every filter that matched anything within the window.
    """

    def __init__(self, mirror: Mirror) -> None:
        self.mirror = mirror
        self.history = mirror.history

    def snapshot(self, instance: str | None, correlation_id: str | None) -> dict[str, Any]:
        found: list[Frame] = []
        for event in reversed(self.mirror.events):
            if instance is not None and instance not in (event["from"], event["to"]):
                continue
            if correlation_id is not None and event["correlation_id"] != correlation_id:
                continue
            found.append(event)
            if len(found) == RECENT:
                break
        rows = [_as_row(event) for event in reversed(found)]
        return frames.messages_snapshot(rows, self.mirror.seq, self.mirror.epoch)


def _as_row(event: Frame) -> dict[str, Any]:
    """A ``message_event`` frame as the store row a snapshot is built from."""
    return {
        "message_id": event["message_id"],
        "event": event["event"],
        "from_instance": event["from"],
        "to_instance": event["to"],
        "message_type": event["message_type"],
        "correlation_id": event["correlation_id"],
        "detail": event["detail"],
        "timestamp": event["timestamp"],
    }
