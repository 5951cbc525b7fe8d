"""Fan-out on ``/ws/instances``: latency at 20 events/s, saturation in a burst, memory.

Both runs time every event (``--latency``): the 20 events/s run gives the latency of a
lone event, the burst gives the throughput, the latency under saturation and how many
events each ``read`` brings. The load generator's own CPU is kept for each run, to show
it is not the bottleneck.
"""

from __future__ import annotations

import subprocess
import time

from bench.harness import ROOT, Server, loadgen, loadgen_argv


def _cpu_pct(run: dict) -> float:
    """The load generator's CPU over its measured phase (%)."""
    return 100 * run["cpu_seconds"] / run["wall"] if run["wall"] else 0.0


def _complete(run: dict) -> bool:
    return (
        run["deliveries"] == run["expected"]
        and not run["timed_out"]
        and not run["lost_connections"]
    )


def fanout(kind: str, clients: int, rate_events: int, burst_events: int) -> dict:
    """One run of both measurements; every value is a number (``complete`` is 0 or 1)."""
    server = Server(kind)
    try:
        lat = loadgen(server, clients, rate_events, f"rate {rate_events} 20", latency=True)
        sat = loadgen(server, clients, burst_events, f"burst {burst_events}", latency=True)
    finally:
        server.close()
    span = sat["last_receipt_after_start"]
    return {
        "p50_ms": lat["p50_ms"],
        "p99_ms": lat["p99_ms"],
        "max_ms": lat["max_ms"],
        "rate_loadgen_cpu_pct": _cpu_pct(lat),
        "deliveries_per_s": sat["deliveries"] / span if span else 0.0,
        "events_per_read": sat["events_per_read"],
        "burst_p50_ms": sat.get("p50_ms", float("nan")),
        "burst_p99_ms": sat.get("p99_ms", float("nan")),
        "burst_max_ms": sat.get("max_ms", float("nan")),
        "burst_loadgen_cpu_pct": _cpu_pct(sat),
        "server_cpu_pct": 100 * sat["server_cpu_seconds"] / sat["server_wall"],
        "delivered": sat["deliveries"],
        "expected": sat["expected"],
        "resyncs": lat["resyncs"] + sat["resyncs"],
        "complete": int(_complete(lat) and _complete(sat)),
    }


def idle_memory(kind: str, clients: int = 1000) -> float:
    """Server RSS growth per idle connection (KiB), every client subscribed to its stream."""
    server = Server(kind)
    try:
        time.sleep(0.5)
        before = server.rss
        argv = loadgen_argv(server, clients, "--hold")
        gen = subprocess.Popen(
            argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert gen.stdout.readline().strip() == "connected"
        time.sleep(1.0)
        after = server.rss
        gen.stdin.close()
        gen.wait(30)
    finally:
        server.close()
    return (after - before) / clients
