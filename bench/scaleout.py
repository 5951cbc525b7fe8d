"""Scale-out: one control plane and one or two gateways on Redis vs the single process
(``make bench`` runs it at 1,000 and 2,000 clients).

The control plane (``bench.server_cpstream --broker redis://...``) emits the same
status changes as the single-process benchmark; clients connect to the gateways
only, split evenly (one C load generator per gateway, all pinned to CPU 1; the
control plane, the gateways and Redis share CPU 0). Latency is each frame's own
``timestamp`` (stamped at the control plane's commit) to its arrival, so it
includes the broker hop. With two gateways, p50 and p99 are the worse of the two
generators' (each measured half the clients). Figures: deliveries/s in a burst,
p50/p99 at 20 ev/s, CPU of each process, deliveries per gateway CPU-second, and a
gateway's RSS per idle connection.

    python -m bench.scaleout [--clients 1000] [--gateways 1 2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from bench.common import cpu_seconds, rss_kib
from bench.harness import ROOT, Server, loadgen_argv, pinned
from bench.messages import Redis, stop

LISTENING = re.compile(r"cpstream listening on http://127\.0\.0\.1:(\d+)")


class Gateway:
    """``cpstream gateway`` pinned to CPU 0, its log in a file (never a full pipe)."""

    def __init__(self, redis_url: str, control_port: int, token: str) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="cpstream-gw-", suffix=".log", delete=False)
        argv = [sys.executable, "-m", "cpstream.cli", "gateway", "--broker", redis_url,
                "--listen", "tcp:0:interface=127.0.0.1", "--control",
                f"http://127.0.0.1:{control_port}", "--max-connections", "20000",
                "--idle-timeout", "3600", "--no-access-log"]  # fmt: skip
        self.process = subprocess.Popen(
            pinned(0, argv),
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "CPSTREAM_TOKEN": token},
        )
        self.token = token
        deadline = time.monotonic() + 30
        while (found := LISTENING.search(Path(self.log.name).read_text())) is None:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(Path(self.log.name).read_text()[-2000:])
            time.sleep(0.05)
        self.port = int(found.group(1))
        while b"200" not in _health(self.port):
            if time.monotonic() > deadline:
                raise RuntimeError("gateway never loaded")
            time.sleep(0.05)

    @property
    def cpu(self) -> float:
        return cpu_seconds(self.process.pid)

    @property
    def rss(self) -> int:
        return rss_kib(self.process.pid)

    def close(self) -> None:
        stop(self.process)
        os.unlink(self.log.name)


def _health(port: int) -> bytes:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET /api/health HTTP/1.0\r\nHost: 127.0.0.1:%d\r\n\r\n" % port)
            return s.recv(100)
    except OSError:
        return b""


def _generators(gateways: list[Gateway], clients: int, *extra: str) -> list[subprocess.Popen]:
    """One load generator per gateway, the clients split evenly, all connected."""
    gens = []
    for index, gateway in enumerate(gateways):
        share = clients // len(gateways) + (index < clients % len(gateways))
        target = SimpleNamespace(port=gateway.port, token=gateway.token)
        argv = loadgen_argv(target, share, *extra)
        gens.append(
            subprocess.Popen(
                argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
        )
    for gen in gens:
        assert gen.stdout.readline().strip() == "connected"
    return gens


def _run(server: Server, gateways: list[Gateway], redis: Redis, clients: int, events: int,
         command: str) -> dict:  # fmt: skip
    gens = _generators(gateways, clients, "--events", str(events), "--latency")
    before = [server.cpu, *(g.cpu for g in gateways), cpu_seconds(redis.process.pid)]
    started = time.monotonic()
    server.command(command)
    results = [json.loads(gen.stdout.readline()) for gen in gens]
    for gen in gens:
        gen.wait(30)
    server.until("done")
    wall = time.monotonic() - started
    after = [server.cpu, *(g.cpu for g in gateways), cpu_seconds(redis.process.pid)]
    spent = [b - a for a, b in zip(before, after, strict=True)]
    deliveries = sum(r["deliveries"] for r in results)
    span = max(r["last_receipt_after_start"] for r in results)
    gateway_cpu = sum(spent[1:-1])
    return {
        "deliveries": deliveries,
        "expected": sum(r["expected"] for r in results),
        "deliveries_per_s": deliveries / span if span else 0.0,
        "p50_ms": max(r.get("p50_ms", float("nan")) for r in results),
        "p99_ms": max(r.get("p99_ms", float("nan")) for r in results),
        "control_cpu_pct": 100 * spent[0] / wall,
        "gateway_cpu_pct": [100 * s / wall for s in spent[1:-1]],
        "redis_cpu_pct": 100 * spent[-1] / wall,
        "deliveries_per_gateway_cpu_s": deliveries / gateway_cpu if gateway_cpu else 0.0,
        "loadgen_cpu_pct": max(100 * r["cpu_seconds"] / r["wall"] for r in results if r["wall"]),
        "resyncs": sum(r["resyncs"] for r in results),
    }


def scaleout(clients: int, gateways: int, rate_events: int, burst_events: int) -> dict:
    """One run: latency at 20 ev/s, a burst, and a gateway's RSS per idle connection."""
    redis = Redis()
    url = f"redis://127.0.0.1:{redis.port}/0"
    server = Server("cpstream", "--broker", url)
    started: list[Gateway] = []
    try:
        started += [Gateway(url, server.port, server.token) for _ in range(gateways)]
        rate = _run(server, started, redis, clients, rate_events, f"rate {rate_events} 20")
        burst = _run(server, started, redis, clients, burst_events, f"burst {burst_events}")
        before = started[0].rss
        hold = _generators(started[:1], clients, "--hold")
        time.sleep(1.0)
        memory = (started[0].rss - before) / clients
        for gen in hold:
            gen.stdin.close()
            gen.wait(30)
    finally:
        for gateway in started:
            gateway.close()
        server.close()
        redis.close()
    return {
        "p50_ms": rate["p50_ms"],
        "p99_ms": rate["p99_ms"],
        "deliveries_per_s": burst["deliveries_per_s"],
        "complete": int(burst["deliveries"] == burst["expected"]),
        "gateway_cpu_pct": sum(burst["gateway_cpu_pct"]) / gateways,
        "control_cpu_pct": burst["control_cpu_pct"],
        "redis_cpu_pct": burst["redis_cpu_pct"],
        "deliveries_per_gateway_cpu_s": burst["deliveries_per_gateway_cpu_s"],
        "loadgen_cpu_pct": max(rate["loadgen_cpu_pct"], burst["loadgen_cpu_pct"]),
        "gateway_kib_per_conn": memory,
        "resyncs": rate["resyncs"] + burst["resyncs"],
    }


def table(single: dict | None, scaled: dict[int, dict], clients: int) -> str:
    """Single process vs one and two gateways, one Markdown table."""
    heads = (["single process"] if single else []) + [f"{n} gateway(s)" for n in scaled]
    rows = ["| @" + str(clients) + " clients | " + " | ".join(heads) + " |",
            "|---" * (len(heads) + 1) + "|"]  # fmt: skip

    def row(label: str, single_value: str, values: list[str]) -> None:
        cells = ([single_value] if single else []) + values
        rows.append(f"| {label} | " + " | ".join(cells) + " |")

    runs = list(scaled.values())
    s = single or {}
    row("p50 / p99 latency, 20 ev/s (ms)",
        f"{s.get('p50_ms', 0):.2f} / {s.get('p99_ms', 0):.2f}",
        [f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f}" for r in runs])  # fmt: skip
    row("burst: deliveries/s", f"{s.get('deliveries_per_s', 0) / 1000:,.0f}k",
        [f"{r['deliveries_per_s'] / 1000:,.0f}k" + ("" if r["complete"] else " INCOMPLETE")
         for r in runs])  # fmt: skip
    row("burst: CPU % control plane / a gateway (mean) / Redis",
        f"{s.get('server_cpu_pct', 0):.0f} / - / -",
        [f"{r['control_cpu_pct']:.0f} / {r['gateway_cpu_pct']:.0f} / {r['redis_cpu_pct']:.0f}"
         for r in runs])  # fmt: skip
    row(
        "burst: deliveries per gateway CPU-second",
        "",
        [f"{r['deliveries_per_gateway_cpu_s'] / 1000:,.0f}k" for r in runs],
    )
    row(
        "gateway RSS per idle connection (KiB)",
        "",
        [f"{r['gateway_kib_per_conn']:.1f}" for r in runs],
    )
    row("load generator CPU (%, highest)", "", [f"{r['loadgen_cpu_pct']:.0f}" for r in runs])
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--gateways", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rate, burst = (40, 250) if args.quick else (100, 1000)
    scaled = {}
    for count in args.gateways:
        scaled[count] = scaleout(args.clients, count, rate, burst)
        print(f"scaleout {count} gateway(s) @{args.clients}", json.dumps(scaled[count]), flush=True)
    print(table(None, scaled, args.clients))


if __name__ == "__main__":
    main()
