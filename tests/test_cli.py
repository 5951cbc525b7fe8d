"""The ``cpstream`` command, run for real (``python -m cpstream.cli``) against real daemons."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import defer
from twisted.internet import reactor as global_reactor
from twisted.internet.protocol import ProcessProtocol

import cpstream
from cpstream.domain import tokens
from tests.support import (
    Daemon,
    create,
    get_json,
    instance_log,
    kill_processes_with,
    post_json,
    read_token,
    run_process,
    wait_for,
)

CLI = [sys.executable, "-m", "cpstream.cli"]
TIMEOUT = 30.0


def creds(daemon: Daemon) -> list[str]:
    return ["--url", daemon.url, "--token", read_token(daemon.data_dir)]


async def cli(daemon: Daemon | None, *args: str) -> tuple[int | None, str]:
    """Run ``cpstream ARGS`` (with the daemon's URL and token) to its end; code and output."""
    return await run_process([*CLI, *(creds(daemon) if daemon else []), *args], TIMEOUT)


async def cli_json(daemon: Daemon, *args: str) -> Any:
    code, out = await cli(daemon, "--json", *args)
    assert code == 0, out
    return json.loads(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Follower(ProcessProtocol):
    """A long-running ``cpstream`` (``logs -f``, ``events``): its stdout and stderr apart."""

    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.ended: defer.Deferred = defer.Deferred()

    @classmethod
    def spawn(cls, daemon: Daemon, *args: str) -> Follower:
        follower = cls()
        argv = [*CLI, *creds(daemon), *args]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CPSTREAM_TOKEN")}
        follower.process = global_reactor.spawnProcess(follower, argv[0], argv, env=env)
        return follower

    def outReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted API)
        self.out += data

    def errReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted API)
        self.err += data

    def processEnded(self, reason: Any) -> None:  # noqa: N802 (Twisted API)
        self.ended.callback(reason.value.exitCode)

    @property
    def lines(self) -> list[str]:
        return self.out.decode().splitlines()

    @property
    def notes(self) -> str:
        return self.err.decode()

    async def until(self, predicate: Any, timeout: float = 15.0) -> None:
        try:
            await wait_for(predicate, timeout=timeout)
        except AssertionError:
            raise AssertionError(f"stdout:\n{self.out.decode()}\nstderr:\n{self.notes}") from None

    async def stop(self) -> int | None:
        """SIGTERM, as Ctrl-C would end it; its exit code (SIGKILL after 10 s)."""
        if not self.ended.called:
            self.process.signalProcess("TERM")
            killer = global_reactor.callLater(10, self.process.signalProcess, "KILL")
            try:
                return await self.ended
            finally:
                if killer.active():
                    killer.cancel()
        return self.ended.result


def append(path: Path, *lines: str) -> None:
    with open(path, "a") as f:
        f.write("".join(line + "\n" for line in lines))


@pytest_twisted.ensureDeferred
async def test_version_and_help():
    """--version prints the package version; every command has --help."""
    code, out = await cli(None, "--version")
    assert (code, out.strip()) == (0, f"cpstream {cpstream.__version__}")
    for command in ("ls", "create", "stop", "logs", "events", "send", "rules", "dlq"):
        code, out = await cli(None, command, "--help")
        assert code == 0 and f"usage: cpstream {command}" in out, out


@pytest_twisted.ensureDeferred
async def test_serve_help_is_the_daemons():
    """`cpstream serve --help` is twistd's help of the cpstream plugin."""
    code, out = await cli(None, "serve", "--help")
    assert code == 0, out
    assert "--listen=" in out and "--data-dir=" in out and "--retention=" in out


@pytest_twisted.ensureDeferred
async def test_usage_errors_exit_2():
    """A missing argument, an unknown option or a payload that is not JSON: exit 2."""
    for args in (
        ["create"],
        ["ls", "--bogus"],
        ["send", "a", "b", "t.x", "{nope"],
        ["logs", "a", "-n", "-1"],
        ["--url", "ftp://x", "ls"],
        ["events", "--correlation", "c1"],
        ["stop", "a", "--", "x"],
    ):
        code, out = await cli(None, *args)
        assert code == 2, (args, out)
        assert "usage: cpstream" in out


@pytest_twisted.ensureDeferred
async def test_no_daemon_exits_3_naming_the_url():
    """Nothing listening at --url: exit 3, and the URL tried on stderr."""
    url = f"http://127.0.0.1:{free_port()}"
    code, out = await run_process([*CLI, "--url", url, "--token", "x", "ls"], TIMEOUT)
    assert code == 3, out
    assert out.strip() == f"cpstream: cannot connect to {url}: connection refused"
    code, out = await run_process([*CLI, "logs", "a", "-f", "--url", url], TIMEOUT)
    assert code == 3 and url in out


@pytest_twisted.ensureDeferred
async def test_instances_lifecycle(daemon):
    """create, ls (table and --json), start, stop, clone, archive, unarchive, delete."""
    code, out = await cli(daemon, "create", "a", "--health", "process", "--", *sleeper())
    assert code == 0 and out.split()[:2] == ["a", "stopped"], out
    code, out = await cli(daemon, "clone", "a", "b", "--port", "19501")
    assert code == 0 and out.split() == ["b", "stopped", "port", "19501"], out
    code, out = await cli(daemon, "start", "a", "b")
    assert code == 0 and out.split() == ["a", "starting", "b", "starting"], out
    listed = await cli_json(daemon, "ls")
    assert [i["name"] for i in listed] == ["a", "b"]
    await wait_for(lambda: statuses(daemon, "a") == "running", timeout=10)
    code, out = await cli(daemon, "ls")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "STATUS", "PID", "PORT", "UPTIME", "RESTARTS"]
    a_row, b_row = (row.split() for row in rows)
    assert a_row[:2] == ["a", "running"] and a_row[2].isdigit() and a_row[5] == "0"
    assert (b_row[0], b_row[3]) == ("b", "19501")
    code, out = await cli(daemon, "stop", "a", "b")
    assert code == 0 and out.split() == ["a", "stopped", "b", "stopped"], out
    await cli(daemon, "start", "a")
    code, out = await cli(daemon, "stop", "a")
    assert [i["restarts"] for i in await cli_json(daemon, "ls")] == [1, 0]
    code, out = await cli(daemon, "archive", "b")
    assert (code, out.split()) == (0, ["b", "archived"])
    assert [i["name"] for i in await cli_json(daemon, "ls")] == ["a"]
    archived = await cli_json(daemon, "ls", "--archived")
    assert {i["name"]: i["status"] for i in archived} == {"a": "stopped", "b": "archived"}
    code, out = await cli(daemon, "unarchive", "b")
    assert (code, out.split()) == (0, ["b", "stopped"])
    await cli(daemon, "archive", "b")
    code, out = await cli(daemon, "delete", "b")
    assert (code, out.split()) == (0, ["b", "deleted"])
    code, out = await cli(daemon, "ls", "--archived", "--json")
    assert [i["name"] for i in json.loads(out)] == ["a"]


def sleeper() -> list[str]:
    return [sys.executable, "-c", "import signal; print('up', flush=True); signal.pause()"]


def statuses(daemon: Daemon, name: str) -> str | None:
    """The status the daemon's database holds for ``name`` (read-only, without the API)."""
    import sqlite3

    db = sqlite3.connect(f"file:{daemon.data_dir / 'cp.db'}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT status FROM instances WHERE name = ?", (name,)).fetchone()
    finally:
        db.close()
    return row[0] if row else None


@pytest_twisted.ensureDeferred
async def test_refusals_exit_1_with_the_apis_error(daemon):
    """The API's refusal: exit 1, `cpstream: CODE error` on one line; the other names go on."""
    code, out = await cli(daemon, "start", "nope")
    assert (code, out.strip()) == (1, "cpstream: 404 No instance named 'nope'")
    await create(daemon.url, "a")
    code, out = await cli(daemon, "delete", "nope", "a")
    assert code == 1
    assert "cpstream: 404 No instance named 'nope'" in out
    assert "cpstream: 409" in out  # a is not archived
    code, out = await cli(daemon, "create", "a")
    assert code == 1 and out.startswith("cpstream: 409 "), out
    code, out = await run_process([*CLI, "--url", daemon.url, "--token", "wrong", "ls"], TIMEOUT)
    assert code == 1 and out.startswith("cpstream: 401 unauthorized"), out
    code, out = await cli(daemon, "logs", "nope", "-f")
    assert (code, out.strip()) == (1, "cpstream: 404 No instance named 'nope'")


@pytest_twisted.ensureDeferred
async def test_credentials_from_the_data_dir_and_options_after_the_command(daemon, monkeypatch):
    """Without --token the data dir's operator.token is sent; global options may follow
    the command."""
    monkeypatch.delenv("CPSTREAM_TOKEN", raising=False)
    await create(daemon.url, "a")
    argv = [*CLI, "ls", "--json", "--url", daemon.url, "--data-dir", str(daemon.data_dir)]
    code, out = await run_process(argv, TIMEOUT)
    assert code == 0, out
    assert [i["name"] for i in json.loads(out)] == ["a"]


@pytest_twisted.ensureDeferred
async def test_messaging_commands(daemon):
    """rules add/list/rm, send, messages, message, dlq and replay, as a table and --json."""
    for name in ("a", "b"):
        await create(daemon.url, name)
    rule = await cli_json(daemon, "rules", "add", "a", "b", "task.*", "--max-retries", "0")
    assert (rule["type_pattern"], rule["max_retries"]) == ("task.*", 0)
    code, out = await cli(daemon, "rules")
    assert code == 0 and rule["id"] in out and "task.*" in out
    sent = await cli_json(daemon, "send", "a", "b", "task.x", '{"n": 1}', "--correlation", "c1")
    assert sent["status"] == "queued"
    again = await cli_json(
        daemon, "send", "a", "b", "task.x", "{}", "--key", "k1", "--correlation", "c2"
    )
    code, out = await cli(daemon, "send", "a", "b", "task.x", "{}", "--key", "k1")
    assert (code, out.split()) == (0, [again["id"], "deduplicated"])
    code, out = await cli(daemon, "send", "a", "b", "other.x", "{}")
    assert code == 1 and out.startswith("cpstream: 403 "), out
    found = await cli_json(daemon, "messages", "--correlation", "c1")
    assert [m["id"] for m in found] == [sent["id"]]
    code, out = await cli(daemon, "messages", "--instance", "b", "--limit", "5")
    assert code == 0 and out.splitlines()[0].split()[:3] == ["ID", "STATUS", "TYPE"]
    assert sent["id"] in out and again["id"] in out
    code, out = await cli(daemon, "message", sent["id"])
    assert code == 0 and '"n": 1' in out and "queued" in out, out
    _, leased = await get_json(f"{daemon.url}/api/instances/b/messages/pending")
    assert leased["message"]["id"] == sent["id"]
    lease = {"lease_id": leased["message"]["lease_id"], "detail": "no"}
    await post_json(f"{daemon.url}/api/messages/{sent['id']}/fail", lease)
    dead = await cli_json(daemon, "dlq")
    assert [m["id"] for m in dead] == [sent["id"]]
    detail = await cli_json(daemon, "message", sent["id"])
    assert [e["event"] for e in detail["events"]] == [
        "queued",
        "delivered",
        "failed",
        "dead_lettered",
    ]
    code, out = await cli(daemon, "replay", sent["id"])
    assert (code, out.split()) == (0, [sent["id"], "queued"])
    code, out = await cli(daemon, "replay", sent["id"])
    assert code == 1 and out.startswith("cpstream: 409 "), out
    assert await cli_json(daemon, "dlq") == []
    code, out = await cli(daemon, "rules", "rm", rule["id"])
    assert (code, out.split()) == (0, [rule["id"], "deleted"])
    assert await cli_json(daemon, "rules") == []


@pytest_twisted.ensureDeferred
async def test_logs_tail(daemon):
    """`logs NAME -n N` prints the last N lines; --json the API's answer."""
    await create(daemon.url, "a")
    append(instance_log(daemon.data_dir, "a"), *(f"l{i}" for i in range(1, 6)))
    code, out = await cli(daemon, "logs", "a", "-n", "2")
    assert (code, out.splitlines()) == (0, ["l4", "l5"])
    answer = await cli_json(daemon, "logs", "a", "-n", "3")
    assert answer["lines"] == ["l3", "l4", "l5"]


@pytest_twisted.ensureDeferred
async def test_logs_follow_across_a_rotation_and_a_daemon_restart(daemon):
    """`logs -f`: every line exactly once, in order, across a rename rotation (reported on
    stderr) and a daemon restart (reconnected, resumed from the last cursor)."""
    await create(daemon.url, "a")
    path = instance_log(daemon.data_dir, "a")
    append(path, "old", "l1", "l2")
    follower = Follower.spawn(daemon, "logs", "a", "-f", "-n", "2")
    try:
        await follower.until(lambda: follower.lines == ["l1", "l2"])
        append(path, "l3", "l4")
        os.rename(path, path.with_name("daemon.log.1"))
        append(path, "l5")
        await follower.until(lambda: "l5" in follower.lines)
        assert "--- log rotated ---" in follower.notes
        append(path, "l6")
        await follower.until(lambda: "l6" in follower.lines)
        await daemon.stop()
        append(path, "l7", "l8")  # written while no daemon runs
        await daemon.start()
        append(path, "l9")
        await follower.until(lambda: "l9" in follower.lines, timeout=45)
        assert "reconnected" in follower.notes and "resuming" in follower.notes
        append(path, "l10")
        await follower.until(lambda: "l10" in follower.lines)
        assert follower.lines == [f"l{i}" for i in range(1, 11)]
        assert follower.notes.count("--- log rotated ---") == 1
    finally:
        code = await follower.stop()
    assert code == 0, follower.notes


@pytest_twisted.ensureDeferred
async def test_events_across_a_restart_and_a_resync(daemon, tmp_path):
    """`events` prints a created instance once; after a daemon restart it resumes (the
    event missed meanwhile printed, none twice); another database: a resync line."""
    follower = Follower.spawn(daemon, "events")
    other = None
    try:
        await follower.until(lambda: "connected to" in follower.notes)
        await create(daemon.url, "e1")
        await follower.until(lambda: any(" e1  created" in line for line in follower.lines))
        await daemon.stop()
        await daemon.start()
        await create(daemon.url, "e2")  # likely before the follower is back: replayed
        await follower.until(lambda: any(" e2  created" in line for line in follower.lines), 45)
        created = [line for line in follower.lines if "created" in line]
        assert len(created) == 2, follower.lines
        await daemon.stop()
        kill_processes_with("CPSTREAM_URL", daemon.url)
        other_dir = tmp_path / "other"
        other_dir.mkdir()
        shutil.copy(daemon.data_dir / "operator.token", other_dir / "operator.token")
        other = Daemon(other_dir, port=daemon.port)
        await other.start()
        await follower.until(lambda: any("--- resync (epoch)" in x for x in follower.lines), 45)
        await create(other.url, "e3")
        await follower.until(lambda: any(" e3  created" in line for line in follower.lines))
    finally:
        code = await follower.stop()
        if other is not None:
            await other.stop()
    assert code == 0, follower.notes


@pytest_twisted.ensureDeferred
async def test_events_of_messages_as_json(daemon):
    """`events --messages --json`: the snapshot, then each message event as one JSON line."""
    for name in ("a", "b"):
        await create(daemon.url, name)
    await post_json(
        f"{daemon.url}/api/routing-rules",
        {"from_instance": "a", "to_instance": "b", "type_pattern": "t.*"},
    )
    follower = Follower.spawn(daemon, "events", "--messages", "--correlation", "c9", "--json")
    try:
        await follower.until(lambda: len(follower.lines) >= 1)
        assert json.loads(follower.lines[0])["type"] == "snapshot"
        await cli(daemon, "send", "a", "b", "t.x", "{}", "--correlation", "other")
        await cli(daemon, "send", "a", "b", "t.x", "{}", "--correlation", "c9")
        await follower.until(lambda: len(follower.lines) >= 2)
        event = json.loads(follower.lines[1])
        assert (event["type"], event["event"], event["correlation_id"]) == (
            "message_event",
            "queued",
            "c9",
        )
    finally:
        await follower.stop()
    assert len(follower.lines) == 2, follower.lines


@pytest_twisted.ensureDeferred
async def test_ls_watch_reprints_on_change(daemon):
    """`ls -w` prints the table, then again when an instance appears."""
    await create(daemon.url, "a")
    follower = Follower.spawn(daemon, "ls", "-w")
    try:
        await follower.until(lambda: any(line.startswith("a ") for line in follower.lines))
        await create(daemon.url, "b")
        await follower.until(lambda: any(line.startswith("b ") for line in follower.lines))
        assert follower.lines.count(follower.lines[0]) == 2  # the header, twice
    finally:
        await follower.stop()


def test_a_new_token_never_reads_as_an_option(monkeypatch) -> None:
    """A drawn token that begins with '-' (argparse would take `--token -X...` for a
    missing value) is discarded: a CI run failed on one such operator token."""
    draws = iter(["-starts-like-an-option", "Xa_fine-token"])
    monkeypatch.setattr(tokens.secrets, "token_urlsafe", lambda n: next(draws))
    assert tokens.new_token() == "Xa_fine-token"
