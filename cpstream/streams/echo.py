"""``/ws/echo`` (only with ``--echo``): every message back as it came, for conformance suites."""

from __future__ import annotations

from cpstream.streams.protocol import StreamFactory, StreamProtocol
from cpstream.streams.settings import ECHO


class EchoProtocol(StreamProtocol):
    """Everything but ``onMessage`` is the shared protocol: the same settings,
    connection cap, idle timeout and shutdown. While the client does not read
    the echoes, the echo stops reading from it, so memory stays bounded.
    """

    endpoint = ECHO

    def onMessage(self, payload: bytes, isBinary: bool) -> None:  # noqa: N802 (Autobahn API)
        self._touch()
        if self.live:
            self.sendMessage(payload, isBinary)

    def stream_paused(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:  # noqa: N802 (Twisted API)
        self.transport.resumeProducing()
        super().resumeProducing()


class EchoFactory(StreamFactory):
    protocol = EchoProtocol
