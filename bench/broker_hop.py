"""The broker hop: what a gateway adds to a stream's latency, against real processes.

A Redis, a control plane with ``--broker`` and one gateway on loopback. For each
of ``--count`` REST creates, one client on the control plane's ``/ws/instances``
and one on the gateway's receive the same delta: the hop is the difference of
their arrival times. For logs, a line appended to a log file reaches a viewer
on the control plane and one on the gateway (relayed): the relay's cost is the
difference. Prints p50 and worst, in milliseconds:

    .venv/bin/python -m bench.broker_hop [--count 50] [--json]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from twisted.internet import defer

from bench.common import probe_main
from tests.redis import GatewayProcess, RedisServer, redis_binary
from tests.stats import percentile
from tests.support import Daemon, instance_log, post_json, sleep
from tests.wsclient import WSClient


def _stamp(d: defer.Deferred) -> defer.Deferred:
    """The frame and the moment it arrived."""
    return defer.ensureDeferred(d).addCallback(lambda frame: (time.perf_counter(), frame))


async def measure(reactor, count: int) -> dict:
    binary = redis_binary()
    assert binary, "no redis-server (pip install '.[test]')"
    redis = RedisServer(binary).start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cp = Daemon(Path(tmp), "--broker", redis.url)
            await cp.start()
            gateway = GatewayProcess(Path(tmp), redis.url, cp.url)
            await gateway.start()
            try:
                return await _measure(cp, gateway, Path(tmp), count)
            except Exception:
                print(gateway.log_text()[-3000:])
                print(cp.log_text()[-3000:])
                raise
            finally:
                await gateway.stop()
                await cp.stop()
    finally:
        redis.close()


async def _measure(cp: Daemon, gateway: GatewayProcess, data: Path, count: int) -> dict:
    direct = await WSClient.connect(cp.url, "/ws/instances")
    relayed = await WSClient.connect(gateway.url, "/ws/instances")
    await direct.frame()
    await relayed.frame()
    hops, totals = [], []
    for n in range(count):
        arrivals = defer.gatherResults([_stamp(direct.frame()), _stamp(relayed.frame())])
        started = time.perf_counter()
        await post_json(cp.url + "/api/instances", {"name": f"hop-{n}", "port": 19000 + n})
        (at_cp, frame_cp), (at_gw, frame_gw) = await arrivals
        assert frame_cp == frame_gw and frame_cp["type"] == "instance_created"
        hops.append((at_gw - at_cp) * 1000)
        totals.append((at_gw - started) * 1000)
        await sleep(0.02)
    log = instance_log(data, "hop-0")
    log.touch()
    direct_logs = await WSClient.connect(cp.url, "/ws/instances/hop-0/logs")
    relayed_logs = await WSClient.connect(gateway.url, "/ws/instances/hop-0/logs")
    await direct_logs.frame()
    await relayed_logs.frame()
    relays = []
    for n in range(count):
        arrivals = defer.gatherResults([_stamp(direct_logs.frame()), _stamp(relayed_logs.frame())])
        with open(log, "ab") as f:
            f.write(b"probe %d\n" % n)
        (at_cp, frame_cp), (at_gw, frame_gw) = await arrivals
        assert frame_cp == frame_gw
        relays.append((at_gw - at_cp) * 1000)
        await sleep(0.05)
    for client in (direct, relayed, direct_logs, relayed_logs):
        await client.close()
    return {
        "broker_hop_ms": {"p50": percentile(hops, 0.5), "worst": max(hops)},
        "rest_to_gateway_delta_ms": {"p50": percentile(totals, 0.5), "worst": max(totals)},
        "log_relay_ms": {"p50": percentile(relays, 0.5), "worst": max(relays)},
    }


def main() -> None:
    probe_main(__doc__, measure, 50)


if __name__ == "__main__":
    main()
