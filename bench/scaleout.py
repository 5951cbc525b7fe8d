"""Scale-out: one control plane and one or two stream gateways on Redis, against the
single process, at 1,000 and 2,000 ``/ws/instances`` clients.

Every server process (the control plane, Redis, the gateways) runs pinned to CPU 0
and the C load generator to CPU 1, as in the fan-out benchmark: on this 2-core
machine the gateways share one core, so two gateways cannot deliver more than one;
what they show is the cost per gateway CPU-second, from which N cores follow. One
generator spreads its clients over the gateways' ports (client i on port i mod N).
Events are status changes through ``Registry.set_status`` in the control plane (its
benchmark server, ``bench.server_cpstream --broker``); latency runs from each frame's
``timestamp`` (stamped in the control plane, before the broker hop) to the read.

The broker hop is measured apart, with 10 clients so that fan-out costs nothing: p50
at 20 events/s through one gateway minus p50 from the control plane itself.

    python -m bench.scaleout [--repeat 3] [--clients 1000,2000] [--quick]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import time

from bench.fanout import _complete, _cpu_pct
from bench.harness import ROOT, Server, compiled_loadgen, loadgen_kind, pinned
from bench.messages import Redis, free_port, stop
from tests.stats import percentile

OPEN = {"max-connections": "20000", "idle-timeout": "3600"}


class Gateway:
    """A ``twistd cpstream-gateway`` process on a free loopback port, pinned to CPU 0."""

    def __init__(self, broker: str, token: str, control: str) -> None:
        self.port = free_port()
        argv = [sys.executable, "-m", "twisted", "cpstream-gateway", "--broker", broker,
                "--listen", f"tcp:{self.port}:interface=127.0.0.1", "--control", control,
                "--no-access-log", *(f"--{k}={v}" for k, v in OPEN.items())]  # fmt: skip
        self.process = subprocess.Popen(
            pinned(0, argv),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "CPSTREAM_TOKEN": token},
        )
        deadline = time.monotonic() + 30
        while not _loaded(self.port):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("cpstream-gateway did not load from Redis in 30 s")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.process.pid

    def close(self) -> None:
        stop(self.process)


def _loaded(port: int) -> bool:
    """The gateway answers its health check with 200: it has loaded from Redis (until
    then it refuses stream upgrades with 503)."""
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        connection.request("GET", "/api/health")
        status = connection.getresponse().status
        connection.close()
    except OSError:
        return False
    return status == 200


def _cpu(pid: int) -> float:
    from bench.common import cpu_seconds

    return cpu_seconds(pid)


def _rss(pid: int) -> int:
    from bench.common import rss_kib

    return rss_kib(pid)


def _generate(ports: list[int], token: str, clients: int, events: int) -> subprocess.Popen:
    if loadgen_kind() != "c":
        raise RuntimeError("the scale-out benchmark needs the C load generator (several ports)")
    argv = [str(compiled_loadgen()), "--port", ",".join(map(str, ports)), "--clients",
            str(clients), "--events", str(events), "--latency", "--token", token]  # fmt: skip
    gen = subprocess.Popen(pinned(1, argv), cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert gen.stdout.readline().strip() == "connected"
    return gen


def _measure(server: Server, pids: dict[str, int], ports: list[int], clients: int,
             events: int, command: str) -> dict:  # fmt: skip
    """Connect, send ``command`` to the control plane, read the result and every CPU."""
    gen = _generate(ports, server.token, clients, events)
    before, started = {k: _cpu(p) for k, p in pids.items()}, time.monotonic()
    server.command(command)
    result = json.loads(gen.stdout.readline())
    gen.wait(30)
    server.until("done")
    wall = time.monotonic() - started
    result["cpu_s"] = {k: _cpu(p) - before[k] for k, p in pids.items()}
    result["wall_s"] = wall
    return result


def scaleout(gateways: int, clients: int, rate_events: int, burst_events: int) -> dict:
    """One run: a control plane on Redis with ``gateways`` gateways (0: the single
    process, no Redis), ``clients`` spread over them."""
    redis = Redis() if gateways else None
    extra = ("--broker", f"redis://127.0.0.1:{redis.port}/0") if redis else ()
    server = Server("cpstream", *extra)
    gws: list[Gateway] = []
    try:
        if redis:
            control = f"http://127.0.0.1:{server.port}"
            gws = [Gateway(extra[1], server.token, control) for _ in range(gateways)]
        ports = [g.port for g in gws] or [server.port]
        pids = {"control": server.process.pid, **{f"gw{i}": g.pid for i, g in enumerate(gws)}}
        if redis:
            pids["redis"] = redis.pid
        rss_before = {k: _rss(p) for k, p in pids.items()}
        lat = _measure(server, pids, ports, clients, rate_events, f"rate {rate_events} 20")
        sat = _measure(server, pids, ports, clients, burst_events, f"burst {burst_events}")
        hop = _measure(server, pids, ports[:1], 10, rate_events, f"rate {rate_events} 20")
        gen = _generate(ports, server.token, clients, 0)
        time.sleep(1.0)
        rss_after = {k: _rss(p) for k, p in pids.items()}
        gen.kill()
        gen.wait()
    finally:
        for gateway in gws:
            gateway.close()
        server.close()
        if redis:
            redis.close()
    span = sat["last_receipt_after_start"]
    serving = [k for k in pids if k.startswith("gw")] or ["control"]
    serving_cpu = sum(sat["cpu_s"][k] for k in serving)
    return {
        "p50_ms": lat["p50_ms"],
        "p99_ms": lat["p99_ms"],
        "rate_loadgen_cpu_pct": _cpu_pct(lat),
        "deliveries_per_s": sat["deliveries"] / span if span else 0.0,
        "burst_loadgen_cpu_pct": _cpu_pct(sat),
        "deliveries_per_serving_cpu_s": sat["deliveries"] / serving_cpu if serving_cpu else 0.0,
        "serving_cpu_pct": 100 * serving_cpu / sat["wall_s"] / len(serving),
        "control_cpu_pct": 100 * sat["cpu_s"]["control"] / sat["wall_s"],
        "redis_cpu_pct": 100 * sat["cpu_s"].get("redis", 0.0) / sat["wall_s"],
        "hop_p50_ms": hop["p50_ms"],
        "kib_per_conn": sum(rss_after[k] - rss_before[k] for k in serving) / clients,
        "complete": int(_complete(lat) and _complete(sat) and _complete(hop)),
    }


def run_scaleout(repeat: int, clients_list: tuple[int, ...], rate: int, burst: int) -> dict:
    """Every layout at every client count, ``repeat`` times: median, min and max per figure."""
    results: dict = {}
    for clients in clients_list:
        for gateways in (0, 1, 2):
            runs = []
            for _ in range(repeat):
                runs.append(scaleout(gateways, clients, rate, burst))
                print(f"scaleout {gateways} gateways @{clients}", json.dumps(runs[-1]), flush=True)
            results[f"{gateways}@{clients}"] = {
                "median": {k: percentile([r[k] for r in runs], 0.5) for k in runs[0]},
                "min": {k: min(r[k] for r in runs) for k in runs[0]},
                "max": {k: max(r[k] for r in runs) for k in runs[0]},
                "runs": runs,
            }
    return results


ROWS = (
    ("deliveries_per_s", "burst: deliveries/s", ",.0f"),
    ("deliveries_per_serving_cpu_s", "burst: deliveries per serving CPU-second", ",.0f"),
    ("p50_ms", "p50 latency, 20 ev/s (ms)", ".2f"),
    ("p99_ms", "p99 latency, 20 ev/s (ms)", ".2f"),
    ("hop_p50_ms", "p50 with 10 clients, 20 ev/s (ms)", ".2f"),
    ("serving_cpu_pct", "burst: CPU per serving process (%)", ".0f"),
    ("control_cpu_pct", "burst: control plane CPU (%)", ".0f"),
    ("redis_cpu_pct", "burst: Redis CPU (%)", ".0f"),
    ("kib_per_conn", "RSS per connection (KiB)", ".1f"),
    ("burst_loadgen_cpu_pct", "burst: load generator CPU (%)", ".0f"),
)
LAYOUTS = ((0, "single process"), (1, "control + 1 gateway"), (2, "control + 2 gateways"))


def table(results: dict) -> str:
    """One Markdown table: a column per layout and client count."""
    columns = [(g, c) for c in sorted({int(k.split("@")[1]) for k in results}) for g, _ in LAYOUTS]
    columns = [(g, c) for g, c in columns if f"{g}@{c}" in results]
    names = dict(LAYOUTS)
    head = "| figure | " + " | ".join(f"{names[g]} @{c}" for g, c in columns) + " |"
    rows = [head, "|---" * (len(columns) + 1) + "|"]
    for key, label, fmt in ROWS:
        cells = []
        for g, c in columns:
            summary = results[f"{g}@{c}"]
            cell = format(summary["median"][key], fmt)
            if len(summary["runs"]) > 1:
                cell += f" ({format(summary['min'][key], fmt)}–{format(summary['max'][key], fmt)})"
            if key == "deliveries_per_s" and not summary["min"]["complete"]:
                cell += " INCOMPLETE"
            cells.append(cell)
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    single = [results[k]["median"]["hop_p50_ms"] for k in results if k.startswith("0@")]
    one = [results[k]["median"]["hop_p50_ms"] for k in results if k.startswith("1@")]
    if single and one:
        rows.append(
            f"\nBroker hop (p50 with 10 clients, one gateway minus the single process):"
            f" {percentile(one, 0.5) - percentile(single, 0.5):.2f} ms (target < 2 ms)."
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--clients", default="1000,2000")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    clients = tuple(int(c) for c in args.clients.split(","))
    repeat = 1 if args.quick else args.repeat
    results = run_scaleout(repeat, clients, 40 if args.quick else 100, 250 if args.quick else 1000)
    print(table(results))


if __name__ == "__main__":
    main()
