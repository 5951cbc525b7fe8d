"""The write path for broadcast frames: send at once when nothing is queued.

``transport.write`` only buffers: every delivery then costs an epoll
registration, a later ``doWrite``/``send`` and an unregistration. A stream
frame written to a TCP transport whose buffer is empty goes straight to the
socket instead; whatever the kernel does not take is handed to
``transport.write`` as usual, so ordering, buffering and producer pausing
(backpressure) stay Twisted's.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp


def idle(transport: Any) -> bool:
    """True when ``transport`` is a plain TCP connection with nothing waiting to be sent."""
    return (
        type(transport) is tcp.Server
        and transport.connected
        and not transport.disconnecting
        and not transport._writeDisconnected
        and not transport._tempDataLen
        and transport.offset == len(transport.dataBuffer)
    )


def send(transport: Any, data: bytes) -> None:
    """Write ``data`` to ``transport``, to the socket directly when its buffer is empty."""
    if idle(transport):
        try:
            sent = transport.socket.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            sent = 0  # the transport notices the broken connection on its own write
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)
