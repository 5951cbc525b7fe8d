"""The daemon as an operator runs it: options, ``twistd -n cpstream``, the demo, adoption."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import pytest_twisted
from twisted.python import usage

from cpstream.tap import Options
from tests.support import Daemon, get_json, instance_log, kill_processes_with, sleep


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def test_defaults():
    """Defaults: loopback port 18800, ~/.cpstream, 90 s idle timeout, 1024 connections."""
    options = parse()
    assert options["listen"] == "tcp:18800:interface=127.0.0.1"
    assert str(options["data-dir"]) == os.path.expanduser("~/.cpstream")
    assert (options["idle-timeout"], options["max-connections"]) == (90.0, 1024)
    assert (options["demo"], options["echo"]) == (False, False)


def test_repeatable_origins_and_hosts():
    """--allowed-origin and --allowed-host may be given several times."""
    options = parse(
        "--allowed-origin", "http://a.lan:1", "--allowed-origin", "https://b.lan",
        "--allowed-host", "a.lan", "--allowed-host", "b.lan:8080",
    )  # fmt: skip
    assert options["allowed-origin"] == ["http://a.lan:1", "https://b.lan"]
    assert options["allowed-host"] == ["a.lan", "b.lan:8080"]


@pytest.mark.parametrize(
    "args",
    [
        ("--idle-timeout", "soon"),
        ("--idle-timeout", "-1"),
        ("--max-connections", "0"),
        ("--max-connections", "many"),
        ("--listen", "carrier-pigeon:12"),
        ("--listen", "tcp:notaport"),
        ("--allowed-origin", "evil.example"),
        ("--allowed-host", "a/b"),
    ],
)
def test_bad_values_are_usage_errors(args):
    """Bad option values raise UsageError (twistd prints usage, not a traceback)."""
    with pytest.raises(usage.UsageError):
        parse(*args)


def test_python_m_cpstream_help_lists_options():
    """``python -m cpstream --help`` shows the daemon's options."""
    out = subprocess.run(
        [sys.executable, "-m", "cpstream", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    for option in ("--listen", "--data-dir", "--demo", "--idle-timeout", "--allowed-origin",
                   "--allowed-host", "--max-connections", "--echo"):  # fmt: skip
        assert option in out


def test_bad_option_prints_usage_not_traceback(tmp_path):
    """A bad value exits non-zero with a usage message and no traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "cpstream", "--data-dir", str(tmp_path), "--idle-timeout", "x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in output and "idle-timeout" in output


@pytest_twisted.ensureDeferred
async def test_twistd_daemon_answers_health(daemon):
    """``twistd -n cpstream`` started as a subprocess answers /api/health."""
    assert await get_json(daemon.url + "/api/health") == (
        200,
        {"status": "ok", "instances": {}, "broker": {"kind": "memory"}},
    )


@pytest_twisted.ensureDeferred
async def test_demo_agents_run_survive_a_stop_and_are_adopted(data_dir):
    """--demo starts two agents; they outlive the daemon and the next daemon adopts them."""
    first = Daemon(data_dir, "--demo")
    await first.start()
    url = first.url
    try:

        async def statuses(daemon: Daemon) -> dict:
            code, body = await get_json(daemon.url + "/api/health")
            return body["instances"]

        seen: dict = {}

        async def both_running(daemon: Daemon) -> bool:
            seen.update(await statuses(daemon))
            return [seen.get(n, {}).get("status") for n in ("agent-1", "agent-2")] == [
                "running",
                "running",
            ]

        for _ in range(600):  # generous: a loaded CI machine starts Python slowly
            if await both_running(first):
                break
            await sleep(0.1)
        else:
            raise AssertionError(f"demo agents not running: {seen}")
        pids = {name: seen[name]["pid"] for name in ("agent-1", "agent-2")}
        log = instance_log(data_dir, "agent-1").read_text()
        assert "agent agent-1 starting" in log

        await first.stop()
        for pid in pids.values():
            assert os.path.exists(f"/proc/{pid}"), "an agent died with its control plane"

        second = Daemon(data_dir, port=first.port)
        await second.start()
        try:
            now = await statuses(second)
            assert {name: (v["status"], v["pid"]) for name, v in now.items()} == {
                name: ("running", pid) for name, pid in pids.items()
            }
            assert "adopted agent-1" in second.log_text()
        finally:
            await second.stop()
    finally:
        await first.stop()
        kill_processes_with("CPSTREAM_URL", url)
