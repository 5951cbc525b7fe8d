"""The site's access log: buffered, one write a second, nothing lost at a clean stop."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.web.resource import Resource

from cpstream.web.guard import Guard
from cpstream.web.site import ControlPlaneSite
from tests.support import NO_AUTH


class Ok(Resource):
    isLeaf = True

    def render(self, request: Any) -> bytes:
        return b"{}"


@pytest.fixture
def access() -> Any:
    """The access-log events published while the test runs."""
    events: list[dict] = []

    def observe(event: dict) -> None:
        if event.get("log_namespace") == "cpstream.access":
            events.append(event)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


def post(site: ControlPlaneSite, count: int) -> None:
    for _ in range(count):
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        channel.makeConnection(StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 8080)))
        channel.dataReceived(
            b"POST /x HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Length: 0\r\n\r\n"
        )


def test_access_lines_are_written_once_a_second_in_one_event(access):
    """Changes are logged, not one write per request: one event a second holds them all."""
    clock = Clock()
    site = ControlPlaneSite(Ok(), Guard(), clock, NO_AUTH)
    site.startFactory()
    post(site, 50)
    assert access == []
    clock.advance(1.0)
    assert len(access) == 1 and access[0]["count"] == 50
    assert access[0]["lines"].count('"POST /x HTTP/1.1" 200') == 50


def test_a_clean_stop_loses_no_access_line(access):
    """Stopping the listener writes what is buffered at once."""
    clock = Clock()
    site = ControlPlaneSite(Ok(), Guard(), clock, NO_AUTH)
    site.startFactory()
    post(site, 3)
    site.stopFactory()
    assert [event["count"] for event in access] == [3]


def test_the_access_log_can_be_off(access):
    """--no-access-log: nothing is logged."""
    clock = Clock()
    site = ControlPlaneSite(Ok(), Guard(), clock, NO_AUTH, access_log=False)
    site.startFactory()
    post(site, 3)
    clock.advance(2)
    site.stopFactory()
    assert access == []
