"""Fixtures of the hardening battery: real daemons to attack, and what they cost."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet.task import LoopingCall

from tests.hardening.report import recorded
from tests.support import Daemon, kill_processes_with

CLEAN_LOG_FORBIDS = ("Unhandled Error", "Traceback", "Unhandled error")


def rss_kib(pid: int) -> int:
    """Resident memory of a process, in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def temp_bytes(pid: int, directory: Path) -> int:
    """Bytes in files under ``directory`` that the process holds open (unnamed ones too)."""
    total = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(str(directory)):
                total += os.stat(f"/proc/{pid}/fd/{fd}").st_size
        except OSError:
            continue
    return total


class Sampler:
    """Samples a process's RSS (and its temp-file bytes) every ``every`` seconds."""

    def __init__(self, pid: int, temp_dir: Path | None = None, every: float = 0.05) -> None:
        self.pid = pid
        self.temp_dir = temp_dir
        self.baseline = rss_kib(pid)
        self.peak = self.baseline
        self.temp_peak = 0
        self._loop = LoopingCall(self.sample)
        self._loop.start(every)

    def sample(self) -> None:
        self.peak = max(self.peak, rss_kib(self.pid))
        if self.temp_dir is not None:
            self.temp_peak = max(self.temp_peak, temp_bytes(self.pid, self.temp_dir))

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()
        self.sample()

    @property
    def growth_kib(self) -> int:
        return self.peak - self.baseline


class Daemons:
    """Starts real daemons for one test; on teardown stops them and checks their logs."""

    def __init__(self, tmp_path: Path) -> None:
        self._tmp_path = tmp_path
        self.started: list[Daemon] = []

    async def start(
        self,
        *args: str,
        data_dir: Path | None = None,
        port: int = 0,
        auth: bool = False,
        **env: str,
    ) -> Daemon:
        """A daemon to attack. The battery's raw requests test the policy that no
        credential lifts (Host, Origin, framing, sizes, deadlines), so its daemons run
        ``--auth none`` on loopback unless ``auth``; the auth matrix runs with tokens."""
        if data_dir is None:
            data_dir = self._tmp_path / f"data{len(self.started)}"
            data_dir.mkdir()
        if not auth:
            args = ("--auth", "none", *args)
        daemon = Daemon(data_dir, *args, port=port, env=env)
        self.started.append(daemon)
        return await daemon.start()

    async def close(self) -> None:
        for daemon in self.started:
            url = daemon.url
            await daemon.stop()
            if url:
                kill_processes_with("CPSTREAM_URL", url)
        for daemon in self.started:
            text = daemon.log_text()
            for forbidden in CLEAN_LOG_FORBIDS:
                assert forbidden not in text, f"the daemon logged {forbidden!r}:\n{text[-4000:]}"


@pytest_twisted.async_yield_fixture
async def daemons(tmp_path: Path) -> AsyncIterator[Daemons]:
    running = Daemons(tmp_path)
    try:
        yield running
    finally:
        await running.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print every figure the battery measured in this session."""
    if not recorded:
        return
    terminalreporter.section("hardening figures")
    for entry in recorded:
        terminalreporter.write_line(f"{entry['case']}: {entry['figure']}")
