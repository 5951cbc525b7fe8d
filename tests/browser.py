"""A real headless Chromium for the dashboard tests, driven from the reactor, and what
every dashboard test module shares: its fixtures (a browser, a daemon, tabs checked for
console errors) and helpers (agents on free ports, card locators).

Playwright's sync API blocks, so every call runs on one dedicated thread
(Playwright objects belong to the thread that made them) while the reactor
keeps serving the daemons' output; tests ``await browser.run(fn, ...)``.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import pytest_twisted
from twisted.internet import reactor as global_reactor
from twisted.internet import threads
from twisted.python.threadpool import ThreadPool

from tests.support import (
    TOKENS,
    Daemon,
    create,
    get_json,
    kill_processes_with,
    post_json,
    sleep,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
TIMEOUT_MS = 10_000


MISSING = (
    f"{CHROMIUM} is missing: apt-get install chromium"
    " (or set CPSTREAM_SKIP_BROWSER=1 to skip the browser tests)"
)


def require_chromium() -> None:
    """Fail without Chromium (a run that silently skipped the dashboard would pass), unless
    ``CPSTREAM_SKIP_BROWSER=1`` asks to skip the browser tests."""
    if os.environ.get("CPSTREAM_SKIP_BROWSER") == "1":
        pytest.skip("CPSTREAM_SKIP_BROWSER=1")
    if not CHROMIUM.exists():
        pytest.fail(MISSING)


if __name__ == "__main__":
    # `make test` asks first, to stop with one line rather than a page of failures.
    if os.environ.get("CPSTREAM_SKIP_BROWSER") != "1" and not CHROMIUM.exists():
        raise SystemExit(f"make test: {MISSING}")


class Browser:
    """One Chromium process (fresh temporary profile) on one Playwright thread."""

    def __init__(self) -> None:
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="playwright")
        self._playwright: Any = None
        self._chromium: Any = None
        self._profile = tempfile.TemporaryDirectory(prefix="cpstream-chromium-")
        self._sessions: set[tuple[str, str]] = set()

    def run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """A Deferred firing with ``fn(*args, **kwargs)`` run on the Playwright thread."""
        return threads.deferToThreadPool(global_reactor, self._pool, fn, *args, **kwargs)

    async def start(self) -> Browser:
        self._pool.start()
        await self.run(self._launch)
        return self

    def _launch(self) -> None:
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        self._chromium = self._playwright.chromium.launch_persistent_context(
            self._profile.name,
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 800},
        )
        self._chromium.set_default_timeout(TIMEOUT_MS)

    async def stop(self) -> None:
        try:
            await self.run(self._close)
        finally:
            self._pool.stop()
            self._profile.cleanup()

    def _close(self) -> None:
        if self._chromium is not None:
            self._chromium.close()
        if self._playwright is not None:
            self._playwright.stop()

    async def open(self, url: str, log_in: bool = True) -> Tab:
        """A new tab at ``url`` that records console messages, page errors and requests;
        logged in first (as its operator would be) unless ``log_in`` is false."""
        return await self.run(self._open, url, log_in)

    def _open(self, url: str, log_in: bool = True) -> Tab:
        if log_in:
            self._log_in(url)
        tab = Tab(self._chromium.new_page())
        tab.page.goto(url)
        return tab

    def log_out_everywhere(self) -> None:
        """Forget every session cookie (as a new browser would have none)."""
        self._chromium.clear_cookies()
        self._sessions.clear()

    def _log_in(self, url: str) -> None:
        """Follow the daemon's login link once per daemon (as its operator would), so the
        persistent profile holds a session cookie for it. In a page of its own: the
        dashboard the link leads to must not count among a tab's sockets and requests."""
        parts = urlsplit(url)
        token = TOKENS.get(parts.netloc)
        if token and (parts.netloc, token) not in self._sessions:
            page = self._chromium.new_page()
            try:
                page.goto(f"{parts.scheme}://{parts.netloc}/login?token={token}")
            finally:
                page.close()
            self._sessions.add((parts.netloc, token))


class Tab:
    """A page plus what it reported: console messages, uncaught errors, requests, sockets."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self._lock = threading.Lock()
        self.console: list[tuple[str, str]] = []
        self.page_errors: list[str] = []
        self.requests: list[tuple[float, str]] = []
        self.sockets: list[str] = []
        self.allowed: list[re.Pattern[str]] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self._record(self.page_errors, str(error)))
        page.on("request", self._request)
        page.on("websocket", lambda socket: self._record(self.sockets, socket.url))

    def _record(self, into: list, item: Any) -> None:
        with self._lock:
            into.append(item)

    def _console(self, message: Any) -> None:
        self._record(self.console, (message.type, message.text))

    def _request(self, request: Any) -> None:
        self._record(self.requests, (global_reactor.seconds(), request.url))

    def allow(self, pattern: str) -> None:
        """Console errors matching ``pattern`` are expected (the browser's own network log)."""
        self.allowed.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        """Uncaught errors, and console errors or warnings nobody declared expected."""
        with self._lock:
            found = [f"pageerror: {e}" for e in self.page_errors]
            for kind, text in self.console:
                if kind in ("error", "warning") and not any(p.search(text) for p in self.allowed):
                    found.append(f"console.{kind}: {text}")
            return found

    def close(self) -> None:
        self.page.close()


# -- what the dashboard test modules share ------------------------------------------

AGENT = [sys.executable, "-m", "cpstream.agent"]
HTTP_404 = r"^Failed to load resource: the server responded with a status of 404"
HTTP_409 = r"^Failed to load resource: the server responded with a status of 409"
WS_REFUSED = r"^WebSocket connection to 'ws://127\.0\.0\.1:\d+/ws/[^']*' failed"
FETCH_REFUSED = r"^Failed to load resource: net::ERR_CONNECTION_REFUSED"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


async def new_agent(daemon: Daemon, name: str, *flags: str, start: bool = False) -> dict:
    """An instance of the demo agent on a free port, optionally started and running."""
    command = [*AGENT, *flags]
    body = await create(daemon.url, name, port=free_port(), command=command, health="http")
    if start:
        code, answer = await post_json(f"{daemon.url}/api/instances/{name}/start")
        assert code == 200, answer
        await until_running(daemon, name)
    return body


async def until_running(daemon: Daemon, name: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        _, body = await get_json(f"{daemon.url}/api/instances/{name}")
        if body.get("status") == "running":
            return
        assert time.monotonic() < deadline, f"{name} is not running: {body}"
        await sleep(0.1)


def card(page: Any, name: str) -> Any:
    return page.locator(f'article.card[data-instance="{name}"]')


def expect(target: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


@pytest.fixture(scope="module")
def chromium() -> None:
    require_chromium()


@pytest_twisted.async_yield_fixture(scope="module")
async def browser(chromium: None) -> AsyncIterator[Browser]:
    running = await Browser().start()
    try:
        yield running
    finally:
        await running.stop()


@asynccontextmanager
async def running_daemon(data_dir: Path, *args: str) -> AsyncIterator[Daemon]:
    """A daemon of its own for one test; stopped afterwards, with every child it started."""
    daemon = await Daemon(data_dir, *args).start()
    url = daemon.url
    try:
        yield daemon
    finally:
        await daemon.stop()
        kill_processes_with("CPSTREAM_URL", url)


@pytest_twisted.async_yield_fixture(scope="module")
async def ui(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Daemon]:
    async with running_daemon(tmp_path_factory.mktemp("ui-data")) as daemon:
        yield daemon


@pytest_twisted.async_yield_fixture
async def tabs(browser: Browser) -> AsyncIterator[Any]:
    """Opens tabs; afterwards fails the test if any logged an unexpected error."""
    opened: list[Tab] = []

    async def open_tab(url: str) -> Tab:
        tab = await browser.open(url)
        opened.append(tab)
        return tab

    yield open_tab
    problems = [p for tab in opened for p in tab.unexpected()]
    for tab in opened:
        await browser.run(tab.close)
    assert not problems, "the page logged errors:\n" + "\n".join(problems)
