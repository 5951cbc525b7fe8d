"""``make bench``: every benchmark, with its references, in one table.

Servers run pinned to CPU 0 and the load generator to CPU 1 (``taskset``), so
they never compete; the load generator's own CPU is reported to show it is not
the bottleneck. Each figure is the median of ``--repeat`` runs.

    python -m bench.run [--quick] [--repeat 3] [--json bench/results/latest.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import cpu_seconds, rss_kib

ROOT = Path(__file__).resolve().parent.parent
SERVERS = {
    "cpstream": ["-m", "bench.server_cpstream"],
    "websockets": ["-m", "bench.server_websockets"],
    "twisted-write": ["-m", "bench.server_twisted"],
}


def pinned(cpu: int, argv: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(cpu), *argv]
    return argv


class Server:
    """A benchmark server process driven through its stdin commands."""

    def __init__(self, kind: str, *extra: str, env: dict | None = None) -> None:
        argv = pinned(0, [sys.executable, *SERVERS[kind], *extra])
        self.process = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **(env or {})},
        )
        words = self.read().split()
        assert words[0] == "ready", words
        self.port = int(words[1])

    def read(self) -> str:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("benchmark server exited")
        return line.strip()

    def command(self, text: str) -> None:
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def until(self, word: str) -> str:
        while True:
            line = self.read()
            if line.startswith(word):
                return line

    @property
    def rss(self) -> int:
        return rss_kib(self.process.pid)

    @property
    def cpu(self) -> float:
        return cpu_seconds(self.process.pid)

    def close(self) -> None:
        try:
            self.command("quit")
            self.process.wait(10)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()


def loadgen(server: Server, clients: int, events: int, command: str, latency: bool) -> dict:
    """Connect ``clients``, send ``command`` to the server, collect the load generator's result."""
    argv = [sys.executable, "-m", "bench.loadgen", "--port", str(server.port),
            "--clients", str(clients), "--events", str(events)]  # fmt: skip
    if latency:
        argv.append("--latency")
    gen = subprocess.Popen(pinned(1, argv), cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert gen.stdout.readline().strip() == "connected"
    cpu_before, started = server.cpu, time.monotonic()
    server.command(command)
    result = json.loads(gen.stdout.readline())
    gen.wait(30)
    server.until("done")
    result["server_cpu_seconds"] = server.cpu - cpu_before
    result["server_wall"] = time.monotonic() - started
    return result


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


def median_of(runs: list[dict]) -> dict:
    keys = runs[0].keys()
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="fewer events, one repeat")
    parser.add_argument("--only", help="run only benchmarks whose name contains this")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    args = parser.parse_args()
    repeat = 1 if args.quick else args.repeat
    rate_events, burst_events = (40, 500) if args.quick else (200, 2000)
    results: dict = {"machine": machine(), "fanout": {}}
    for clients in (100, 1000):
        for kind in SERVERS:
            name = f"fanout {kind} {clients}"
            if args.only and args.only not in name:
                continue
            runs = [fanout(kind, clients, rate_events, burst_events) for _ in range(repeat)]
            results["fanout"][f"{kind}@{clients}"] = median_of(runs)
            print(name, json.dumps(results["fanout"][f"{kind}@{clients}"]), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "date": time.strftime("%Y-%m-%d"),
        "tmp": tempfile.gettempdir(),
    }


if __name__ == "__main__":
    main()
