"""The cpstream daemon, built by the real ``makeService``, with a benchmark emitter.

Events go through the real publish path: ``Registry.set_status`` (the code the
REST API and the supervisor use) stores the change and publishes it to the
hub, which fans it out to every ``/ws/instances`` client. Latency is measured
from each frame's own ``timestamp``, stamped at publish. Once set up it freezes its
start-up objects out of the garbage collector, as the daemon does once ready.

    python -m bench.server_cpstream [--instances N] [--broker memory|redis://HOST:PORT/DB]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from twisted.internet import reactor, stdio

from bench.commands import Commands
from cpstream.service import freeze_startup
from cpstream.tap import Options, makeService


class StatusFlipper(Commands):
    """Each event is one status change through the registry: the real publish path."""

    def __init__(self, reactor, registry, instance) -> None:
        super().__init__(reactor)
        self.registry = registry
        self.instance = instance

    def emit(self) -> None:
        self.emitted += 1
        status = "running" if self.emitted % 2 else "unhealthy"
        self.registry.set_status(self.instance, status, pid=4242)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=0, help="extra instances to create")
    parser.add_argument("--data-dir")
    parser.add_argument("--broker", default="memory", help="memory or redis://HOST:PORT/DB")
    args = parser.parse_args()
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="cpstream-bench-")
    options = Options()
    options.parseOptions(
        ["--listen", "tcp:0:interface=127.0.0.1", "--data-dir", data_dir,
         "--max-connections", "20000", "--idle-timeout", "3600", "--broker", args.broker]
    )  # fmt: skip
    service = makeService(options, reactor=reactor)
    service.startService()
    registry = service.registry
    bench = registry.find("bench") or registry.create("bench", health="process", port=19999)
    if args.instances:
        with service.store.transaction():
            for n in range(args.instances - len(registry.active())):
                registry.create(f"i{n:05d}", port=20000 + n, health="process")
    commands = StatusFlipper(reactor, registry, bench)
    freeze_startup()
    stdio.StandardIO(commands)
    token = (Path(data_dir) / "operator.token").read_text().strip()
    commands.say(f"ready {service.web.port.getHost().port} {token}")
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()


if __name__ == "__main__":
    main()
