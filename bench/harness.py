"""Running benchmark servers and the load generator as pinned child processes.

The load generator is ``bench/loadgen.c`` (one epoll thread, compiled on demand into
``bench/results/loadgen``), so that it is never the bottleneck; ``CPSTREAM_LOADGEN=python``
runs the asyncio one (``bench/loadgen.py``) instead, for comparison. Both take the same
arguments and print the same ``connected`` line and JSON result.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.common import cpu_seconds, rss_kib
from bench.wsraw import RawClient

ROOT = Path(__file__).resolve().parent.parent
LOADGEN_SOURCE = ROOT / "bench" / "loadgen.c"
LOADGEN_BINARY = ROOT / "bench" / "results" / "loadgen"
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
        self.token = words[2] if len(words) > 2 else None

    def client(self, path: str, rcvbuf: int | None = None) -> RawClient:
        """A raw stream client of this server, with its operator token."""
        return RawClient(self.port, path, rcvbuf, self.token)

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


def loadgen_kind() -> str:
    """``c`` (the default) or ``python``, from ``CPSTREAM_LOADGEN``."""
    kind = os.environ.get("CPSTREAM_LOADGEN", "c").strip().lower() or "c"
    if kind not in ("c", "python"):
        raise ValueError(f"CPSTREAM_LOADGEN must be 'c' or 'python', not {kind!r}")
    return kind


def compiled_loadgen() -> Path:
    """``bench/results/loadgen``, (re)compiled when ``bench/loadgen.c`` is newer."""
    binary, source = LOADGEN_BINARY, LOADGEN_SOURCE
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        if not shutil.which("gcc"):
            raise RuntimeError("bench/loadgen.c needs gcc (or set CPSTREAM_LOADGEN=python)")
        binary.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["gcc", "-O2", "-o", str(binary.relative_to(ROOT)), str(source.relative_to(ROOT))],
            cwd=ROOT,
            check=True,
        )
    return binary


def loadgen_argv(server: Server, clients: int, *extra: str) -> list[str]:
    """The load generator's command line (pinned to CPU 1) for ``clients`` of ``server``."""
    if loadgen_kind() == "python":
        argv = [sys.executable, "-m", "bench.loadgen"]
    else:
        argv = [str(compiled_loadgen())]
    argv += ["--port", str(server.port), "--clients", str(clients), *extra]
    if server.token:
        argv += ["--token", server.token]
    return pinned(1, argv)


def loadgen(server: Server, clients: int, events: int, command: str, latency: bool) -> dict:
    """Connect ``clients``, send ``command`` to the server, collect the load generator's result."""
    extra = ["--events", str(events), *(["--latency"] if latency else [])]
    argv = loadgen_argv(server, clients, *extra)
    gen = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert gen.stdout.readline().strip() == "connected"
    cpu_before, started = server.cpu, time.monotonic()
    server.command(command)
    result = json.loads(gen.stdout.readline())
    gen.wait(30)
    server.until("done")
    result["server_cpu_seconds"] = server.cpu - cpu_before
    result["server_wall"] = time.monotonic() - started
    return result
