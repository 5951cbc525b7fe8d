"""Where the control plane's stream events go once committed: its own hub, and maybe further.

The control plane is the single writer. Each event is stamped with its ``seq``
(its row's id in the kind's append-only table) and ``timestamp`` before the
hub sees it. A broker decides what else happens to it:

* :class:`InProcessBroker` (the default): nothing. The hub *is* the broker, so
  ``make run`` costs exactly what it did, with no work added per event.
* :class:`cpstream.broker.redis.RedisPublisher`: the same hub, plus a relay of
  every event (and the state it leaves behind) to Redis, where gateways read it.

Both are services: the control plane starts them before it listens and stops
them after its streams are closed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.application.service import Service

from cpstream.domain.frames import Frame
from cpstream.domain.history import History
from cpstream.domain.hub import Event, Hub, encode

INSTANCES, MESSAGES = "instances", "messages"
TOPICS = (INSTANCES, MESSAGES)


@dataclass(frozen=True)
class Source:
    """What a remote broker needs of one stream kind to publish it, and to catch up.

    ``history`` reads past events from the database (to re-send what Redis missed);
    ``state`` is the mirrored state of one key after a change (``None``: gone) and
    ``keys`` every key, for a full reset; a kind without state (messages) has neither.
    """

    history: History
    state: Callable[[str], Frame | None] | None = None
    keys: Callable[[], list[str]] | None = None


class Broker(Protocol):
    """The control plane's side of a broker."""

    def hub(
        self, topic: str, clock: Any, seq: int, prepare: Callable[[bytes], Any], **options: Any
    ) -> Hub:
        """The hub the domain publishes ``topic``'s events to."""

    def bind(self, topic: str, source: Source) -> None:
        """Where ``topic``'s past and state are read from (once the domain exists)."""

    def health(self) -> dict[str, Any]:
        """What ``/api/health`` says about the broker."""

    def sessions(self, ended: Callable[[], list[str]]) -> Callable[[str], None]:
        """Where browser sessions ended by a logout are read from; returns what to call
        on each new logout (gateways must refuse those sessions too)."""

    def startService(self) -> None:  # noqa: N802 (Twisted API)
        """Connect (or do nothing)."""

    def stopService(self) -> Any:  # noqa: N802 (Twisted API)
        """Disconnect (or do nothing); a Deferred or None."""


class InProcessBroker(Service):
    """The default: the hub is the whole broker (one process, no relay)."""

    def hub(
        self, topic: str, clock: Any, seq: int, prepare: Callable[[bytes], Any], **options: Any
    ) -> Hub:
        return Hub(clock, prepare=prepare, seq=seq, **options)

    def bind(self, topic: str, source: Source) -> None:
        """Nothing to read: the hub's subscribers are all in this process."""

    def health(self) -> dict[str, Any]:
        return {"kind": "memory"}

    def sessions(self, ended: Callable[[], list[str]]) -> Callable[[str], None]:
        return _nothing


def _nothing(session_id: str) -> None:
    """No other process checks sessions."""


class RelayHub(Hub):
    """A hub that also hands every event it publishes to ``relay(topic, event, text)``,
    ``text`` being the one encoding its subscribers get too."""

    def __init__(
        self, topic: str, relay: Callable[[str, Event, bytes], None], *args: Any, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._topic = topic
        self._relay = relay

    def publish(self, event: Event, text: bytes | None = None) -> None:
        text = encode(event) if text is None else text
        super().publish(event, text)
        self._relay(self._topic, event, text)

    def broadcast(self, frame: Event, text: bytes | None = None) -> None:
        text = encode(frame) if text is None else text
        super().broadcast(frame, text)
        self._relay(self._topic, frame, text)
