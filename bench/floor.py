"""The kernel's floor for one fan-out: plain ``send`` of one frame to N loopback sockets.

No framework and no Python per client beyond the call itself: this is what one
event costs at best on this machine, the bound under every server's latency.
A reader process pinned to the other CPU drains all sockets, as the load
generator does.
"""

from __future__ import annotations

import os
import select
import socket
import time

from tests.stats import percentile

FRAME = b"\x81\x7e\x00\xc8" + b"x" * 200


def send_floor(clients: int = 1000, trials: int = 20) -> dict:
    """Median and best milliseconds to send one ~200-byte frame to ``clients`` sockets."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(clients)
    port = listener.getsockname()[1]
    reader = os.fork()
    if reader == 0:
        _drain(port, clients)
    os.sched_setaffinity(0, {0})
    servers = []
    for _ in range(clients):
        connection, _ = listener.accept()
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection.setblocking(False)
        servers.append(connection)
    times = []
    for _ in range(trials):
        time.sleep(0.05)
        started = time.perf_counter()
        for connection in servers:
            connection.send(FRAME)
        times.append((time.perf_counter() - started) * 1000)
    for connection in servers:
        connection.close()
    listener.close()
    os.waitpid(reader, 0)
    return {"median_ms": percentile(times, 0.5), "best_ms": min(times)}


def _drain(port: int, clients: int) -> None:
    """The reader: connect every client, read until all of them are closed."""
    try:
        os.sched_setaffinity(0, {1 % (os.cpu_count() or 1)})
        poller = select.epoll()
        open_fds = set()
        sockets = []
        for _ in range(clients):
            client = socket.create_connection(("127.0.0.1", port))
            client.setblocking(False)
            sockets.append(client)
            poller.register(client.fileno(), select.EPOLLIN)
            open_fds.add(client.fileno())
        while open_fds:
            for fd, _ in poller.poll(1.0):
                try:
                    if not os.read(fd, 65536):
                        poller.unregister(fd)
                        open_fds.discard(fd)
                except BlockingIOError:
                    pass
    finally:
        os._exit(0)


if __name__ == "__main__":
    import json

    print(json.dumps(send_floor()))
