"""Request policy: Host, Origin, Sec-Fetch-Site, content type and body size."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer, protocol
from twisted.internet.address import IPv4Address
from twisted.web.test.requesthelper import DummyRequest

from cpstream.web.errors import HTTPError as Refusal
from cpstream.web.guard import Guard
from tests.support import get_json


def request(method=b"GET", host=b"127.0.0.1:18800", path=b"/", **headers) -> DummyRequest:
    req = DummyRequest([b""])
    req.method = method
    req.path = path
    req.isSecure = lambda: False
    req.getHost = lambda: IPv4Address("TCP", "127.0.0.1", 18800)
    if host is not None:
        req.requestHeaders.setRawHeaders(b"host", host if isinstance(host, list) else [host])
    for name, value in headers.items():
        req.requestHeaders.setRawHeaders(
            name.replace("_", "-").encode(), value if isinstance(value, list) else [value]
        )
    return req


def refusal(req, guard=None) -> int | None:
    try:
        (guard or Guard()).check(req)
    except Refusal as e:
        return e.status
    return None


@pytest.mark.parametrize(
    "host",
    [b"127.0.0.1:18800", b"localhost:18800", b"LOCALHOST:18800", b"[::1]:18800"],
)
def test_loopback_hosts_with_our_port_pass(host):
    """Loopback names with the listening port are served."""
    assert refusal(request(host=host)) is None


@pytest.mark.parametrize(
    "host,status",
    [
        (b"evil.example:18800", 403),
        (b"127.0.0.1:18801", 403),
        (b"127.0.0.1", 403),
        (b"127.0.0.1.evil.example:18800", 403),
        (None, 400),
        ([b"127.0.0.1:18800", b"127.0.0.1:18800"], 400),
        (b"127.0.0.1:port", 400),
    ],
)
def test_foreign_missing_or_duplicate_host_is_refused(host, status):
    """DNS rebinding: a foreign Host is 403; a missing, duplicate or malformed one 400."""
    assert refusal(request(host=host)) == status


def test_allowed_host_option():
    """--allowed-host names are served, with or without a port."""
    guard = Guard(allowed_hosts=["cp.lan", "other.lan:9000"])
    assert refusal(request(host=b"cp.lan:443"), guard) is None
    assert refusal(request(host=b"other.lan:9000"), guard) is None
    assert refusal(request(host=b"other.lan:9001"), guard) == 403


@pytest.mark.parametrize(
    "origin,status",
    [
        (None, None),
        (b"http://127.0.0.1:18800", None),
        (b"http://evil.example", 403),
        (b"null", 403),
        (b"http://127.0.0.1:18801", 403),
        (b"https://127.0.0.1:18800", 403),
        (b"http://127.0.0.1.evil.example:18800", 403),
        ([b"http://127.0.0.1:18800", b"http://evil.example"], 403),
    ],
)
def test_origin_on_mutations(origin, status):
    """Mutations from a foreign, null or wrong-port origin are 403; no Origin is fine."""
    extra = {} if origin is None else {"origin": origin}
    req = request(b"POST", content_type=b"application/json", **extra)
    assert refusal(req) == status


def test_origin_on_websocket_upgrades():
    """Upgrades are checked like mutations, including Sec-WebSocket-Origin (version 8)."""
    assert refusal(request(upgrade=b"websocket", origin=b"http://evil.example")) == 403
    legacy = request(upgrade=b"websocket", sec_websocket_origin=b"http://evil.example")
    assert refusal(legacy) == 403
    assert refusal(request(upgrade=b"websocket", origin=b"http://127.0.0.1:18800")) is None
    assert refusal(request(origin=b"http://evil.example")) is None  # plain GET: read-only


def test_allowed_origin_option():
    """--allowed-origin origins may mutate."""
    guard = Guard(allowed_origins=["http://ui.lan:3000"])
    req = request(b"POST", origin=b"http://ui.lan:3000", content_type=b"application/json")
    assert refusal(req, guard) is None


@pytest.mark.parametrize(
    "site,status",
    [(b"cross-site", 403), (b"same-site", 403), (b"same-origin", None), (b"none", None)],
)
def test_sec_fetch_site(site, status):
    """Mutations marked cross-site or same-site by the browser are refused."""
    req = request(b"DELETE", sec_fetch_site=site)
    assert refusal(req) == status


@pytest.mark.parametrize("path", [b"/api/instances/b/messages/pending", b"/api/health", b"/ws/x"])
@pytest.mark.parametrize(
    "headers,status",
    [
        ({"sec_fetch_site": b"cross-site"}, 403),
        ({"sec_fetch_site": b"same-site"}, 403),
        ({"origin": b"http://evil.example"}, 403),
        ({"origin": b"null"}, 403),
        ({"sec_fetch_site": b"same-origin", "origin": b"http://127.0.0.1:18800"}, None),
        ({}, None),
    ],
)
def test_no_cross_site_request_reaches_data_not_even_a_get(path, headers, status):
    """A GET to /api/ or /ws/ from another site is refused too (a GET may lease a message)."""
    assert refusal(request(b"GET", path=path, **headers)) == status


def test_static_files_take_cross_site_gets():
    """The dashboard's files hold no data: a cross-site GET of one is fine."""
    assert refusal(request(b"GET", path=b"/app.css", sec_fetch_site=b"cross-site")) is None


@pytest.mark.parametrize(
    "content_type,length,status",
    [
        (b"application/json", b"2", None),
        (b"application/json; charset=utf-8", b"2", None),
        (b"text/plain", b"2", 415),
        (b"application/x-www-form-urlencoded", b"2", 415),
        (b"multipart/form-data; boundary=x", b"2", 415),
        (None, b"2", 415),
        (None, None, None),
        (b"text/plain", None, 415),
    ],
)
def test_mutation_bodies_must_be_json(content_type, length, status):
    """Only application/json bodies are accepted (form CSRF is impossible); no body is fine."""
    extra = {}
    if content_type is not None:
        extra["content_type"] = content_type
    if length is not None:
        extra["content_length"] = length
    assert refusal(request(b"POST", **extra)) == status


def test_options_is_405():
    """OPTIONS (CORS preflight) is refused: no cross-origin access is offered."""
    assert refusal(request(b"OPTIONS")) == 405


class RawClient(protocol.Protocol):
    def __init__(self) -> None:
        self.received = b""
        self.closed: defer.Deferred = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted API)
        self.received += data

    def connectionLost(self, reason) -> None:  # noqa: N802 (Twisted API)
        self.closed.callback(self.received)


async def raw_exchange(reactor, port: int, data: bytes) -> bytes:
    client = RawClient()
    endpoint_protocol = await protocol.ClientCreator(reactor, lambda: client).connectTCP(
        "127.0.0.1", port
    )
    endpoint_protocol.transport.write(data)
    return await client.closed.addTimeout(10, reactor)


@pytest_twisted.ensureDeferred
async def test_declared_huge_body_is_refused_before_reading(cp, reactor):
    """A 64 MiB declared body gets 413 at once, with no body bytes sent at all."""
    port = cp.service.web.port.getHost().port
    answer = await raw_exchange(
        reactor,
        port,
        b"POST /api/instances HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
        b"Content-Type: application/json\r\nContent-Length: 67108864\r\n\r\n" % port,
    )
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b'"error"' in answer


@pytest_twisted.ensureDeferred
async def test_foreign_host_is_refused_everywhere(cp, reactor):
    """A foreign Host is 403 on the UI, REST reads and REST writes, with no side effect."""
    port = cp.service.web.port.getHost().port
    for request_line, body in [
        (b"GET / HTTP/1.1", b""),
        (b"GET /api/instances HTTP/1.1", b""),
        (b"POST /api/instances HTTP/1.1", b'{"name":"x"}'),
    ]:
        answer = await raw_exchange(
            reactor,
            port,
            request_line + b"\r\nHost: evil.example:%d\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (port, len(body), body),
        )
        assert answer.startswith(b"HTTP/1.1 403 "), answer
    assert await get_json(cp.api("/instances")) == (200, [])
