"""Latency of the streams as an operator sees it, against a real daemon.

* REST lifecycle call -> its delta on ``/ws/instances`` (POST create, 20 times)
* log line appended -> its ``lines`` frame on ``/ws/instances/NAME/logs`` (20 lines)

Prints median and worst of each, in milliseconds:

    .venv/bin/python -m bench.stream_latency [--count 20] [--json]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from twisted.internet import defer

from bench.common import probe_main
from tests.stats import percentile
from tests.support import Daemon, instance_log, post_json, sleep
from tests.wsclient import WSClient


async def measure(reactor, count: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        daemon = Daemon(Path(tmp))
        await daemon.start()
        try:
            instances = await WSClient.connect(daemon.url, "/ws/instances")
            await instances.frame()
            rest = []
            for n in range(count):
                started = time.perf_counter()
                d = defer.ensureDeferred(
                    post_json(
                        daemon.url + "/api/instances", {"name": f"lat-{n}", "port": 19000 + n}
                    )
                )
                frame = await instances.frame()
                rest.append((time.perf_counter() - started) * 1000)
                assert frame["type"] == "instance_created", frame
                await d
            log_path = instance_log(Path(tmp), "lat-0")
            log_path.touch()
            logs = await WSClient.connect(daemon.url, "/ws/instances/lat-0/logs")
            await logs.frame()
            appended = []
            for n in range(count):
                started = time.perf_counter()
                with open(log_path, "ab") as f:
                    f.write(b"latency probe %d\n" % n)
                frame = await logs.frame(timeout=5)
                appended.append((time.perf_counter() - started) * 1000)
                assert frame["lines"] == [f"latency probe {n}"], frame
                await sleep(0.05)
            await instances.close()
            await logs.close()
        finally:
            await daemon.stop()
    return {
        "rest_to_delta_ms": {"median": percentile(rest, 0.5), "worst": max(rest)},
        "append_to_lines_ms": {"median": percentile(appended, 0.5), "worst": max(appended)},
    }


def main() -> None:
    probe_main(__doc__, measure, 20)


if __name__ == "__main__":
    main()
