"""A stream kind's past, for resuming: its epoch, and the events after a seq.

Every hub event is a row of an append-only table whose id is the event's
``seq``, so a client that left at ``seq`` S can be sent exactly what it missed —
unless the database is another one (its ``epoch`` changed), S is ahead of the
database (``future``), or events after S were pruned or are too many to replay
(``expired``): then it gets a fresh snapshot instead.
"""

from __future__ import annotations

from collections.abc import Callable

from cpstream.domain.frames import Frame
from cpstream.domain.hub import Hub

REPLAY_LIMIT = 10_000


class History:
    """What :meth:`since` can replay of one stream kind."""

    def __init__(
        self,
        epoch: str,
        hub: Hub,
        after: Callable[[int, int], list[Frame]],
        pruned: Callable[[], int],
    ) -> None:
        self.epoch = epoch
        self._hub = hub
        self.after = after
        self.pruned = pruned

    @property
    def seq(self) -> int:
        """The last event's seq."""
        return self._hub.seq

    def since(self, since: int, epoch: str) -> list[Frame] | str:
        """Every event after ``since`` (oldest first), or why they cannot be replayed."""
        if epoch != self.epoch:
            return "epoch"
        if since > self._hub.seq:
            return "future"
        if since < self.pruned():
            return "expired"
        missed = self.after(since, REPLAY_LIMIT + 1)
        if len(missed) > REPLAY_LIMIT:
            return "expired"
        return missed
