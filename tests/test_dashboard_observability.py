"""The dashboard as a triage tool, end to end: real Chromium, a real daemon, real children.

What each agent costs (CPU and memory figures and sparklines), why it last ended, its
lifecycle history, the header summary, and dead letters replayed from the UI.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from typing import Any

import pytest_twisted

from tests import browser as kit
from tests.browser import card, expect, free_port, new_agent, running_daemon, unique
from tests.support import (
    ARTIFACTS,
    SLEEPER,
    Daemon,
    create,
    get_json,
    post_json,
    sleep,
)

# The shared fixtures (tests/browser.py), under the names the tests ask for.
chromium, browser, ui, tabs = kit.chromium, kit.browser, kit.ui, kit.tabs

# Idle for a few samples (2 s apart), then burn a core until stopped.
BURNER = [sys.executable, "-c", "import time\ntime.sleep(7)\nwhile True:\n    pass"]
SPARK_HEIGHT, SPARK_PAD = 32.0, 2.0
POINT = re.compile(r"[ML](-?[\d.]+),(-?[\d.]+)")


def spark_values(path: Any) -> list[float]:
    """The values a sparkline draws, as fractions of its scale (0 bottom, 1 top), read back
    from the SVG path (a locator) the page drew."""
    d = path.get_attribute("d") or ""
    span = SPARK_HEIGHT - 2 * SPARK_PAD
    return [(SPARK_HEIGHT - SPARK_PAD - float(y)) / span for _, y in POINT.findall(d)]


async def started(daemon: Daemon, name: str, command: list[str], **fields: Any) -> dict:
    """An instance of ``command`` (health ``process``), started; its REST body once running."""
    await create(daemon.url, name, port=free_port(), command=command, health="process", **fields)
    code, answer = await post_json(f"{daemon.url}/api/instances/{name}/start")
    assert code == 200, answer
    deadline = time.monotonic() + 15
    while True:
        _, body = await get_json(f"{daemon.url}/api/instances/{name}")
        if body["status"] == "running":
            return body
        assert time.monotonic() < deadline, body
        await sleep(0.1)


@pytest_twisted.ensureDeferred
async def test_crash_shows_its_exit_reason_on_the_card_and_in_the_history(browser, ui, tabs):
    """A child that exits 3 and one killed by SIGKILL: each card says why, with the
    restart count; the instance page's history gets the crash live, with its reason."""
    crasher, victim = unique("crasher"), unique("victim")
    await new_agent(ui, crasher, "--crash-after", "1", "--heartbeat", "60")
    body = await started(ui, victim, SLEEPER, restart="never")
    tab = await tabs(f"{ui.url}/")

    def crash() -> None:
        page = tab.page
        this = card(page, crasher)
        expect(this.locator(".fact-last-exit")).to_have_text("\u2014")
        expect(this.locator(".fact-restarts")).to_have_text("0")
        this.locator('[data-action="start"]').click()
        expect(this.locator(".fact-last-exit")).to_have_text("exited 3", timeout=15_000)
        expect(this.locator(".fact-last-exit")).to_have_class(re.compile(r"\bbad\b"))
        expect(this.locator(".fact-restarts")).to_have_text(
            re.compile(r"^[1-9]\d*$"), timeout=15_000
        )

        page.evaluate(f"location.hash = '#/instances/{victim}'")
        expect(page.locator(".details .badge")).to_have_text("running")
        history = page.get_by_role("list", name="Lifecycle history")
        expect(history.locator("li").first).to_contain_text("running")

    await browser.run(crash)
    os.kill(body["pid"], signal.SIGKILL)

    def killed() -> None:
        page = tab.page
        reason = "killed by SIGKILL (9)"
        expect(page.locator(".details .badge")).to_have_text("crashed")
        expect(page.locator(".details .fact-last-exit")).to_have_text(reason)
        newest = page.get_by_role("list", name="Lifecycle history").locator("li").first
        expect(newest.locator(".badge")).to_have_text("crashed")
        expect(newest.locator(".exit")).to_have_text(reason)
        page.evaluate("location.hash = '#/'")
        expect(card(page, victim).locator(".fact-last-exit")).to_have_text(reason)
        expect(card(page, victim).locator(".badge")).to_have_text("crashed")

    await browser.run(killed)
    await post_json(f"{ui.url}/api/instances/{crasher}/stop")


@pytest_twisted.ensureDeferred
async def test_a_cpu_burning_agent_draws_a_rising_cpu_sparkline(browser, ui, tabs):
    """An agent idle for a few samples and then burning a core: its card's CPU sparkline
    (an SVG path of our own) goes from the bottom to well up, and the CPU figure follows."""
    name = unique("burner")
    await started(ui, name, BURNER)
    tab = await tabs(f"{ui.url}/")
    seen: list[list[float]] = []

    def rises() -> None:
        page = tab.page
        path = card(page, name).locator(".spark-cpu path")
        expect(path).to_have_attribute("d", re.compile(r"^M"), timeout=10_000)
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            values = spark_values(path)
            seen.append(values)
            low = next((i for i, v in enumerate(values) if v <= 0.1), None)
            if low is not None and any(v >= 0.25 for v in values[low + 1 :]) and values[-1] >= 0.25:
                break
            page.wait_for_timeout(500)
        else:
            raise AssertionError(f"the CPU sparkline did not rise: {seen[-1]}")
        figure = card(page, name).locator(".fact-cpu").inner_text()
        assert float(figure.rstrip("%")) >= 25, figure
        label = card(page, name).locator(".spark-cpu")
        expect(label).to_have_attribute("aria-label", re.compile(r"^CPU, last \d+ (s|min): now "))
        memory = spark_values(card(page, name).locator(".spark-rss path"))
        assert memory and all(0 < v <= 1 for v in memory), memory

    try:
        await browser.run(rises)
    finally:
        await post_json(f"{ui.url}/api/instances/{name}/stop")
    print(f"CPU sparkline rose after {len(seen)} reads: {[round(v, 2) for v in seen[-1]]}")


async def dead_letter(daemon: Daemon, sender: str, receiver: str, detail: str) -> str:
    """A message from ``sender`` to ``receiver`` leased and failed once under a rule with
    no retries: a dead letter. Its id."""
    code, sent = await post_json(
        f"{daemon.url}/api/messages",
        {"from_instance": sender, "to_instance": receiver, "message_type": "task.parse"}
        | {"payload": {"text": "x"}},
    )
    assert code == 201, sent
    _, leased = await get_json(f"{daemon.url}/api/instances/{receiver}/messages/pending")
    message = leased["message"]
    assert message["id"] == sent["id"], leased
    code, failed = await post_json(
        f"{daemon.url}/api/messages/{message['id']}/fail",
        {"lease_id": message["lease_id"], "detail": detail},
    )
    assert (code, failed["status"]) == (200, "dead_letter"), failed
    return message["id"]


@pytest_twisted.ensureDeferred
async def test_a_dead_letter_is_replayed_from_the_ui_after_a_confirmation(browser, tabs, tmp_path):
    """The dead-letter tab lists it with its failure; Replay asks first (Escape keeps it),
    confirmed by keyboard it leaves the tab; the header and the counts follow live; its
    page's timeline shows the replay and then its delivery, live."""
    async with running_daemon(tmp_path / "dead") as daemon:
        sender, receiver = unique("from"), unique("to")
        for name in (sender, receiver):
            await new_agent(daemon, name)
        code, rule = await post_json(
            f"{daemon.url}/api/routing-rules",
            {"from_instance": sender, "to_instance": receiver, "type_pattern": "task.*"}
            | {"max_retries": 0},
        )
        assert code == 201, rule
        tab = await tabs(f"{daemon.url}/#/messages/dead-letters")
        await browser.run(lambda: expect(tab.page.locator("#mode")).to_have_text("Live"))
        message_id = await dead_letter(daemon, sender, receiver, "could not parse the task")

        def replay() -> None:
            page = tab.page
            row = page.locator(f'tr[data-message-id="{message_id}"]')
            expect(row.locator(".failure")).to_have_text(
                "retries exhausted: could not parse the task"
            )
            dead = page.locator('#summary [data-count="dead-letters"]')
            expect(dead).to_have_text("1 dead letter")
            expect(page.locator("#summary [data-count='in-flight']")).to_have_text("0 in flight")
            expect(page.get_by_role("link", name="Dead letters (1)")).to_be_visible()
            counts = page.get_by_role("group", name="Messages by status")
            expect(counts.locator('[data-status="dead_letter"]')).to_have_text("1 dead letter")

            button = row.get_by_role("button", name=re.compile("^Replay"))
            button.focus()
            expect(button).to_be_focused()
            page.keyboard.press("Enter")
            dialog = page.get_by_role("dialog")
            expect(dialog).to_contain_text(f"goes back to {receiver}'s queue")
            expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
            page.keyboard.press("Escape")
            expect(dialog).to_have_count(0)
            expect(row).to_have_count(1)

            expect(button).to_be_enabled()  # again, once its dialog's close event ran
            button.focus()
            expect(button).to_be_focused()
            page.keyboard.press("Enter")
            expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
            page.keyboard.press("Tab")
            expect(dialog.get_by_role("button", name="Replay")).to_be_focused()
            page.keyboard.press("Enter")
            expect(row).to_have_count(0)
            expect(page.locator(".note-success")).to_contain_text(
                f"Replayed task.parse to {receiver}"
            )
            expect(page.locator("table.dead-letters + .empty")).to_have_text("No dead letters.")
            expect(dead).to_have_text("0 dead letters")
            expect(page.locator("#summary [data-count='in-flight']")).to_have_text("1 in flight")
            expect(counts.locator('[data-status="queued"]')).to_have_text("1 queued")

            page.evaluate(f"location.hash = '#/messages/{message_id}'")
            timeline = page.get_by_role("list", name="Timeline")
            expect(timeline.locator("li").last).to_have_attribute("data-event", "replayed")
            expect(page.locator(".message-page .card-head .badge")).to_have_text("queued")

        await browser.run(replay)
        _, message = await get_json(f"{daemon.url}/api/messages/{message_id}")
        assert message["status"] == "queued", message
        _, leased = await get_json(f"{daemon.url}/api/instances/{receiver}/messages/pending")
        code, _ = await post_json(
            f"{daemon.url}/api/messages/{message_id}/acknowledge",
            {"lease_id": leased["message"]["lease_id"]},
        )
        assert code == 200

        def delivered_live() -> None:
            page = tab.page
            events = page.get_by_role("list", name="Timeline").locator("li")
            expect(events.last).to_have_attribute("data-event", "acknowledged")
            assert [e for e in events.evaluate_all("l => l.map(e => e.dataset.event)")] == [
                "queued",
                "delivered",
                "failed",
                "dead_lettered",
                "replayed",
                "delivered",
                "acknowledged",
            ]
            expect(page.locator(".message-page .card-head .badge")).to_have_text("acknowledged")
            expect(page.get_by_role("button", name="Replay")).to_be_hidden()
            expect(page.locator("#summary [data-count='in-flight']")).to_have_text("0 in flight")

        await browser.run(delivered_live)


@pytest_twisted.ensureDeferred
async def test_the_header_counts_instances_by_status_live(browser, ui, tabs):
    """The header summary counts the instances by status from the stream, on every view."""
    tab = await tabs(f"{ui.url}/#/messages")

    def count(page: Any, status: str) -> int:
        pill = page.locator(f'#summary [data-status="{status}"]')
        return int(pill.inner_text().split()[0]) if pill.count() else 0

    before: dict[str, int] = {}

    def read() -> None:
        page = tab.page
        expect(page.locator("#mode")).to_have_text("Live")
        page.locator("#summary .pill").first.wait_for()
        before.update({s: count(page, s) for s in ("running", "stopped")})

    await browser.run(read)
    name = unique("counted")
    await new_agent(ui, name)

    def counted() -> None:
        page = tab.page
        stopped = page.locator('#summary [data-status="stopped"]')
        expect(stopped).to_have_text(f"{before['stopped'] + 1} stopped")

    await browser.run(counted)
    await post_json(f"{ui.url}/api/instances/{name}/start")
    await browser.run(
        lambda: expect(tab.page.locator('#summary [data-status="running"]')).to_have_text(
            f"{before['running'] + 1} running", timeout=15_000
        )
    )
    await post_json(f"{ui.url}/api/instances/{name}/stop")


def screenshot(page: Any, name: str, below: str) -> None:
    """``name`` into the test artifacts (and ``CPSTREAM_SCREENSHOT_DIR``, for the README's):
    the page from the top to a little below the last ``below`` element."""
    box = page.locator(below).last.bounding_box()
    clip = {"x": 0, "y": 0, "width": page.viewport_size["width"]}
    clip["height"] = min(box["y"] + box["height"] + 24, page.viewport_size["height"])
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for folder in filter(None, (str(ARTIFACTS), os.environ.get("CPSTREAM_SCREENSHOT_DIR"))):
        page.screenshot(path=os.path.join(folder, name), clip=clip)


@pytest_twisted.ensureDeferred
async def test_the_demo_shows_it_all_within_a_minute(browser, tabs, tmp_path):
    """``--demo`` on an empty data dir: within a minute the cards draw CPU and memory, one
    agent visibly burns CPU, and there is a dead letter (with its failure) to act on. Its
    screenshots are the README's: ``CPSTREAM_SCREENSHOT_DIR=docs`` writes them there, after
    a minute of samples so that the sparklines span their box."""
    async with running_daemon(tmp_path / "demo", "--demo") as daemon:
        tab = await tabs(f"{daemon.url}/")
        for_readme = bool(os.environ.get("CPSTREAM_SCREENSHOT_DIR"))

        def everything() -> None:
            page = tab.page
            page.set_viewport_size({"width": 980, "height": 760})
            cards = page.locator("article.card")
            expect(cards).to_have_count(2, timeout=15_000)
            expect(page.locator(".card .badge", has_text="running")).to_have_count(2)
            expect(page.locator("#mode")).to_have_text("Live")
            dead = page.locator('#summary [data-count="dead-letters"]')
            try:
                expect(dead).to_have_text(re.compile(r"^[1-9]\d* dead letters?$"), timeout=60_000)
            except AssertionError as error:
                counts = page.evaluate("fetch('/api/messages/stats').then(r => r.json())")
                raise AssertionError(f"{error}\nthe server counts {counts}") from None
            deadline = time.monotonic() + (120 if for_readme else 60)
            enough = 30 if for_readme else 10  # samples, 2 s apart
            while time.monotonic() < deadline:
                drawn = [spark_values(c.locator(".spark-cpu path")) for c in cards.all()]
                peaks = [max(values) for values in drawn if len(values) >= enough]
                if peaks and max(peaks) >= 0.1:
                    break
                page.wait_for_timeout(1000)
            else:
                raise AssertionError(f"no demo agent drew {enough} samples with a CPU peak")
            screenshot(page, "dashboard.png", "article.card")

            page.evaluate("location.hash = '#/messages/dead-letters'")
            failure = page.locator("table.dead-letters .failure").first
            expect(failure).to_have_text(re.compile(r"^retries exhausted: .+"))
            screenshot(page, "dead-letters.png", "table.dead-letters")

        await browser.run(everything)
