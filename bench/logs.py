"""The log stream: append-to-frame latency (inotify, poll only) and a 50k lines/s flood."""

from __future__ import annotations

import json
import random
import tempfile
import threading
import time
from pathlib import Path

from bench.harness import Server
from tests.stats import percentile
from tests.support import instance_log


def _followed_log(env: dict | None = None) -> tuple[Server, Path]:
    """A cpstream server and the log file of its ``bench`` instance."""
    data_dir = tempfile.mkdtemp(prefix="cpstream-bench-")
    server = Server("cpstream", "--data-dir", data_dir, env=env)
    path = instance_log(Path(data_dir), "bench")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return server, path


def log_latency(poll_only: bool, lines: int = 200) -> dict:
    """Line appended -> its ``lines`` frame, with inotify or with the 500 ms poll alone."""
    server, path = _followed_log({"CPSTREAM_POLL_ONLY": "1"} if poll_only else None)
    latencies: list[float] = []
    try:
        client = server.client("/ws/instances/bench/logs?backlog=0")
        client.json()
        writer = threading.Thread(target=_probe_writer, args=(path, lines), daemon=True)
        writer.start()
        while len(latencies) < lines:
            payload, received = client.frame(timeout=10)
            for line in json.loads(payload).get("lines", []):
                latencies.append((received - float(line.split()[-1])) * 1000)
        writer.join()
        client.close()
    finally:
        server.close()
    return {
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": max(latencies),
    }


def _probe_writer(path: Path, lines: int) -> None:
    """Lines stamped with the monotonic time of their append, at irregular intervals."""
    rng = random.Random(7)
    for n in range(lines):
        with open(path, "a") as f:
            f.write(f"probe {n} {time.monotonic()!r}\n")
        time.sleep(rng.uniform(0.01, 0.09))


def log_flood(rate: int = 50_000, seconds: float = 2.0) -> dict:
    """A writer at ``rate`` lines/s: every line arrives once, in order; frames stay capped."""
    server, path = _followed_log()
    total = int(rate * seconds)
    seen: list[int] = []
    biggest = frames = 0
    rss_before = rss_peak = server.rss
    try:
        client = server.client("/ws/instances/bench/logs?backlog=0")
        client.json()
        writer = threading.Thread(target=_flood_writer, args=(path, rate, total), daemon=True)
        started = time.monotonic()
        writer.start()
        while len(seen) < total and time.monotonic() - started < 60:
            payload, _ = client.frame(timeout=20)
            frames += 1
            biggest = max(biggest, len(payload))
            seen += [int(line.split()[1]) for line in json.loads(payload).get("lines", [])]
            if frames % 10 == 0:
                rss_peak = max(rss_peak, server.rss)
        elapsed = time.monotonic() - started
        writer.join()
        client.close()
    finally:
        server.close()
    return {
        "lines": total,
        "received": len(seen),
        "lost": total - len(set(seen)),
        "duplicated": len(seen) - len(set(seen)),
        "in_order": seen == sorted(seen),
        "frames": frames,
        "largest_frame_kib": biggest / 1024,
        "rss_growth_mib": (rss_peak - rss_before) / 1024,
        "seconds": elapsed,
    }


def _flood_writer(path: Path, rate: int, total: int) -> None:
    """``rate`` numbered lines per second, written every 10 ms."""
    chunk = rate // 100
    started = time.monotonic()
    with open(path, "a") as f:
        for first in range(0, total, chunk):
            f.write("".join(f"flood {n} {'x' * 40}\n" for n in range(first, first + chunk)))
            f.flush()
            pause = started + (first + chunk) / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
