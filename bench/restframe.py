"""REST to frame: an event made by a REST request, fanned out to 1,000 clients.

One cpstream benchmark server (the real ``makeService``), two measurements in the
same run, both timed by the load generator from each frame's own ``timestamp`` to
the client's read:

* in-process publish: 20 status changes/s through ``Registry.set_status`` reach
  every ``/ws/instances`` client (the fan-out row);
* REST-driven: a driver process (pinned to the load generator's CPU) sends 20
  ``POST /api/messages``/s over one keep-alive connection; each stores a message
  and its ``queued`` event, whose frame reaches every ``/ws/messages`` client.

The frame's ``timestamp`` is taken before the message's transaction begins, so the
REST figure includes the commit; the driver's request→response time (parse, route,
store, commit, fan-out writes, response) is reported beside it.

    python -m bench.restframe [--clients 1000] [--events 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import time

from bench.fanout import _complete, _cpu_pct
from bench.harness import ROOT, Server, loadgen, loadgen_argv, pinned
from tests.stats import percentile

SLEEPER = [sys.executable, "-c", "import signal; signal.pause()"]


def _api(connection: http.client.HTTPConnection, token: str, method: str, path: str, body=None):
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    connection.request(method, path, json.dumps(body) if body is not None else None, headers)
    response = connection.getresponse()
    answer = response.read()
    if response.status >= 300:
        raise RuntimeError(f"{method} {path}: {response.status} {answer[:200]!r}")
    return json.loads(answer or b"null")


def drive(port: int, token: str, count: int, hz: float) -> dict:
    """Send ``count`` messages at ``hz`` on one keep-alive connection; request times (ms)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = {"from_instance": "rs", "to_instance": "rr", "message_type": "bench.rest"}
    took = []
    started = time.monotonic()
    for n in range(count):
        delay = started + n / hz - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sent = time.perf_counter()
        _api(connection, token, "POST", "/api/messages", body)
        took.append((time.perf_counter() - sent) * 1000)
    connection.close()
    return {
        "request_p50_ms": percentile(took, 0.5),
        "request_p99_ms": percentile(took, 0.99),
        "request_max_ms": max(took),
    }


def _setup(server: Server) -> None:
    """The sender and receiver instances and the rule that lets one send to the other."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    for name in ("rs", "rr"):
        _api(connection, server.token, "POST", "/api/instances",
             {"name": name, "command": SLEEPER, "health": "process"})  # fmt: skip
    rule = {"from_instance": "rs", "to_instance": "rr", "type_pattern": "bench.*"}
    _api(connection, server.token, "POST", "/api/routing-rules", rule)
    connection.close()


def rest_fanout(clients: int, events: int, hz: int = 20) -> dict:
    """One run of both measurements against one server."""
    server = Server("cpstream")
    try:
        _setup(server)
        inproc = loadgen(server, clients, events, f"rate {events} {hz}", latency=True)
        argv = loadgen_argv(
            server, clients, "--events", str(events), "--latency", "--path", "/ws/messages"
        )
        gen = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert gen.stdout.readline().strip() == "connected"
        drive_argv = ["--drive", str(server.port), server.token, str(events), str(hz)]
        driver = subprocess.run(
            pinned(1, [sys.executable, "-m", "bench.restframe", *drive_argv]),
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        rest = json.loads(gen.stdout.readline())
        gen.wait(30)
        requests = json.loads(driver.stdout)
    finally:
        server.close()
    return {
        "inproc_p50_ms": inproc["p50_ms"],
        "inproc_p99_ms": inproc["p99_ms"],
        "inproc_loadgen_cpu_pct": _cpu_pct(inproc),
        "rest_p50_ms": rest["p50_ms"],
        "rest_p99_ms": rest["p99_ms"],
        "rest_max_ms": rest["max_ms"],
        "rest_loadgen_cpu_pct": _cpu_pct(rest),
        "ratio_p99": rest["p99_ms"] / inproc["p99_ms"] if inproc["p99_ms"] else float("nan"),
        **requests,
        "complete": int(_complete(inproc) and _complete(rest)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--drive", nargs=4, metavar=("PORT", "TOKEN", "COUNT", "HZ"))
    args = parser.parse_args()
    if args.drive:
        port, token, count, hz = args.drive
        print(json.dumps(drive(int(port), token, int(count), float(hz))))
        return
    for _ in range(args.repeat):
        print(json.dumps(rest_fanout(args.clients, args.events)), flush=True)


if __name__ == "__main__":
    main()
