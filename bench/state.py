"""Stream state under stress: a stuck client, and a snapshot of 10,000 instances."""

from __future__ import annotations

import json
import socket
import time

from bench.harness import Server
from bench.wsraw import RawClient
from tests.stats import percentile
from tests.support import instance_log


def stuck_client(events: int = 10_000) -> dict:
    """One client stops reading while ``events`` are published: bounded RSS, then a resync."""
    server = Server("cpstream")
    try:
        time.sleep(0.5)
        before = server.rss
        stuck = server.client("/ws/instances", rcvbuf=4096)
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
            client = server.client("/ws/instances")
            payload, received = client.frame(timeout=30)
            times.append((received - started) * 1000)
            size = len(json.loads(payload)["instances"])
            client.close()
    finally:
        server.close()
    return {"median_ms": percentile(times, 0.5), "instances": size}


def _frames_until(client: RawClient, count: int, timeout: float = 30) -> float:
    """Read ``count`` frames; the monotonic time the last one was complete."""
    received = 0.0
    for _ in range(count):
        _, received = client.frame(timeout=timeout)
    return received


def resume_time(instances: int = 10_000, missed: int = 10, repeat: int = 5) -> dict:
    """Reconnect-to-live with ``instances`` instances after ``missed`` events: resuming
    (``since``/``epoch``: a resumed frame and the missed events) against a full snapshot."""
    server = Server("cpstream", "--instances", str(instances))
    resumed, fresh = [], []
    try:
        for _ in range(repeat):
            client = server.client("/ws/instances")
            snapshot = client.json(timeout=30)
            client.close()
            server.command(f"burst {missed}")
            server.until("done")
            query = f"since={snapshot['seq']}&epoch={snapshot['epoch']}"
            started = time.monotonic()
            client = server.client(f"/ws/instances?{query}")
            resumed.append((_frames_until(client, 1 + missed) - started) * 1000)
            client.close()
            started = time.monotonic()
            client = server.client("/ws/instances")
            fresh.append((_frames_until(client, 1) - started) * 1000)
            client.close()
    finally:
        server.close()
    return {
        "instances": instances,
        "missed": missed,
        "resume_ms": percentile(resumed, 0.5),
        "snapshot_ms": percentile(fresh, 0.5),
    }


def backlog_time(line_kib: int = 10, size_mib: int = 16, repeat: int = 5) -> dict:
    """Connect -> backlog of 1,000 lines from a 16 MiB log of 10 KiB lines."""
    import tempfile
    from pathlib import Path

    data_dir = Path(tempfile.mkdtemp(prefix="cpstream-bench-"))
    server = Server("cpstream", "--data-dir", str(data_dir))
    path = instance_log(data_dir, "bench")
    line = b"x" * (line_kib * 1024 - 1) + b"\n"
    with open(path, "wb") as f:
        for _ in range(size_mib * 1024 // line_kib):
            f.write(line)
    times = []
    try:
        for _ in range(repeat):
            started = time.monotonic()
            client = server.client("/ws/instances/bench/logs?backlog=1000")
            payload, received = client.frame(timeout=60)
            times.append((received - started) * 1000)
            assert json.loads(payload)["count"] == 1000
            client.close()
    finally:
        server.close()
    return {"median_ms": percentile(times, 0.5), "log_mib": size_mib, "line_kib": line_kib}
