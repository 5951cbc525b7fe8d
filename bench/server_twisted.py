"""Reference (b): bare Twisted writing one pre-built frame per event with ``transport.write``.

Autobahn does the opening handshake; after that every event is one frame
built once and written to each transport: Twisted's own write-path floor.

    python -m bench.server_twisted
"""

from __future__ import annotations

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import PreparedMessage
from twisted.internet import reactor, stdio

from bench.commands import Commands
from bench.common import reference_frame

CLIENTS: set = set()


class Bare(WebSocketServerProtocol):
    def onOpen(self) -> None:  # noqa: N802 (Autobahn API)
        CLIENTS.add(self)
        self.sendMessage(b'{"type":"snapshot","instances":[],"seq":0}')

    def onClose(self, wasClean, code, reason) -> None:  # noqa: N802 (Autobahn API)
        CLIENTS.discard(self)


class Writer(Commands):
    """Each event: one frame built once, then ``transport.write`` to every client."""

    def emit(self) -> None:
        self.emitted += 1
        status = "running" if self.emitted % 2 else "unhealthy"
        frame = PreparedMessage(reference_frame(self.emitted, status), False, False, True)
        data = frame.payloadHybi
        for client in CLIENTS:
            client.transport.write(data)


def main() -> None:
    factory = WebSocketServerFactory(server=None)
    factory.protocol = Bare
    factory.setProtocolOptions(
        versions=[13], webStatus=False, failByDrop=False, autoPingInterval=0, tcpNoDelay=True
    )
    port = reactor.listenTCP(0, factory, interface="127.0.0.1", backlog=4096)
    commands = Writer(reactor)
    stdio.StandardIO(commands)
    commands.say(f"ready {port.getHost().port}")
    reactor.run()


if __name__ == "__main__":
    main()
