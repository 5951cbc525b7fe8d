"""The stdin command loop shared by the two Twisted benchmark servers (see common.py)."""

from __future__ import annotations

import sys

from twisted.internet import task
from twisted.protocols.basic import LineReceiver

from bench.common import parse_command, rss_kib


class Commands(LineReceiver):
    """``rate``, ``burst``, ``rss`` and ``quit``; subclasses say how to emit one event."""

    delimiter = b"\n"

    def __init__(self, reactor) -> None:
        self.reactor = reactor
        self.emitted = 0

    def emit(self) -> None:
        raise NotImplementedError

    def lineReceived(self, line: bytes) -> None:  # noqa: N802 (Twisted API)
        command, args = parse_command(line.decode())
        if command == "rate":
            self.rate(*args)
        elif command == "burst":
            self.burst(args[0])
        elif command == "rss":
            self.say(f"rss {rss_kib()}")
        elif command == "quit":
            self.reactor.stop()

    def rate(self, count: int, hz: int) -> None:
        sent = 0

        def tick() -> None:
            nonlocal sent
            self.emit()
            sent += 1
            if sent >= count:
                loop.stop()

        loop = task.LoopingCall(tick)
        loop.clock = self.reactor
        loop.start(1.0 / hz, now=True).addCallback(lambda _: self.say("done"))

    def burst(self, remaining: int) -> None:
        """One event per reactor turn, as fast as the reactor goes."""
        if remaining <= 0:
            self.say("done")
            return
        self.emit()
        self.reactor.callLater(0, self.burst, remaining - 1)

    def say(self, text: str) -> None:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
