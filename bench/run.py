"""``make bench``: every benchmark, with its references, in one table.

Servers run pinned to CPU 0 and the load generator to CPU 1 (``taskset``), so
they never compete; the load generator's own CPU is reported to show it is not
the bottleneck. Fan-out and memory figures are the median of ``--repeat`` runs.

    python -m bench.run [--quick] [--repeat 3] [--only NAME] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.fanout import fanout, idle_memory
from bench.harness import ROOT, SERVERS
from bench.logs import log_flood, log_latency
from bench.state import backlog_time, resume_time, snapshot_time, stuck_client

TARGETS = {
    "saturation": ">= 1.05x websockets @1000",
    "p99": "<= 10 ms @1000",
    "memory": "<= 12 KiB/conn",
    "log_inotify": "p50 <= 120 ms",
    "log_poll": "p99 <= 650 ms",
    "snapshot": "< 100 ms",
    "resume": "< snapshot",
}
FANOUT_ROWS = (
    ("p50_ms", "p50 latency, 20 ev/s (ms)", ".2f"),
    ("p99_ms", "p99 latency, 20 ev/s (ms)", ".2f"),
    ("max_ms", "max latency, 20 ev/s (ms)", ".2f"),
    ("deliveries_per_s", "saturation in a burst (deliveries/s)", ",.0f"),
    ("loadgen_cpu_pct", "load generator CPU during the burst (%)", ".0f"),
    ("server_cpu_pct", "server CPU during the burst (%)", ".0f"),
)


def table(results: dict) -> str:
    """The results as one Markdown table."""
    fan, mem, own = results["fanout"], results["memory_kib_per_conn"], results["cpstream"]
    kinds = list(SERVERS)
    rows = ["| benchmark | " + " | ".join(kinds) + " | target |", "|---" * (len(kinds) + 2) + "|"]
    for clients in (100, 1000):
        for key, label, fmt in FANOUT_ROWS:
            cells = [fan.get(f"{k}@{clients}", {}).get(key) for k in kinds]
            if all(c is None for c in cells):
                continue
            target = ""
            if clients == 1000 and key == "p99_ms":
                target = TARGETS["p99"]
            elif clients == 1000 and key == "deliveries_per_s":
                target = TARGETS["saturation"]
            values = " | ".join("" if c is None else format(c, fmt) for c in cells)
            rows.append(f"| {label} @{clients} | {values} | {target} |")
    if "floor" in results:
        floor = results["floor"]
        rows.append(
            f"| kernel floor: one frame to 1000 sockets, plain send (median / best ms) | "
            f"{floor['median_ms']:.1f} / {floor['best_ms']:.1f}{' |' * len(kinds)}"
        )
    if mem:
        values = " | ".join(format(mem[k], ".1f") if k in mem else "" for k in kinds)
        rows.append(
            f"| server RSS per idle connection @1000 (KiB) | {values} | {TARGETS['memory']} |"
        )
    rest = " |" * (len(kinds) - 1)

    def own_row(label: str, value: str, target: str) -> None:
        rows.append(f"| {label} | {value}{rest} {target} |")

    if "log_inotify" in own:
        log = own["log_inotify"]
        own_row(
            "log append -> frame, inotify (p50 / p99 ms)",
            f"{log['p50_ms']:.0f} / {log['p99_ms']:.0f}",
            TARGETS["log_inotify"],
        )
    if "log_poll" in own:
        log = own["log_poll"]
        own_row(
            "log append -> frame, poll only (p50 / p99 ms)",
            f"{log['p50_ms']:.0f} / {log['p99_ms']:.0f}",
            TARGETS["log_poll"],
        )
    if "log_flood" in own:
        flood = own["log_flood"]
        own_row(
            "50k lines/s for 2 s: lost / duplicated / largest frame / RSS growth",
            f"{flood['lost']} / {flood['duplicated']} / {flood['largest_frame_kib']:.0f} KiB / "
            f"{flood['rss_growth_mib']:.1f} MiB",
            "none lost, capped, bounded",
        )
    if "stuck" in own:
        stuck = own["stuck"]
        own_row(
            "one stuck client, 10k events: RSS growth / resynced",
            f"{stuck['rss_growth_mib']:.1f} MiB / {'yes' if stuck['resynced'] else 'NO'}",
            "bounded, resynced",
        )
    if "snapshot" in own:
        snap = own["snapshot"]
        own_row(
            f"connect -> snapshot of {snap['instances']:,} instances (ms)",
            f"{snap['median_ms']:.1f}",
            TARGETS["snapshot"],
        )
    if "resume" in own:
        resume = own["resume"]
        own_row(
            f"reconnect -> live at {resume['instances']:,} instances, {resume['missed']} missed:"
            " resume / full snapshot (ms)",
            f"{resume['resume_ms']:.1f} / {resume['snapshot_ms']:.1f}",
            TARGETS["resume"],
        )
    if "backlog" in own:
        backlog = own["backlog"]
        own_row(
            f"connect -> backlog of 1,000 lines, {backlog['log_mib']} MiB log of "
            f"{backlog['line_kib']} KiB lines (ms)",
            f"{backlog['median_ms']:.1f}",
            "",
        )
    return "\n".join(rows)


def machine() -> dict:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "date": time.strftime("%Y-%m-%d"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="fewer events, one repeat")
    parser.add_argument("--only", help="run only benchmarks whose name contains this")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    args = parser.parse_args()
    repeat = 1 if args.quick else args.repeat
    rate_events = 40 if args.quick else 100
    burst_events = {100: 500, 1000: 250} if args.quick else {100: 2000, 1000: 1000}
    results: dict = {"machine": machine(), "fanout": {}, "memory_kib_per_conn": {}, "cpstream": {}}

    def wanted(name: str) -> bool:
        return not args.only or args.only in name

    if wanted("floor"):
        floor = subprocess.run(
            [sys.executable, "-m", "bench.floor"], cwd=ROOT, capture_output=True, text=True
        )
        results["floor"] = json.loads(floor.stdout)
        print("floor", json.dumps(results["floor"]), flush=True)
    for clients in (100, 1000):
        for kind in SERVERS:
            if wanted(f"fanout {kind} {clients}"):
                burst = burst_events[clients]
                runs = [fanout(kind, clients, rate_events, burst) for _ in range(repeat)]
                median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                results["fanout"][f"{kind}@{clients}"] = median
                print(f"fanout {kind} @{clients}", json.dumps(median), flush=True)
    for kind in SERVERS:
        if wanted(f"memory {kind}"):
            per_conn = statistics.median(idle_memory(kind) for _ in range(repeat))
            results["memory_kib_per_conn"][kind] = per_conn
            print(f"memory {kind}", per_conn, flush=True)
    for name, run in (
        ("log_inotify", lambda: log_latency(poll_only=False)),
        ("log_poll", lambda: log_latency(poll_only=True)),
        ("log_flood", log_flood),
        ("stuck", stuck_client),
        ("snapshot", snapshot_time),
        ("resume", resume_time),
        ("backlog", backlog_time),
    ):
        if wanted(name):
            results["cpstream"][name] = run()
            print(name, json.dumps(results["cpstream"][name]), flush=True)
    info = results["machine"]
    print(f"\n{info['cpu']}, {info['cores']} cores, Python {info['python']}, {info['date']}\n")
    print(table(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
