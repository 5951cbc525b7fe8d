"""Running benchmark servers and the load generator as pinned child processes."""

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


def loadgen(server: Server, clients: int, events: int, command: str, latency: bool) -> dict:
    """Connect ``clients``, send ``command`` to the server, collect the load generator's result."""
    argv = [sys.executable, "-m", "bench.loadgen", "--port", str(server.port),
            "--clients", str(clients), "--events", str(events)]  # fmt: skip
    if latency:
        argv.append("--latency")
    if server.token:
        argv += ["--token", server.token]
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
