"""Stream state under stress: a stuck client, and a snapshot of 10,000 instances."""

from __future__ import annotations

import json
import socket
import statistics
import time

from bench.harness import Server
from bench.wsraw import RawClient


def stuck_client(events: int = 10_000) -> dict:
    """One client stops reading while ``events`` are published: bounded RSS, then a resync."""
    server = Server("cpstream")
    try:
        time.sleep(0.5)
        before = server.rss
        stuck = RawClient(server.port, "/ws/instances", rcvbuf=4096)
        stuck.json()
        server.command(f"burst {events}")
        server.until("done")
        time.sleep(0.5)
        after = server.rss
        stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        resynced = False
        deadline = time.monotonic() + 60
        while not resynced and time.monotonic() < deadline:
            resynced = json.loads(stuck.frame(timeout=30)[0]).get("resync", False)
        stuck.close()
    finally:
        server.close()
    return {"rss_growth_mib": (after - before) / 1024, "resynced": resynced}


def snapshot_time(instances: int = 10_000, repeat: int = 5) -> dict:
    """Connect-to-snapshot time with ``instances`` instances."""
    server = Server("cpstream", "--instances", str(instances))
    times, size = [], 0
    try:
        for _ in range(repeat):
            started = time.monotonic()
            client = RawClient(server.port, "/ws/instances")
            payload, received = client.frame(timeout=30)
            times.append((received - started) * 1000)
            size = len(json.loads(payload)["instances"])
            client.close()
    finally:
        server.close()
    return {"median_ms": statistics.median(times), "instances": size}
