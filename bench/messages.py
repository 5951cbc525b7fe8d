"""The message path, end to end: cpstream's REST messaging against Redis's reliable queue.

Both servers run pinned to CPU 0 and ``bench/msgload`` (one C process, one epoll
loop, compiled on demand into bench/results/) to CPU 1. Each run gets a fresh server:
a cpstream daemon (``python -m cpstream``, its operator token, instances s0..s3 and
r0..r3, rules sI -> r(I % R) for ``bench.*``) or a ``redis-server`` with no
persistence (``--save '' --appendonly no``).

Workload A sends, leases and acknowledges one message per request; workload B 100
per request (see bench/msgload.c for the exact requests and Redis commands). Open
loop: senders keep one request in flight per connection, as fast as the server
answers, for ``--duration`` s (a backlog builds when they outpace the receivers, and
the latency is then mostly the wait in it). Closed loop: a sender's next request
waits until every message of its previous one is acknowledged (the path's own
latency). Either way the receivers then drain what is left, so every message sent is
acknowledged before a run ends. Send->lease latency is measured by the client (the
time the lease response was read minus the time the send was written: one process,
one clock), not from the server's event stamps. Each figure is the median of
``--repeat`` runs (interleaved), with the spread (min-max), and the load generator's
CPU (over the sending phase) and the server's (over the whole run) beside it.

    python -m bench.messages [--repeat 3] [--duration 5] [--loop open|closed] [--json PATH]
    python -m bench.messages --profile [--duration 5] [--access-log] [--idle]   (py-spy, A)
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "bench" / "msgload.c"
BINARY = ROOT / "bench" / "results" / "msgload"
SENDERS = RECEIVERS = 4

# (label, server kind, workload, access log); each run open loop and closed loop
VARIANTS = (
    ("cpstream A", "cpstream", "a", False),
    ("redis A", "redis", "a", False),
    ("cpstream A, access log", "cpstream", "a", True),
    ("cpstream B", "cpstream", "b", False),
    ("redis B", "redis", "b", False),
)
LOOPS = ("open", "closed")
ROWS = (
    ("msgs_per_s", "messages/s fully acknowledged", ",.0f"),
    ("sends_per_s", "sends/s (messages, while sending)", ",.0f"),
    ("acks_per_s", "acks/s (messages, while sending)", ",.0f"),
    ("backlog_at_stop", "backlog when sending stopped", ",.0f"),
    ("p50_ms", "p50 send->lease (ms)", ",.2f"),
    ("p99_ms", "p99 send->lease (ms)", ",.2f"),
    ("error_count", "requests or items refused (4xx/5xx, -ERR)", ",.0f"),
    ("loadgen_cpu_pct", "load generator CPU (%)", ".0f"),
    ("server_cpu_pct", "server CPU (%)", ".0f"),
)


def compiled() -> Path:
    """``bench/results/msgload``, (re)compiled when ``bench/msgload.c`` is newer."""
    if not BINARY.exists() or BINARY.stat().st_mtime < SOURCE.stat().st_mtime:
        BINARY.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(BINARY), str(SOURCE)], check=True)
    return BINARY


def pinned(cpu: int, argv: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(cpu), *argv]
    return argv


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Cpstream:
    """A cpstream daemon on a fresh data dir, with s0.., r0.. and their routing rules."""

    proto = "http"

    def __init__(
        self, access_log: bool = False, senders: int = SENDERS, receivers: int = RECEIVERS
    ):
        self.data = Path(tempfile.mkdtemp(prefix="cpstream-msgbench-"))
        self.log = self.data / "daemon.log"
        argv = [sys.executable, "-m", "cpstream", "--data-dir", str(self.data),
                "--listen", "tcp:0:interface=127.0.0.1"]  # fmt: skip
        if not access_log:
            argv.append("--no-access-log")
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                pinned(0, argv), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
            )
        self.port = self._listening()
        self.token = (self.data / "operator.token").read_text().strip()
        names = [f"s{i}" for i in range(senders)] + [f"r{j}" for j in range(receivers)]
        command = [sys.executable, "-c", "import signal; signal.pause()"]
        for name in names:
            self.api("POST", "/api/instances", {"name": name, "command": command,
                                                "health": "process"})  # fmt: skip
        for i in range(senders):
            rule = {"from_instance": f"s{i}", "to_instance": f"r{i % receivers}",
                    "type_pattern": "bench.*"}  # fmt: skip
            self.api("POST", "/api/routing-rules", rule)

    def _listening(self) -> int:
        deadline = time.monotonic() + 30
        marker = "cpstream listening on http://127.0.0.1:"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"cpstream exited: {self.log.read_text()[-2000:]}")
            text = self.log.read_text(errors="replace")
            if marker in text:
                return int(text.split(marker, 1)[1].split()[0].rstrip("/"))
            time.sleep(0.05)
        raise RuntimeError("cpstream did not start listening in 30 s")

    def api(self, method: str, path: str, body: object = None) -> object:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Authorization": f"Bearer {self.token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            connection.request(method, path, data, headers)
            response = connection.getresponse()
            answer = json.loads(response.read() or b"null")
        finally:
            connection.close()
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {answer}")
        return answer

    @property
    def pid(self) -> int:
        return self.process.pid

    def close(self) -> None:
        stop(self.process)
        shutil.rmtree(self.data, ignore_errors=True)


class Redis:
    """A ``redis-server`` with no persistence on a free loopback port."""

    proto = "resp"
    token = ""

    def __init__(self) -> None:
        self.port = free_port()
        argv = [shutil.which("redis-server") or "/usr/bin/redis-server",
                "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--daemonize", "no"]  # fmt: skip
        self.process = subprocess.Popen(
            pinned(0, argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while self.command(b"PING") != b"+PONG\r\n":
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def command(self, *words: bytes) -> bytes:
        """One command's raw reply (enough for PING and DBSIZE); b"" if not reachable."""
        request = b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                s.sendall(request)
                return s.recv(4096)
        except OSError:
            return b""

    @property
    def pid(self) -> int:
        return self.process.pid

    def close(self) -> None:
        stop(self.process)


def msgload(server: Cpstream | Redis, workload: str, duration: float, window: int = 0) -> dict:
    """One run of the load generator (pinned to CPU 1) against ``server``; its JSON result
    with the server's CPU over the run beside it."""
    argv = [str(compiled()), "--proto", server.proto, "--port", str(server.port),
            "--workload", workload, "--senders", str(SENDERS), "--receivers", str(RECEIVERS),
            "--duration", str(duration), "--window", str(window), "--drain", "60"]  # fmt: skip
    if server.token:
        argv += ["--token", server.token]
    cpu_before, started = cpu_seconds(server.pid), time.monotonic()
    done = subprocess.run(pinned(1, argv), capture_output=True, text=True, timeout=duration + 90)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"msgload failed: {done.stderr.strip()}")
    result = json.loads(done.stdout)
    result["server_cpu_pct"] = 100 * (cpu_seconds(server.pid) - cpu_before) / wall
    result["loadgen_cpu_pct"] = result["cpu_pct"]
    result["p50_ms"] = result["latency_ms"]["p50"]
    result["p99_ms"] = result["latency_ms"]["p99"]
    result["error_count"] = errors = sum(result["errors"].values())
    if errors or result["unacked"] or result["drain_timed_out"]:
        print(f"warning: {server.proto} {workload}: {errors} errors, {result['unacked']}"
              f" unacknowledged: {result['first_error']}", file=sys.stderr)  # fmt: skip
    return result


def start(kind: str, access_log: bool = False) -> Cpstream | Redis:
    return Cpstream(access_log) if kind == "cpstream" else Redis()


def run_messages(repeat: int = 3, duration: float = 5.0, loops: tuple = LOOPS) -> dict:
    """Every variant, open and closed loop, ``repeat`` times (interleaved, a fresh server
    each run): per loop, variant and figure the median, min and max, and every run's
    full result. Closed loop: a sender's next request waits until every message of its
    previous one is acknowledged (``--window`` 1 for A, 100 for B)."""
    compiled()
    load_before = os.getloadavg()
    runs: dict[str, dict[str, list[dict]]] = {
        loop: {label: [] for label, *_ in VARIANTS} for loop in loops
    }
    for _ in range(repeat):
        for label, kind, workload, access_log in VARIANTS:
            for loop in loops:
                window = 0 if loop == "open" else (1 if workload == "a" else 100)
                server = start(kind, access_log)
                try:
                    runs[loop][label].append(msgload(server, workload, duration, window))
                finally:
                    server.close()
    summary: dict[str, dict[str, dict]] = {}
    for loop, variants in runs.items():
        summary[loop] = {}
        for label, results in variants.items():
            summary[loop][label] = {
                key: {
                    "median": statistics.median(r[key] for r in results),
                    "min": min(r[key] for r in results),
                    "max": max(r[key] for r in results),
                }
                for key, *_ in ROWS
            }
    return {
        "repeat": repeat,
        "duration_s": duration,
        "senders": SENDERS,
        "receivers": RECEIVERS,
        "cpus": os.cpu_count(),
        "loadavg_before_after": [load_before, os.getloadavg()],
        "summary": summary,
        "runs": runs,
    }


def table(results: dict) -> str:
    """The summary as Markdown tables, one per loop: median (min-max) per variant."""
    out = []
    for loop, variants in results["summary"].items():
        labels = list(variants)
        out += [f"**{loop} loop**", ""]
        out.append("| figure | " + " | ".join(labels) + " |")
        out.append("|---" * (len(labels) + 1) + "|")
        for key, name, fmt in ROWS:
            cells = []
            for label in labels:
                s = variants[label][key]
                cells.append(f"{s['median']:{fmt}} ({s['min']:{fmt}}-{s['max']:{fmt}})")
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def own_time(raw: str, top: int = 15) -> list[tuple[str, int, float]]:
    """Functions by own time from py-spy's raw (collapsed) output: the leaf frame of each
    stack (its lines merged), with its samples and share of the busy samples (py-spy
    leaves out those where the daemon sleeps in epoll_wait)."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, samples = line.rpartition(" ")
        if stack and samples.isdigit():
            leaf = stack.split(";")[-1]  # "name (path:line)": one row per function
            name, paren, where = leaf.partition(" (")
            counts[name + paren + where.rsplit(":", 1)[0] + (")" if paren else "")] += int(samples)
    total = sum(counts.values()) or 1
    return [(frame, n, 100 * n / total) for frame, n in counts.most_common(top)]


def by_package(raw: str) -> list[tuple[str, int, float]]:
    """Own time by where the leaf frame's code lives (``twisted/web``, ``json``, ...); the
    lines of cpstream's store and tables modules are their SQLite calls."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, samples = line.rpartition(" ")
        if not (stack and samples.isdigit()):
            continue
        path = stack.split(";")[-1].partition(" (")[2].rsplit(":", 1)[0]
        if path.endswith(("domain/store.py", "domain/tables.py")):
            group = "sqlite3 (cpstream store and tables)"
        else:
            parts = path.split("/")
            group = "/".join(parts[:2] if parts[0] in ("cpstream", "twisted") else parts[:1])
        counts[group] += int(samples)
    total = sum(counts.values()) or 1
    return [(group, n, 100 * n / total) for group, n in counts.most_common()]


def profile(
    duration: float = 5.0, access_log: bool = False, idle: bool = False, workload: str = "a"
) -> str:
    """py-spy on the daemon while workload A runs: the top 15 functions by own time (with
    ``idle``, the samples py-spy takes for idle too: waits in epoll_wait, or in I/O)."""
    extra = ["--idle"] if idle else []
    spy = ROOT / ".venv" / "bin" / "py-spy"
    server = Cpstream(access_log)
    out = Path(tempfile.mkdtemp(prefix="cpstream-msgprof-")) / "profile.txt"
    try:
        record = subprocess.Popen(
            [str(spy), "record", "--format", "raw", "-o", str(out), "--pid", str(server.pid),
             "--duration", str(int(duration)), "--rate", "250", "--nonblocking", *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(0.5)
        result = msgload(server, workload, duration)
        _, err = record.communicate(timeout=60)
        if record.returncode != 0:
            raise RuntimeError(f"py-spy failed: {err.strip()}")
    finally:
        server.close()
    raw = out.read_text()
    shutil.rmtree(out.parent, ignore_errors=True)
    lines = [f"workload {workload.upper()} while profiled: {result['msgs_per_s']:,.0f} messages/s",
             "", "| own % | samples | function |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {share:.1f} | {n} | `{frame}` |" for frame, n, share in own_time(raw)]
    lines += ["", "| own % | samples | code |", "|---|---|---|"]
    lines += [f"| {share:.1f} | {n} | {group} |" for group, n, share in by_package(raw)[:12]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of sending per run")
    parser.add_argument("--loop", choices=LOOPS, help="only this loop (default: both)")
    parser.add_argument("--json", help="also write the full results here")
    parser.add_argument("--profile", action="store_true", help="py-spy the daemon instead")
    parser.add_argument("--access-log", action="store_true", help="with --profile")
    parser.add_argument("--idle", action="store_true", help="with --profile: idle samples too")
    parser.add_argument("--workload", choices=("a", "b"), default="a", help="with --profile")
    args = parser.parse_args()
    if args.profile:
        print(profile(args.duration, args.access_log, args.idle, args.workload))
        return
    results = run_messages(args.repeat, args.duration, (args.loop,) if args.loop else LOOPS)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(table(results))


if __name__ == "__main__":
    main()
