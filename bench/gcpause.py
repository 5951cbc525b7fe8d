"""How long a full garbage collection stops a started control plane, with and without its
start-up objects frozen out of the collector (what the daemon does once it is up).

Each run is a fresh process: the real service (``makeService``, a real SQLite file)
is started; in the frozen variant :func:`cpstream.service.freeze_startup` runs then,
as the daemon runs it once ready. Afterwards come the objects of a working day:
``--instances`` instances created through the registry and ``--clients`` idle
``/ws/instances`` clients, held open by another process. With the reactor stopped
it times five full collections (``gc.collect()``: the pause the cyclic collector
puts on the reactor when it runs a full pass of its own). Each figure is the median
of ``--repeat`` runs, with the spread.

    python -m bench.gcpause [--instances 500] [--clients 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _full_collections(count: int = 5) -> float:
    """The median time of ``count`` full collections (ms)."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        gc.collect()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def hold(port: int, token: str, count: int) -> None:
    """The clients' process: ``count`` WebSocket clients on ``/ws/instances``, held open
    (never read after the handshake) until stdin closes."""
    held = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            f"GET /ws/instances HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {token}\r\n\r\n".encode()
        )
        held.append(sock)
    sys.stdin.read()


def one_run(instances: int, clients: int, frozen: bool) -> dict:
    """One run in this process (the reactor runs once per process)."""
    from twisted.internet import reactor

    from cpstream.service import freeze_startup
    from cpstream.tap import Options, makeService

    with tempfile.TemporaryDirectory() as folder:
        options = Options()
        options.parseOptions(
            ["--listen", "tcp:0:interface=127.0.0.1", "--data-dir", folder,
             "--max-connections", str(clients + 10), "--idle-timeout", "3600"]
        )  # fmt: skip
        service = makeService(options, reactor=reactor)
        service.startService()
        if frozen:
            freeze_startup()
        with service.store.transaction():
            for n in range(instances):
                service.registry.create(f"i{n:05d}", port=20000 + n)
        token = (Path(folder) / "operator.token").read_text().strip()
        port = service.web.port.getHost().port
        argv = [sys.executable, "-m", "bench.gcpause", "--hold", str(port), token, str(clients)]
        holder = subprocess.Popen(argv, stdin=subprocess.PIPE)
        deadline = time.monotonic() + 60
        result: dict = {}

        def measure() -> None:
            result.update(
                instances=instances,
                clients=sum(service.streams.by_endpoint().values()),
                tracked=len(gc.get_objects()),
                frozen=gc.get_freeze_count(),
                full_gc_ms=_full_collections(),
            )
            reactor.stop()

        def connected() -> None:
            if sum(service.streams.by_endpoint().values()) >= clients:
                reactor.callLater(0.5, measure)  # the snapshots written
            elif time.monotonic() > deadline:
                raise SystemExit("the clients never all connected")
            else:
                reactor.callLater(0.05, connected)

        reactor.callWhenRunning(connected)
        reactor.run()
        holder.stdin.close()
        holder.wait(timeout=30)
        gc.unfreeze()
    return result


def gc_pause(instances: int = 500, clients: int = 1000, repeat: int = 3) -> dict:
    """Per variant (``plain``, ``frozen``): the median of ``repeat`` runs (each a process
    of its own, the variants interleaved), with the spread."""
    runs: dict[str, list[dict]] = {"plain": [], "frozen": []}
    for _ in range(repeat):
        for variant, found in runs.items():
            argv = [sys.executable, "-m", "bench.gcpause", "--one", "--instances", str(instances)]
            argv += ["--clients", str(clients)] + (["--frozen"] if variant == "frozen" else [])
            done = subprocess.run(argv, capture_output=True, text=True, check=True)
            found.append(json.loads(done.stdout.strip().splitlines()[-1]))
    keys = ("tracked", "frozen", "full_gc_ms")
    return {
        "instances": instances,
        "clients": clients,
        **{
            variant: {
                "runs": found,
                "median": {k: statistics.median(r[k] for r in found) for k in keys},
                "min": {k: min(r[k] for r in found) for k in keys},
                "max": {k: max(r[k] for r in found) for k in keys},
            }
            for variant, found in runs.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--one", action="store_true", help="one run in this process (JSON)")
    parser.add_argument("--frozen", action="store_true", help="with --one: freeze at start")
    parser.add_argument(
        "--hold", nargs=3, metavar=("PORT", "TOKEN", "COUNT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.hold:
        hold(int(args.hold[0]), args.hold[1], int(args.hold[2]))
    elif args.one:
        print(json.dumps(one_run(args.instances, args.clients, args.frozen)))
    else:
        print(json.dumps(gc_pause(args.instances, args.clients, args.repeat), indent=2))


if __name__ == "__main__":
    main()
