"""Fan-out on ``/ws/instances``: latency at 20 events/s, saturation in a burst, memory."""

from __future__ import annotations

import subprocess
import sys
import time

from bench.harness import ROOT, Server, loadgen, pinned


def fanout(kind: str, clients: int, rate_events: int, burst_events: int) -> dict:
    server = Server(kind)
    try:
        lat = loadgen(server, clients, rate_events, f"rate {rate_events} 20", latency=True)
        sat = loadgen(server, clients, burst_events, f"burst {burst_events}", latency=False)
    finally:
        server.close()
    span = sat["last_receipt_after_start"]
    return {
        "p50_ms": lat["p50_ms"],
        "p99_ms": lat["p99_ms"],
        "max_ms": lat["max_ms"],
        "deliveries_per_s": sat["deliveries"] / span if span else 0.0,
        "delivered": sat["deliveries"],
        "expected": sat["expected"],
        "resyncs": sat["resyncs"],
        "loadgen_cpu_pct": 100 * sat["cpu_seconds"] / span if span else 0.0,
        "server_cpu_pct": 100 * sat["server_cpu_seconds"] / sat["server_wall"],
    }


def idle_memory(kind: str, clients: int = 1000) -> float:
    """Server RSS growth per idle connection (KiB), every client subscribed to its stream."""
    server = Server(kind)
    try:
        time.sleep(0.5)
        before = server.rss
        argv = [sys.executable, "-m", "bench.loadgen", "--port", str(server.port),
                "--clients", str(clients), "--hold"]  # fmt: skip
        gen = subprocess.Popen(
            pinned(1, argv), cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert gen.stdout.readline().strip() == "connected"
        time.sleep(1.0)
        after = server.rss
        gen.stdin.close()
        gen.wait(30)
    finally:
        server.close()
    return (after - before) / clients
