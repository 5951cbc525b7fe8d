"""Fixtures: the real reactor, temporary data dirs, an in-process control plane."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor as global_reactor
from twisted.logger import formatEvent, globalLogPublisher

from cpstream.tap import Options, makeService
from tests.redis import private_redis, redis_server, redis_url  # noqa: F401 (fixtures)
from tests.support import (
    RUN_MARKER,
    SLEEPER,
    Daemon,
    World,
    authorize,
    kill_processes_with,
    read_token,
)

# Every process a test starts (daemons and their instances) inherits this
# marker, so that nothing outlives the session even when a test fails.
os.environ[RUN_MARKER] = uuid.uuid4().hex


@pytest.fixture(scope="session", autouse=True)
def _reap_session_processes() -> Any:
    yield
    kill_processes_with(RUN_MARKER, os.environ[RUN_MARKER])


@pytest.fixture(autouse=True)
def _no_logged_errors(request: pytest.FixtureRequest) -> Any:
    """Fail any test during which something logged an error it did not expect."""
    errors: list[str] = []

    def observe(event: dict) -> None:
        if event.get("log_failure") is not None or event.get("isError"):
            errors.append(formatEvent(event) + "\n" + str(event.get("log_failure", "")))

    globalLogPublisher.addObserver(observe)
    yield errors
    globalLogPublisher.removeObserver(observe)
    if not request.node.get_closest_marker("logs_errors"):
        assert not errors, "errors were logged:\n" + "\n".join(errors)


@pytest.fixture
def reactor() -> Any:
    return global_reactor


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def world(tmp_path: Path) -> Any:
    """The domain on a Clock (see :class:`tests.support.World`); children killed after."""
    made = World(tmp_path)
    yield made
    made.close()


class RunningControlPlane:
    """A control plane built by ``makeService`` and listening on a free loopback port."""

    def __init__(self, service: Any, data_dir: Path) -> None:
        self.service = service
        self.data_dir = data_dir

    @property
    def url(self) -> str:
        return self.service.web.url

    def api(self, path: str) -> str:
        return f"{self.url}/api{path}"

    @property
    def registry(self) -> Any:
        return self.service.registry


def build_control_plane(data_dir: Path, *args: str) -> Any:
    options = Options()
    options.parseOptions(
        ["--listen", "tcp:0:interface=127.0.0.1", "--data-dir", str(data_dir), *args]
    )
    return makeService(options, reactor=global_reactor)


@pytest_twisted.async_yield_fixture
async def cp(data_dir: Path) -> AsyncIterator[RunningControlPlane]:
    service = build_control_plane(data_dir)
    service.startService()
    running = RunningControlPlane(service, data_dir)
    url = running.url
    authorize(url, read_token(data_dir))
    try:
        yield running
    finally:
        if service.running:
            await service.stopService()
        kill_processes_with("CPSTREAM_URL", url)


@pytest.fixture
def supervised(tmp_path: Path) -> Any:
    """A world of real SLEEPER children with a started supervisor (``.supervisor``)."""
    made = World(tmp_path, command=SLEEPER)
    made.supervisor = made.new_supervisor()
    yield made
    made.close()


@pytest_twisted.async_yield_fixture
async def sampling_daemon(data_dir: Path) -> AsyncIterator[Daemon]:
    """A real daemon that samples usage every 0.25 s."""
    async for running in _daemon(data_dir, "--usage-interval", "0.25"):
        yield running


@pytest_twisted.async_yield_fixture
async def daemon(data_dir: Path) -> AsyncIterator[Daemon]:
    async for running in _daemon(data_dir):
        yield running


async def _daemon(data_dir: Path, *args: str) -> AsyncIterator[Daemon]:
    running = Daemon(data_dir, *args)
    await running.start()
    url = running.url
    try:
        yield running
    finally:
        await running.stop()
        kill_processes_with("CPSTREAM_URL", url)
