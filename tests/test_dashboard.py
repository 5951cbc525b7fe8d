"""The dashboard end to end: real Chromium, a real daemon, real agents and sockets."""

from __future__ import annotations

import re
import sys
import time
from collections import Counter
from pathlib import Path

import pytest_twisted

from tests import browser as kit
from tests.browser import (
    AGENT,
    FETCH_REFUSED,
    HTTP_404,
    HTTP_409,
    WS_REFUSED,
    card,
    expect,
    free_port,
    new_agent,
    running_daemon,
    unique,
)
from tests.support import (
    ARTIFACTS,
    Daemon,
    get_json,
    instance_log,
    kill_processes_with,
    post_json,
    read_token,
    sleep,
)
from tests.wsclient import WSClient

POLL_INSTANCES_S = 5.0

# The shared fixtures (tests/browser.py), under the names the tests ask for.
chromium, browser, ui, tabs = kit.chromium, kit.browser, kit.ui, kit.tabs


@pytest_twisted.ensureDeferred
async def test_new_instance_modal_creates_a_card(browser, ui, tabs):
    """Creating an instance through the modal adds its card live, without a reload."""
    tab = await tabs(f"{ui.url}/")
    name, port = unique("made"), free_port()

    def steps() -> None:
        page = tab.page
        expect(page.locator("#mode")).to_have_attribute("data-mode", "live")
        expect(page.locator("#mode")).to_have_text("Live")
        page.evaluate("window.sameDocument = true")
        page.get_by_role("button", name="New instance").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_label("Name").fill(name)
        dialog.get_by_label("Port").fill(str(port))
        dialog.get_by_label("Command").fill(f"{sys.executable} -m cpstream.agent --heartbeat '2'")
        dialog.get_by_role("button", name="Create").click()
        expect(dialog).to_have_count(0)
        expect(card(page, name).locator(".badge")).to_have_text("stopped")
        expect(card(page, name).locator("dd").first).to_have_text(str(port))
        expect(page.locator(".note-success")).to_contain_text(f"Created {name}")
        assert page.evaluate("window.sameDocument") is True

    await browser.run(steps)
    code, body = await get_json(f"{ui.url}/api/instances/{name}")
    assert (code, body["command"], body["port"]) == (200, [*AGENT, "--heartbeat", "2"], port)


@pytest_twisted.ensureDeferred
async def test_status_badge_follows_start_and_stop(browser, ui, tabs):
    """Start and Stop on a card change its badge, pid and uptime with no reload."""
    name = unique("switch")
    await new_agent(ui, name)
    tab = await tabs(f"{ui.url}/")

    def steps() -> None:
        page = tab.page
        page.evaluate("window.sameDocument = true")
        this = card(page, name)
        expect(this.locator(".badge")).to_have_text("stopped")
        this.locator('[data-action="start"]').click()
        expect(this.locator(".badge")).to_have_text("running")
        expect(this.locator(".badge")).to_have_class("badge status-running")
        expect(this.locator("dd").nth(1)).to_have_text(re.compile(r"^\d+$"))
        expect(this.locator(".uptime")).to_have_text(re.compile(r"^\d+s$"))
        this.locator('[data-action="stop"]').click()
        expect(this.locator(".badge")).to_have_text("stopped")
        expect(this.locator(".uptime")).to_have_text("\u2014")
        assert page.evaluate("window.sameDocument") is True

    await browser.run(steps)


@pytest_twisted.ensureDeferred
async def test_archive_unarchive_clone_delete(browser, ui, tabs):
    """Archive warns when running; archived cards show only with the toggle; delete confirms."""
    name, copy, copy_port = unique("arch"), unique("copy"), free_port()
    await new_agent(ui, name, start=True)
    tab = await tabs(f"{ui.url}/")

    def steps() -> None:
        page = tab.page
        this = card(page, name)
        expect(this.locator(".badge")).to_have_text("running")
        this.locator('[data-action="archive"]').click()
        dialog = page.get_by_role("dialog")
        expect(dialog.locator(".warning")).to_have_text(f"{name} is running: archiving stops it.")
        dialog.get_by_role("button", name="Archive").click()
        expect(this).to_have_count(0)

        page.get_by_label("Show archived").check()
        expect(this).to_have_class(re.compile(r"\barchived\b"))
        expect(this.locator(".badge")).to_have_text("archived")
        assert this.locator("[data-action]:visible").all_inner_texts() == [
            "Unarchive",
            "Clone",
            "Delete",
        ]

        this.locator('[data-action="clone"]').click()
        dialog.get_by_label("Name").fill(copy)
        dialog.get_by_label("Port").fill(str(copy_port))
        dialog.get_by_role("button", name="Clone").click()
        expect(card(page, copy).locator(".badge")).to_have_text("stopped")

        this.locator('[data-action="unarchive"]').click()
        expect(this.locator(".badge")).to_have_text("stopped")
        expect(this).not_to_have_class(re.compile(r"\barchived\b"))

        this.locator('[data-action="archive"]').click()
        expect(dialog.locator(".warning")).to_have_count(0)
        dialog.get_by_role("button", name="Archive").click()
        expect(this.locator(".badge")).to_have_text("archived")
        this.locator('[data-action="delete"]').click()
        expect(dialog).to_contain_text("removed for good")
        dialog.get_by_role("button", name="Cancel").click()
        expect(this).to_have_count(1)
        this.locator('[data-action="delete"]').click()
        dialog.get_by_role("button", name="Delete").click()
        expect(this).to_have_count(0)

    await browser.run(steps)
    code, _ = await get_json(f"{ui.url}/api/instances/{name}")
    assert code == 404


@pytest_twisted.ensureDeferred
async def test_conflict_shows_the_server_message(browser, ui, tabs):
    """A 409 appears as a dismissable notification with the server's own message."""
    name = unique("dup")
    await new_agent(ui, name)
    tab = await tabs(f"{ui.url}/")
    tab.allow(HTTP_409)

    def steps() -> None:
        page = tab.page
        expect(card(page, name)).to_have_count(1)
        page.get_by_role("button", name="New instance").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_label("Name").fill(name)
        dialog.get_by_role("button", name="Create").click()
        alert = page.get_by_role("alert")
        expect(alert).to_contain_text(f"Create {name} failed (409):")
        expect(alert).to_contain_text(f"name '{name}' is already taken by an active instance")
        expect(dialog).to_be_visible()
        dialog.get_by_role("button", name="Cancel").click()
        alert.get_by_role("button", name="Dismiss").click()
        expect(alert).to_have_count(0)

    await browser.run(steps)


@pytest_twisted.ensureDeferred
async def test_unknown_instance_page_says_so(browser, ui, tabs):
    """The page of an unknown instance shows the server's not-found message."""
    tab = await tabs(f"{ui.url}/#/instances/no-such-agent")
    tab.allow(HTTP_404)

    def steps() -> None:
        page = tab.page
        expect(page.locator("main .empty")).to_have_text("No instance named 'no-such-agent'")
        expect(page.locator("#mode")).to_have_text("Live")

    await browser.run(steps)


@pytest_twisted.ensureDeferred
async def test_error_check_catches_console_errors(browser, ui):
    """The no-console-errors check itself: an error the page logs is reported."""
    tab = await browser.open(f"{ui.url}/")
    try:
        await browser.run(tab.page.evaluate, "console.error('boom'); setTimeout(() => null.x)")
        await browser.run(tab.page.wait_for_timeout, 100)
        assert tab.unexpected() == [
            "pageerror: Cannot read properties of null (reading 'x')",
            "console.error: boom",
        ]
        tab.allow("^boom$")
        assert tab.unexpected() == ["pageerror: Cannot read properties of null (reading 'x')"]
    finally:
        await browser.run(tab.close)


@pytest_twisted.ensureDeferred
async def test_log_view_follows_the_file(browser, ui, tabs):
    """Appended lines show within 1 s; scrolling up stops following; rotations are marked."""
    name = unique("logger")
    await new_agent(ui, name, "--heartbeat", "60", start=True)
    log_file = instance_log(Path(ui.data_dir), name)
    tab = await tabs(f"{ui.url}/#/instances/{name}")
    latency: list[float] = []

    def append(*lines: str) -> None:
        with open(log_file, "a") as f:
            f.write("".join(f"{line}\n" for line in lines))

    def steps() -> None:
        page = tab.page
        view = page.locator(".log")
        expect(page.locator(".details .badge")).to_have_text("running")
        expect(view.locator(".line").first).to_contain_text(f"agent {name} starting")

        token = f"marker {time.time()}"
        started = time.monotonic()
        append(token)
        view.locator(".line", has_text=token).wait_for(timeout=1000)
        latency.append(time.monotonic() - started)

        append(*(f"filler {i}" for i in range(300)))
        expect(view.locator(".line").last).to_have_text("filler 299")
        assert view.evaluate("e => e.scrollHeight - e.scrollTop - e.clientHeight") <= 8
        view.evaluate("e => { e.scrollTop = 0; }")
        page.wait_for_function("document.querySelector('.log').scrollTop === 0")
        append("while you were away")
        jump = page.get_by_role("button", name=re.compile(r"^Jump to latest"))
        expect(jump).to_have_text("Jump to latest (1 new)")
        assert view.evaluate("e => e.scrollTop") == 0
        jump.click()
        expect(jump).to_be_hidden()
        assert view.evaluate("e => e.scrollHeight - e.scrollTop - e.clientHeight") <= 8

        append(*(f"flood {i}" for i in range(5200)))
        expect(view.locator(".line").last).to_have_text("flood 5199")
        assert view.evaluate("e => e.childElementCount") == 5000
        expect(page.locator(".log-status")).to_have_text("5000 lines (keeps the last 5000)")

        page.locator('.details [data-action="restart"]').click()
        expect(view.locator(".log-marker")).to_contain_text("log rotated")
        expect(view.locator(".line").last).to_contain_text(f"agent {name} starting")

    await browser.run(steps)
    assert latency[0] < 1.0, f"the line took {latency[0]:.3f} s to show"
    print(f"log line appended -> visible in the page: {latency[0] * 1000:.0f} ms")


@pytest_twisted.ensureDeferred
async def test_message_events_and_details(browser, ui, tabs):
    """A sent message shows as a live row; its detail is redacted; filters reconnect."""
    sender, receiver = unique("from"), unique("to")
    for name in (sender, receiver):
        await new_agent(ui, name)
    code, rule = await post_json(
        f"{ui.url}/api/routing-rules",
        {"from_instance": sender, "to_instance": receiver, "type_pattern": "task.*"},
    )
    assert code == 201, rule
    tab = await tabs(f"{ui.url}/#/messages")

    async def send(correlation: str) -> str:
        code, sent = await post_json(
            f"{ui.url}/api/messages",
            {
                "from_instance": sender,
                "to_instance": receiver,
                "message_type": "task.review",
                "payload": {"task": "look", "password": "hunter2"},
                "correlation_id": correlation,
            },
        )
        assert code == 201, sent
        return sent["id"]

    await browser.run(lambda: expect(tab.page.locator("#mode")).to_have_text("Live"))
    first = await send("corr-one")

    def rows_and_detail() -> None:
        page = tab.page
        row = page.locator(f'tr[data-message-id="{first}"]')
        expect(row).to_have_count(1)
        expect(row).to_contain_text("queued")
        expect(row).to_contain_text("task.review")
        row.focus()
        page.keyboard.press("Enter")
        panel = page.get_by_role("complementary", name="Message")
        expect(panel.locator(".payload")).to_contain_text('"password": "[REDACTED]"')
        expect(panel).not_to_contain_text("hunter2")
        expect(panel.locator(".timeline")).to_contain_text("queued")

        page.get_by_label("Instance").fill("nobody-at-all")
        page.get_by_role("button", name="Apply").click()
        expect(page.locator("#mode")).to_have_text("Live")
        expect(page.locator("tbody tr")).to_have_count(0)
        page.get_by_label("Instance").fill("")
        page.get_by_label("Correlation id").fill("corr-two")
        page.get_by_role("button", name="Apply").click()
        expect(page.locator("#mode")).to_have_text("Live")
        assert page.evaluate("location.hash") == "#/messages?correlation_id=corr-two"

    await browser.run(rows_and_detail)
    second = await send("corr-two")
    await send("corr-three")

    def filtered() -> None:
        page = tab.page
        expect(page.locator(f'tr[data-message-id="{second}"]')).to_have_count(1)
        page.wait_for_timeout(300)
        assert page.locator("tbody tr").evaluate_all(
            "rows => [...new Set(rows.map(r => r.dataset.messageId))]"
        ) == [second]

    await browser.run(filtered)


@pytest_twisted.ensureDeferred
async def test_outage_falls_back_to_polling_and_recovers(browser, tabs, tmp_path, reactor):
    """Daemon down: reconnecting, then polling after 3 failures; back up: live, polling stops."""
    daemon = await Daemon(tmp_path / "outage").start()
    try:
        tab = await tabs(f"{daemon.url}/")
        tab.allow(WS_REFUSED)
        tab.allow(FETCH_REFUSED)
        await browser.run(lambda: expect(tab.page.locator("#mode")).to_have_text("Live"))
        mode = tab.page.locator("#mode")

        base = daemon.url.replace("http", "ws")
        shared = [f"{base}/ws/instances", f"{base}/ws/messages"]
        assert sorted(tab.sockets) == shared, "one socket per shared stream, none per view"

        await daemon.stop()
        down, down_at = time.monotonic(), reactor.seconds()
        await browser.run(lambda: expect(mode).to_have_attribute("data-mode", "reconnecting"))
        await browser.run(
            lambda: expect(mode).to_have_text(
                re.compile(r"^Live updates unavailable -- polling"), timeout=15_000
            )
        )
        to_polling = time.monotonic() - down
        attempts = Counter(url.split("?")[0] for url in tab.sockets)
        assert max(attempts.values()) == 3, f"polling starts at a third failure: {attempts}"
        await browser.run(lambda: expect(mode).to_contain_text("unreachable"))
        # Each shared stream polls after its own third failure: instances, and message counts.
        polled = ("/api/instances?include_archived=false", "/api/messages/stats")

        def both_poll() -> None:
            deadline = time.monotonic() + 20
            while not all(
                any(t > down_at and url.endswith(p) for t, url in tab.requests) for p in polled
            ):
                assert time.monotonic() < deadline, "a shared stream did not fall back to polling"
                tab.page.wait_for_timeout(100)  # the page's events reach us while we wait here

        await browser.run(both_poll)

        daemon = Daemon(tmp_path / "outage", port=daemon.port)
        await daemon.start()
        up = time.monotonic()
        await browser.run(lambda: expect(mode).to_have_text("Live", timeout=40_000))
        to_live = time.monotonic() - up
        polls = [
            t for t, url in tab.requests if url.endswith("/api/instances?include_archived=false")
        ]
        health = [url for _, url in tab.requests if url.endswith("/api/health")]
        assert polls and health, "polling mode did not poll"

        await sleep(max(0.0, polls[-1] + POLL_INSTANCES_S + 0.5 - reactor.seconds()))
        later = [
            t for t, url in tab.requests if url.endswith("/api/instances?include_archived=false")
        ]
        assert later == polls, "polling continued after the stream reconnected"
        print(f"daemon down -> polling: {to_polling:.1f} s; daemon up -> live: {to_live:.1f} s")
    finally:
        await daemon.stop()
        kill_processes_with("CPSTREAM_URL", daemon.url)


@pytest_twisted.ensureDeferred
async def test_refused_streams_poll_and_still_show_changes(browser, tabs, tmp_path):
    """With the one stream slot taken (503), the views poll REST and keep showing changes."""
    daemon = await Daemon(tmp_path / "busy", "--max-connections", "1").start()
    holder = None
    try:
        name = "polled"
        await new_agent(daemon, name, "--heartbeat", "60", start=True)
        log_file = instance_log(Path(daemon.data_dir), name)
        holder = await WSClient.connect(daemon.url, "/ws/messages")
        tab = await tabs(f"{daemon.url}/#/instances/{name}")
        tab.allow(WS_REFUSED)

        def instance_page() -> None:
            page = tab.page
            mode = page.locator("#mode")
            expect(mode).to_have_text("Live updates unavailable -- polling", timeout=15_000)
            expect(page.locator(".details .badge")).to_have_text("running")
            lines = page.locator(".log .line")
            expect(lines.first).to_contain_text(f"agent {name} starting")
            with open(log_file, "a") as f:
                f.write("a line read by polling\n")
            expect(lines.last).to_have_text("a line read by polling", timeout=5_000)
            expect(lines.filter(has_text=f"agent {name} starting")).to_have_count(1)

        await browser.run(instance_page)
        await new_agent(daemon, "late")

        def dashboard() -> None:
            page = tab.page
            page.evaluate("location.hash = '#/'")
            expect(page.locator("#mode")).to_have_text(
                "Live updates unavailable -- polling", timeout=15_000
            )
            expect(card(page, name).locator(".badge")).to_have_text("running")
            late = card(page, "late")
            expect(late.locator(".badge")).to_have_text("stopped")
            late.locator('[data-action="start"]').click()
            expect(late.locator(".badge")).to_have_text(
                re.compile("starting|running"), timeout=2_000
            )

        await browser.run(dashboard)
    finally:
        if holder is not None:
            await holder.close()
        await daemon.stop()
        kill_processes_with("CPSTREAM_URL", daemon.url)


@pytest_twisted.ensureDeferred
async def test_screenshot_narrow_and_keyboard(browser, tabs, tmp_path):
    """Demo-like dashboard screenshot; every view readable at 360 px (no sideways scroll);
    actions reachable by keyboard."""
    async with running_daemon(tmp_path / "shot") as daemon:
        await new_agent(daemon, "agent-2", start=True)
        await new_agent(daemon, "agent-1", "--send-to", "agent-2", start=True)
        await post_json(
            f"{daemon.url}/api/routing-rules",
            {"from_instance": "agent-1", "to_instance": "agent-2", "type_pattern": "task.*"},
        )
        await new_agent(daemon, "retired")
        await post_json(f"{daemon.url}/api/instances/retired/archive")
        await new_agent(daemon, "agent-3")
        deadline = time.monotonic() + 15
        while not (messages := (await get_json(f"{daemon.url}/api/messages?limit=1"))[1]):
            assert time.monotonic() < deadline, "agent-1 sent no message"
            await sleep(0.2)
        tab = await tabs(f"{daemon.url}/")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

        def steps() -> None:
            page = tab.page
            page.get_by_label("Show archived").check()
            expect(page.locator("article.card")).to_have_count(4)
            expect(card(page, "agent-1").locator(".uptime")).to_have_text(re.compile(r"\ds$"))
            page.screenshot(path=str(ARTIFACTS / "instances.png"))

            page.set_viewport_size({"width": 360, "height": 780})
            for route in (
                "#/",
                "#/instances/agent-2",
                "#/messages",
                "#/messages/dead-letters",
                f"#/messages/{messages[0]['id']}",
            ):
                page.evaluate(f"location.hash = '{route}'")
                page.locator("main > *").first.wait_for()
                page.wait_for_timeout(300)
                width = page.evaluate("document.documentElement.scrollWidth")
                shot = re.sub(r"[^a-z0-9]+", "-", route).strip("-") or "dashboard"
                page.screenshot(path=str(ARTIFACTS / f"narrow-{shot}.png"))
                assert width <= 360, f"{route} overflows a 360 px screen: {width} px"
            page.set_viewport_size({"width": 1280, "height": 800})

            page.evaluate("location.hash = '#/'")
            expect(card(page, "agent-3")).to_have_count(1)
            page.locator("body").focus()
            for _ in range(40):
                page.keyboard.press("Tab")
                if page.evaluate("document.activeElement.dataset.action") == "start":
                    break
            else:
                raise AssertionError("no Start button reachable with Tab")
            page.keyboard.press("Enter")
            expect(card(page, "agent-3").locator(".badge")).to_have_text(
                re.compile("starting|running")
            )
            page.get_by_role("button", name="New instance").focus()
            page.keyboard.press("Enter")
            expect(page.get_by_role("dialog")).to_be_visible()
            page.keyboard.press("Escape")
            expect(page.get_by_role("dialog")).to_have_count(0)

        await browser.run(steps)


@pytest_twisted.ensureDeferred
async def test_without_a_session_the_login_page_shows_and_a_pasted_token_logs_in(browser, ui, tabs):
    """No session: the dashboard shows the login page (once, no loop); a wrong token says
    so; the operator token logs in; Log out ends the session and shows the login page."""
    await browser.run(browser.log_out_everywhere)
    token = read_token(Path(ui.data_dir))
    tab = await browser.open(f"{ui.url}/", log_in=False)

    def steps() -> None:
        page = tab.page
        page.wait_for_url(f"{ui.url}/login")
        expect(page.get_by_role("heading", name="Log in")).to_be_visible()
        page.get_by_label("Operator token").fill("not-the-token")
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("alert")).to_have_text("That is not the operator token.")
        page.get_by_label("Operator token").fill(token)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{ui.url}/")
        expect(page.locator("#mode")).to_have_attribute("data-mode", "live")
        page.get_by_role("button", name="Log out").click()
        page.wait_for_url(f"{ui.url}/login")
        page.goto(f"{ui.url}/#/messages")
        page.wait_for_url(f"{ui.url}/login")

    tab.allow("401")
    try:
        await browser.run(steps)
        assert tab.unexpected() == []
    finally:
        await browser.run(tab.close)
        await browser.run(browser.log_out_everywhere)
