"""``make bench``: every benchmark, with its references, in one table.

Servers run pinned to CPU 0 and the load generator to CPU 1 (``taskset``), so
they never compete. The load generator is ``bench/loadgen.c`` (compiled on demand;
``--loadgen python`` or ``CPSTREAM_LOADGEN=python`` runs ``bench/loadgen.py`` instead).
Every fan-out cell is the median of ``--repeat`` runs with their spread (min-max), and,
for figures the load generator measured, its own CPU during that measurement (the
highest of the runs): under 50 % it is not the bottleneck. Memory figures are medians.
Percentiles and medians are nearest-rank (:func:`tests.stats.percentile`).

The message path (cpstream's REST messaging against Redis's reliable queue,
:mod:`bench.messages`) prints its own table after the fan-out one, and so does the
scale-out (one control plane and one or two gateways on Redis, :mod:`bench.scaleout`).

    python -m bench.run [--quick] [--repeat 3] [--only NAME] [--json PATH] [--loadgen c]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from bench.fanout import fanout, idle_memory
from bench.gcpause import gc_pause
from bench.harness import ROOT, SERVERS
from bench.logs import log_flood, log_latency
from bench.messages import run_messages
from bench.messages import table as messages_table
from bench.restframe import rest_fanout
from bench.sampling import sampling_cost
from bench.scaleout import run_scaleout
from bench.scaleout import table as scaleout_table
from bench.state import backlog_time, resume_time, snapshot_time, stuck_client
from tests.stats import percentile

TARGETS = {
    "saturation": ">= 1.05x websockets @1000",
    "p99": "<= 10 ms @1000",
    "memory": "<= 12 KiB/conn",
    "log_inotify": "p50 <= 120 ms",
    "log_poll": "p99 <= 650 ms",
    "snapshot": "< 100 ms",
    "resume": "< snapshot",
    "restframe": "REST p99 <= 1.3x in-process p99",
    "sampling": "< 10 ms per tick",
}
RATE_CPU, BURST_CPU = "rate_loadgen_cpu_pct", "burst_loadgen_cpu_pct"
# (figure, row label, format, the load generator CPU measured with it or None)
FANOUT_ROWS = (
    ("p50_ms", "p50 latency, 20 ev/s (ms)", ".2f", RATE_CPU),
    ("p99_ms", "p99 latency, 20 ev/s (ms)", ".2f", RATE_CPU),
    ("max_ms", "max latency, 20 ev/s (ms)", ".2f", RATE_CPU),
    ("deliveries_per_s", "burst: saturation (deliveries/s)", "kilo", BURST_CPU),
    ("events_per_read", "burst: events per read", ".1f", BURST_CPU),
    ("burst_p50_ms", "burst: p50 latency (ms)", ".1f", BURST_CPU),
    ("burst_p99_ms", "burst: p99 latency (ms)", ".1f", BURST_CPU),
    ("server_cpu_pct", "burst: server CPU (%)", ".0f", None),
)
LEGEND = (
    "Fan-out cells: median of the runs (min-max of the runs); gen: the load generator's CPU"
    " during that measurement, highest of the runs (%); INCOMPLETE: a run lost deliveries."
)


def summarize(runs: list[dict]) -> dict:
    """Median (nearest rank), min and max of every figure over the runs, and the runs."""
    keys = runs[0].keys()
    return {
        "runs": len(runs),
        "median": {k: percentile([r[k] for r in runs], 0.5) for k in keys},
        "min": {k: min(r[k] for r in runs) for k in keys},
        "max": {k: max(r[k] for r in runs) for k in keys},
        "each": runs,
    }


def _number(value: float, fmt: str) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    if fmt == "kilo":
        return f"{value / 1000:,.0f}k"
    return format(value, fmt)


def fanout_cell(summary: dict | None, key: str, fmt: str, cpu_key: str | None) -> str:
    """``median (min-max) gen N %`` for one server kind."""
    if summary is None or key not in summary["median"]:
        return ""
    cell = _number(summary["median"][key], fmt)
    if summary["runs"] > 1:
        cell += f" ({_number(summary['min'][key], fmt)}–{_number(summary['max'][key], fmt)})"
    if cpu_key is not None:
        cell += f" gen {summary['max'][cpu_key]:.0f} %"
    if key == "deliveries_per_s" and not summary["min"]["complete"]:
        cell += " INCOMPLETE"
    return cell


def table(results: dict) -> str:
    """The results as one Markdown table."""
    fan, mem, own = results["fanout"], results["memory_kib_per_conn"], results["cpstream"]
    kinds = list(SERVERS)
    rows = ["| benchmark | " + " | ".join(kinds) + " | target |", "|---" * (len(kinds) + 2) + "|"]
    for clients in (100, 1000):
        summaries = [fan.get(f"{k}@{clients}") for k in kinds]
        if all(s is None for s in summaries):
            continue
        for key, label, fmt, cpu_key in FANOUT_ROWS:
            target = ""
            if clients == 1000 and key == "p99_ms":
                target = TARGETS["p99"]
            elif clients == 1000 and key == "deliveries_per_s":
                target = TARGETS["saturation"]
            values = " | ".join(fanout_cell(s, key, fmt, cpu_key) for s in summaries)
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
    rest = " |" * len(kinds)

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
    if "restframe" in results:
        summary = results["restframe"]
        med, low, high = summary["median"], summary["min"], summary["max"]
        own_row(
            "REST send -> message_event @1000, 20/s: p50 / p99 (ms), in-process p99 same run,"
            " p99 ratio; request p50 / p99 (ms)",
            f"{med['rest_p50_ms']:.2f} / {med['rest_p99_ms']:.2f} ({low['rest_p99_ms']:.2f}–"
            f"{high['rest_p99_ms']:.2f}), {med['inproc_p99_ms']:.2f}, {med['ratio_p99']:.2f}x"
            f" ({low['ratio_p99']:.2f}–{high['ratio_p99']:.2f}); {med['request_p50_ms']:.2f} / "
            f"{med['request_p99_ms']:.2f}; gen {high['rest_loadgen_cpu_pct']:.0f} %",
            TARGETS["restframe"],
        )
    if "sampling" in own:
        sampling = own["sampling"]
        med, low, high = sampling["median"], sampling["min"], sampling["max"]

        def spread(key: str) -> str:
            return f"{med[key]:.1f} ({low[key]:.1f}–{high[key]:.1f})"

        own_row(
            f"usage sampling of {sampling['instances']} running instances, per tick: reactor (ms)",
            f"{spread('reactor_ms')}, worst {high['reactor_max_ms']:.1f}",
            TARGETS["sampling"],
        )
        own_row(
            "  the psutil reading, in a worker thread (ms); a 1 ms reactor timer's p99 / max"
            " lateness meanwhile (quiet: before sampling) (ms)",
            f"{spread('read_ms')}; {med['probe_late_p99_ms']:.1f} / {high['probe_late_max_ms']:.1f}"
            f" (quiet {med['quiet_late_p99_ms']:.1f} / {high['quiet_late_max_ms']:.1f})",
            "",
        )
    if "gcpause" in own:
        pause = own["gcpause"]

        def ms(variant: str) -> str:
            found = pause[variant]
            return (
                f"{found['median']['full_gc_ms']:.1f} ({found['min']['full_gc_ms']:.1f}–"
                f"{found['max']['full_gc_ms']:.1f})"
            )

        own_row(
            f"a full GC pass, {pause['instances']} instances and {pause['clients']:,} idle"
            " clients: start-up objects frozen (the daemon) / not (ms)",
            f"{ms('frozen')} / {ms('plain')}",
            "",
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
    parser.add_argument(
        "--loadgen",
        choices=("c", "python"),
        default=os.environ.get("CPSTREAM_LOADGEN", "c"),
        help="the fan-out load generator (default: CPSTREAM_LOADGEN, else c)",
    )
    args = parser.parse_args()
    os.environ["CPSTREAM_LOADGEN"] = args.loadgen
    repeat = 1 if args.quick else args.repeat
    rate_events = 40 if args.quick else 100
    burst_events = {100: 500, 1000: 250} if args.quick else {100: 2000, 1000: 1000}
    results: dict = {
        "machine": machine(),
        "loadgen": args.loadgen,
        "fanout": {},
        "memory_kib_per_conn": {},
        "cpstream": {},
    }

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
                runs = []
                for _ in range(repeat):
                    runs.append(fanout(kind, clients, rate_events, burst))
                    print(f"fanout {kind} @{clients}", json.dumps(runs[-1]), flush=True)
                results["fanout"][f"{kind}@{clients}"] = summarize(runs)
    if wanted("restframe"):
        runs = []
        for _ in range(repeat):
            runs.append(rest_fanout(1000, rate_events))
            print("restframe", json.dumps(runs[-1]), flush=True)
        results["restframe"] = summarize(runs)
    for kind in SERVERS:
        if wanted(f"memory {kind}"):
            per_conn = percentile([idle_memory(kind) for _ in range(repeat)], 0.5)
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
        ("sampling", lambda: sampling_cost(repeat=repeat)),
        ("gcpause", lambda: gc_pause(repeat=repeat)),
    ):
        if wanted(name):
            results["cpstream"][name] = run()
            print(name, json.dumps(results["cpstream"][name]), flush=True)
    if wanted("messages"):
        results["messages"] = run_messages(repeat, 2.0 if args.quick else 5.0)
    if wanted("scaleout"):
        results["scaleout"] = run_scaleout(repeat, (1000, 2000), rate_events, burst_events[1000])
    info = results["machine"]
    print(f"\n{info['cpu']}, {info['cores']} cores, Python {info['python']}, {info['date']}")
    print(f"load generator: bench/loadgen.{'c' if args.loadgen == 'c' else 'py'}. {LEGEND}\n")
    print(table(results))
    if "messages" in results:
        print("\nMessages, 4 senders and 4 receivers (bench/messages.py):\n")
        print(messages_table(results["messages"]))
    if "scaleout" in results:
        print("\nScale-out on Redis (bench/scaleout.py):\n")
        print(scaleout_table(results["scaleout"]))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
