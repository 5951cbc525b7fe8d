"""The write path for broadcast frames: send at once when nothing is queued.

``transport.write`` only buffers: every delivery then costs an epoll
registration, a later ``doWrite``/``send`` and an unregistration. A stream
frame written to a TCP transport whose buffer is empty goes straight to the
socket instead; whatever the kernel does not take is handed to
``transport.write`` as usual, so ordering, buffering and producer pausing
(backpressure) stay Twisted's.

This reads attributes of ``twisted.internet.tcp.Server`` that are not public
(:data:`RELIED_ON`). The first transport of each type is checked for all of
them; a Twisted that no longer has one gets plain ``transport.write`` (slower,
never wrong), and ``tests/test_wire.py`` fails loudly.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp

RELIED_ON = (
    "socket",
    "connected",
    "disconnecting",
    "_writeDisconnected",
    "_tempDataLen",
    "dataBuffer",
    "offset",
)
_usable: dict[type, bool] = {}


def fast_path(transport: Any) -> bool:
    """Whether ``transport`` is a plain TCP connection with everything the fast path reads."""
    kind = type(transport)
    usable = _usable.get(kind)
    if usable is None:
        usable = _usable[kind] = kind is tcp.Server and all(
            hasattr(transport, name) for name in RELIED_ON
        )
    return usable


def idle(transport: Any) -> bool:
    """True when ``transport`` is a plain TCP connection with nothing waiting to be sent."""
    return (
        fast_path(transport)
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
