"""Helpers shared by the tests: waiting on the reactor, real daemons, cleanup."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import treq
from twisted.internet import defer, task
from twisted.internet import reactor as global_reactor
from twisted.internet.protocol import ProcessProtocol

from cpstream.domain.children import process_environ
from cpstream.domain.hub import Hub
from cpstream.domain.inbox import Inbox
from cpstream.domain.logfiles import LogFiles
from cpstream.domain.logtail import LogTails
from cpstream.domain.messaging import Messaging
from cpstream.domain.registry import Registry
from cpstream.domain.routing import RoutingRules
from cpstream.domain.store import Store
from cpstream.domain.supervisor import Supervisor
from cpstream.streams.connections import Streams
from cpstream.streams.settings import StreamSettings, prepare_frame
from cpstream.web.auth import Authenticator, LoginCodes

ROOT = Path(__file__).resolve().parent.parent
RUN_MARKER = "CPSTREAM_TEST_RUN"
ARTIFACTS = Path(os.environ.get("ARTIFACTS", ROOT / "test-artifacts"))
# A real child that says it is up, then waits for a signal.
SLEEPER = [sys.executable, "-c", "import signal; print('up', flush=True); signal.pause()"]


async def wait_for(predicate: Any, timeout: float = 10.0, step: float = 0.02) -> Any:
    """Poll ``predicate`` on the reactor (never blocking it) until truthy or timeout."""
    deadline = global_reactor.seconds() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if global_reactor.seconds() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        await task.deferLater(global_reactor, step, lambda: None)


def sequenced(frames: Any) -> list[dict]:
    """The frames that carry a ``seq`` (``usage_changed`` carries none: it is not history)."""
    return [f for f in frames if "seq" in f]


def sleep(seconds: float) -> defer.Deferred:
    """A Deferred that fires after ``seconds`` of reactor time."""
    return task.deferLater(global_reactor, seconds, lambda: None)


class ClockedReactor:
    """Real processes and sockets from the reactor, time from a ``task.Clock``."""

    def __init__(self, clock: task.Clock, real: Any = global_reactor) -> None:
        self.clock = clock
        self._real = real

    def seconds(self) -> float:
        return self.clock.seconds()

    def callLater(self, *args: Any, **kwargs: Any) -> Any:  # noqa: N802 (Twisted API)
        return self.clock.callLater(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


# A site's credentials check when a test builds the site by hand and checks something else.
NO_AUTH = Authenticator("unused", None, None, LoginCodes(), required=False)  # type: ignore[arg-type]
# Autobahn's handshake timers off: protocol tests drive everything else on a Clock.
NO_TIMERS = StreamSettings(open_handshake_timeout=0, close_handshake_timeout=0)
EPOCH = 1_790_000_000


class Recorder:
    """A hub subscriber that keeps, decoded, every frame it is handed."""

    def __init__(self, hub: Hub, accepts: Any = None) -> None:
        self.frames: list[dict] = []
        self.subscription = hub.subscribe(accepts or (lambda event: True), self)

    def write_frames(self, frames: Any) -> None:
        self.frames.extend(json.loads(getattr(f, "payload", f)) for f in frames)

    @property
    def types(self) -> list[str]:
        return [f["type"] for f in self.frames]


class World:
    """The whole domain on a ``task.Clock``, over a real SQLite file and real log files.

    Hubs hand every event over at once (no coalescing window), so a
    :class:`Recorder` sees each frame in the turn it is published; tests of the
    window itself build their own ``Hub``.
    """

    def __init__(
        self,
        tmp_path: Path,
        command: list[str] | None = None,
        probe: Any = None,
        grace: float = 5.0,
    ) -> None:
        self.tmp_path = tmp_path
        self.clock = task.Clock()
        self.clock.advance(EPOCH)
        self.reactor = ClockedReactor(self.clock)
        self.store = Store.open(tmp_path / "cp.db")
        self.hub = Hub(self.clock, prepare=prepare_frame, coalesce=0.0)
        self.messages_hub = Hub(self.clock, prepare=prepare_frame, coalesce=0.0)
        self.instance_frames = Recorder(self.hub)
        self.message_frames = Recorder(self.messages_hub)
        self.command = command or ["agent"]
        self.registry = self.new_registry()
        self.rules = RoutingRules(self.store.rules, self.registry, self.clock)
        self.messaging = Messaging(self.store, self.messages_hub, self.clock, self.rules)
        self.inbox = Inbox(self.messaging, self.clock)
        self.logs = LogFiles(tmp_path)
        self.tails = LogTails(self.clock)
        self.streams = Streams(self.clock, idle_timeout=90, settings=NO_TIMERS)
        self.probe = probe or (lambda port: defer.succeed(True))
        self.grace = grace
        self.supervisors: list[Supervisor] = []

    def new_registry(self) -> Registry:
        """A registry over the same store and hub, as a restarted control plane builds it."""
        return Registry(self.store, self.hub, self.clock, self.command)

    def new_supervisor(self, registry: Registry | None = None) -> Supervisor:
        """A started supervisor of real children, its timers on the Clock."""
        supervisor = Supervisor(
            self.reactor,
            registry or self.registry,
            self.logs,
            lambda port: self.probe(port),
            grace=self.grace,
        )
        supervisor.startService()
        self.supervisors.append(supervisor)
        return supervisor

    def statuses(self, name: str) -> list[str]:
        """Every status ``name`` went through, in order, as the stream saw it."""
        return [
            f["status"]
            for f in self.instance_frames.frames
            if f["type"] == "status_changed" and f["name"] == name
        ]

    def close(self) -> None:
        """Kill every child of ours left (never a pid a test merely wrote down) and stop
        the supervisors."""
        for instance in self.registry.all(include_archived=True):
            pid = instance.pid
            if pid and process_environ(pid).get("CPSTREAM_INSTANCE_ID") == instance.id:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
        for supervisor in self.supervisors:
            if supervisor.running:
                supervisor.stopService()
        self.store.close()


def instance_pid(data_dir: Path, name: str) -> int | None:
    """The pid the database holds for the active instance called ``name``."""
    db = sqlite3.connect(f"file:{data_dir / 'cp.db'}?mode=ro", uri=True)
    try:
        row = db.execute(
            "SELECT pid FROM instances WHERE name = ? AND archived_at IS NULL", (name,)
        ).fetchone()
    finally:
        db.close()
    return row[0] if row else None


async def agent_token(data_dir: Path, name: str) -> str:
    """The agent token the running instance ``name`` was given (from its environment)."""
    await wait_for(lambda: instance_pid(data_dir, name))
    return process_environ(instance_pid(data_dir, name))["CPSTREAM_TOKEN"]


def instance_log(data_dir: Path, name: str, make: bool = True) -> Path:
    """The current log file of the instance called ``name`` (its active one, else its newest
    archived one): logs are kept by instance id."""
    db = sqlite3.connect(f"file:{data_dir / 'cp.db'}?mode=ro", uri=True)
    try:
        row = db.execute(
            "SELECT id FROM instances WHERE name = ?"
            " ORDER BY archived_at IS NULL DESC, archived_at DESC LIMIT 1",
            (name,),
        ).fetchone()
    finally:
        db.close()
    assert row is not None, f"no instance named {name!r}"
    path = data_dir / "instances" / row[0] / "logs" / "daemon.log"
    if make:
        path.parent.mkdir(parents=True, exist_ok=True)
    return path


def processes_with(marker: str, value: str) -> list[int]:
    """Pids of live processes whose environment has ``marker=value``."""
    needle = f"{marker}={value}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def kill_processes_with(marker: str, value: str) -> int:
    """SIGKILL every process group holding ``marker=value``; how many processes had it."""
    pids = processes_with(marker, value)
    for pid in pids:
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    return len(pids)


# The JSON helpers below take ``client``: the ``treq`` module for real sockets, or a
# ``treq.testing.StubTreq`` answering from a resource tree in memory.


# The operator token of each control plane a test runs, by "host:port": the helpers
# below (and WSClient) send it unless the request brings its own Authorization.
TOKENS: dict[str, str] = {}


def authorize(url: str, token: str) -> None:
    """From now on, requests to ``url``'s host and port carry ``token``."""
    TOKENS[urlsplit(url).netloc] = token


def read_token(data_dir: Path) -> str:
    return (data_dir / "operator.token").read_text().strip()


def auth_headers(url: str, headers: dict | None = None) -> dict:
    """``headers`` plus the operator token for ``url`` (unless they carry one already)."""
    headers = dict(headers or {})
    token = TOKENS.get(urlsplit(url).netloc)
    named = {(k.decode() if isinstance(k, bytes) else k).lower() for k in headers}
    if token and "authorization" not in named:
        headers[b"Authorization"] = [f"Bearer {token}".encode()]
    return headers


class AuthedTreq:
    """treq that sends the operator token of whichever control plane a URL names."""

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        kwargs["headers"] = auth_headers(url, kwargs.get("headers"))
        return treq.request(method, url, **kwargs)

    def get(self, url: str, **kwargs: Any) -> Any:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> Any:
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> Any:
        return self.request("PUT", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> Any:
        return self.request("DELETE", url, **kwargs)


http = AuthedTreq()


async def get_json(url: str, client: Any = treq, **kwargs: Any) -> tuple[int, Any]:
    headers = auth_headers(url, kwargs.pop("headers", None))
    response = await client.get(url, headers=headers, **kwargs)
    return response.code, await response.json()


async def post_json(
    url: str, body: Any = None, client: Any = treq, **kwargs: Any
) -> tuple[int, Any]:
    headers = auth_headers(url, kwargs.pop("headers", None))
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers.setdefault(b"Content-Type", [b"application/json"])
    response = await client.post(url, data=data, headers=headers, **kwargs)
    return response.code, await response.json()


async def delete_json(url: str, client: Any = treq, **kwargs: Any) -> tuple[int, Any]:
    headers = auth_headers(url, kwargs.pop("headers", None))
    response = await client.delete(url, headers=headers, **kwargs)
    return response.code, await response.json()


async def create(base_url: str, name: str, client: Any = treq, **fields: Any) -> dict:
    """``POST /api/instances`` on the control plane at ``base_url``; the instance (201).

    Unless ``fields`` say otherwise its command is :data:`SLEEPER`, health-checked as a process.
    """
    body = {"name": name, "command": SLEEPER, "health": "process", **fields}
    code, instance = await post_json(f"{base_url}/api/instances", body, client=client)
    assert code == 201, instance
    return instance


class _Collect(ProcessProtocol):
    """Keeps a child's output; ``ended`` fires with its exit code (``None`` if killed)."""

    def __init__(self) -> None:
        self.output = b""
        self.ended: defer.Deferred = defer.Deferred()

    def outReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted API)
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:  # noqa: N802 (Twisted API)
        self.ended.callback(reason.value.exitCode)


async def run_process(
    argv: list[str], timeout: float, cwd: Path | None = None
) -> tuple[int | None, str]:
    """Run ``argv`` (in ``cwd``) to its end without blocking the reactor; SIGKILL it after
    ``timeout``."""
    collect = _Collect()
    process = global_reactor.spawnProcess(
        collect, argv[0], argv, env=dict(os.environ), path=None if cwd is None else str(cwd)
    )
    killer = global_reactor.callLater(timeout, process.signalProcess, "KILL")
    try:
        code = await collect.ended
    finally:
        if killer.active():
            killer.cancel()
    output = collect.output.decode("utf-8", "replace")
    if code is None:
        output += f"\n[killed after {timeout:.0f}s]"
    return code, output


class _DaemonProtocol(ProcessProtocol):
    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon
        self.ended: defer.Deferred = defer.Deferred()

    def outReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted API)
        self._daemon._output(data)

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:  # noqa: N802 (Twisted API)
        self.ended.callback(reason.value)


class Daemon:
    """``twistd -n cpstream`` as a real child process on a free loopback port.

    ``program`` replaces ``python -m cpstream`` (a benchmark's own server entry point);
    ``env`` adds to the daemon's environment.
    """

    data_dir_arg = True

    def __init__(
        self,
        data_dir: Path,
        *args: str,
        port: int = 0,
        program: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.args = args
        self.port = port
        self.program = program or (sys.executable, "-m", "cpstream")
        self.env = env or {}
        self.output = b""
        self.url = ""
        self._listening: defer.Deferred | None = None
        self._protocol: _DaemonProtocol | None = None

    def _output(self, data: bytes) -> None:
        self.output += data
        match = re.search(rb"cpstream listening on (https?://[\d.]+:(\d+))", self.output)
        if match and self._listening is not None and not self._listening.called:
            self.url = match.group(1).decode()
            self.port = int(match.group(2))
            token_file = self.data_dir / "operator.token"
            if token_file.exists():
                authorize(self.url, read_token(self.data_dir))
            self._listening.callback(self)

    @property
    def pid(self) -> int:
        assert self._protocol is not None
        return self._protocol.transport.pid

    async def start(self, timeout: float = 30.0) -> Daemon:
        self.output = b""
        self._listening = defer.Deferred()
        self._protocol = _DaemonProtocol(self)
        argv = [
            *self.program,
            *(("--data-dir", str(self.data_dir)) if self.data_dir_arg else ()),
            "--listen",
            f"tcp:{self.port}:interface=127.0.0.1",
            *self.args,
        ]
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        global_reactor.spawnProcess(self._protocol, argv[0], argv, env=env, path=str(ROOT))
        self._protocol.ended.addCallback(self._ended_early)
        self._listening.addTimeout(timeout, global_reactor)
        await self._listening
        return self

    def _ended_early(self, reason: Any) -> Any:
        if self._listening is not None and not self._listening.called:
            self._listening.errback(
                AssertionError(f"daemon exited early: {self.output.decode(errors='replace')}")
            )
        return reason

    async def stop(self, signum: int = signal.SIGTERM, timeout: float = 15.0) -> Any:
        """Signal the daemon and wait for it to exit (SIGKILL after ``timeout``)."""
        protocol = self._protocol
        if protocol is None or protocol.ended.called:
            return None
        ended = defer.Deferred()
        protocol.ended.addBoth(lambda r: (ended.callback(r), r)[1])
        os.kill(self.pid, signum)
        killer = global_reactor.callLater(timeout, self._kill)
        try:
            return await ended
        finally:
            if killer.active():
                killer.cancel()

    def _kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def log_text(self) -> str:
        return self.output.decode("utf-8", "replace")
