"""Cases 1-4: Origin and Host matrices, CSRF, and the Autobahn surface, on the real daemon."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource

from cpstream.web.guard import Guard
from cpstream.web.site import ControlPlaneSite
from tests import wsraw
from tests.hardening import raw
from tests.hardening.report import record
from tests.support import NO_AUTH, get_json, global_reactor, post_json, sleep

ALLOWED = "http://cp.example:9000"
STREAMS = ("/ws/instances", "/ws/instances/a/logs", "/ws/messages")


def leaks(response: raw.Response) -> list[str]:
    """What a response must never carry: CORS headers, a version in Server, HTML, a redirect."""
    found = [name for name in response.headers if name.startswith("access-control-")]
    server = response.header("server") or ""
    if server not in ("", "cpstream"):
        found.append(f"server: {server}")
    if "location" in response.headers:
        found.append("location")
    if b"<html" in response.body.lower() or b"autobahn" in response.body.lower():
        found.append("html body")
    return found


async def state(url: str) -> tuple:
    """Everything a forged request could change, as the REST API shows it."""
    instances = (await get_json(url + "/api/instances?include_archived=true"))[1]
    rules = (await get_json(url + "/api/routing-rules"))[1]
    messages = (await get_json(url + "/api/messages?limit=1000"))[1]
    return instances, rules, messages


async def upgrades(port: int, path: str, host: str | None, headers: list, version: str = "13"):
    """Attempt one upgrade; the response, and every byte that followed it within 300 ms."""
    client = await raw.connect(port)
    client.write(wsraw.upgrade(path, host, headers, version))
    answer = await client.response()
    await sleep(0.3)
    after = client.data[len(client.data) - len(answer.rest) :]
    client.abort()
    return answer, after


@pytest_twisted.ensureDeferred
async def test_origin_matrix_on_every_stream(daemons):
    """Only same-origin, --allowed-origin and no Origin upgrade; every other Origin is 403."""
    daemon = await daemons.start("--allowed-origin", ALLOWED)
    port = daemon.port
    await post_json(daemon.url + "/api/instances", {"name": "a"})
    same = f"http://127.0.0.1:{port}"
    matrix = [
        ("same origin", [("Origin", same)], "13", 101),
        ("--allowed-origin", [("Origin", ALLOWED)], "13", 101),
        ("no Origin", [], "13", 101),
        ("foreign", [("Origin", "http://evil.example")], "13", 403),
        ("null", [("Origin", "null")], "13", 403),
        ("wrong port", [("Origin", f"http://127.0.0.1:{port + 1}")], "13", 403),
        ("other scheme", [("Origin", f"https://127.0.0.1:{port}")], "13", 403),
        ("suffix trick", [("Origin", "http://127.0.0.1.evil.example")], "13", 403),
        ("suffix trick, port", [("Origin", f"http://127.0.0.1:{port}.evil.example")], "13", 403),
        ("userinfo trick", [("Origin", f"http://127.0.0.1:{port}@evil.example")], "13", 403),
        ("duplicate, one foreign", [("Origin", same), ("Origin", "http://evil.example")], "13",
         403),
        ("duplicate, same twice", [("Origin", same), ("Origin", same)], "13", 403),
        ("v13 + foreign Sec-WebSocket-Origin", [("Origin", same),
         ("Sec-WebSocket-Origin", "http://evil.example")], "13", 403),
        ("v8 + foreign Sec-WebSocket-Origin",
         [("Sec-WebSocket-Origin", "http://evil.example")], "8", 403),
        ("v8 + foreign Origin", [("Origin", "http://evil.example")], "8", 403),
    ]  # fmt: skip
    attempts = [
        (name, path, expected, upgrades(port, path, f"127.0.0.1:{port}", headers, version))
        for name, headers, version, expected in matrix
        for path in STREAMS
    ]
    results = await defer.gatherResults([defer.ensureDeferred(a[3]) for a in attempts])
    wrong, refused, frames_after_403 = [], 0, 0
    for (name, path, expected, _), (answer, after) in zip(attempts, results, strict=True):
        if answer.status != expected or leaks(answer):
            wrong.append((name, path, answer.status, leaks(answer)))
        if expected == 403:
            refused += 1
            frames_after_403 += len(after) > 0
            assert answer.json()["error"], (name, path)
        else:
            assert wsraw.read_frames(after).messages, f"{name} {path}: no first frame"
    assert not wrong, wrong
    assert frames_after_403 == 0
    record(
        "1 origin matrix",
        f"{len(matrix)} Origin variants x 3 streams ({len(attempts)} upgrades)",
        "allowed/none -> 101 and a first frame; every other variant -> 403 JSON",
        f"{refused}/{refused} refused with 403, 0 bytes after any 403, "
        f"{len(attempts) - refused} allowed upgrades",
        refused=refused,
        upgrades=len(attempts) - refused,
    )


@pytest_twisted.ensureDeferred
async def test_host_matrix_dns_rebinding(daemons):
    """A foreign Host is 403 with no side effect, a missing or duplicate one 400, everywhere."""
    daemon = await daemons.start()
    port = daemon.port
    hosts = [
        ("foreign", [f"evil.example:{port}"], 403),
        ("suffix trick", [f"127.0.0.1.evil.example:{port}"], 403),
        ("no port", ["localhost"], 403),
        ("wrong port", [f"127.0.0.1:{port + 1}"], 403),
        ("ipv6 wrong port", [f"[::1]:{port + 1}"], 403),
        ("missing", [], 400),
        ("duplicate", [f"127.0.0.1:{port}", f"127.0.0.1:{port}"], 400),
        ("duplicate, one foreign", [f"127.0.0.1:{port}", f"evil.example:{port}"], 400),
        ("malformed", ["127.0.0.1:http"], 400),
    ]
    ok_hosts = [f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"]

    def targets(host_headers: list[str], tag: str) -> list[tuple[str, bytes, int]]:
        extra = [("Host", h) for h in host_headers]
        body = f'{{"name": "h-{tag}"}}'.encode()
        json_post = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        return [
            ("GET /", wsraw.request("GET", "/", extra), 200),
            ("GET /api/instances", wsraw.request("GET", "/api/instances", extra), 200),
            ("POST /api/instances", wsraw.request("POST", "/api/instances", extra + json_post,
                                                  body), 201),
            ("upgrade /ws/instances", wsraw.upgrade("/ws/instances", None, extra), 101),
        ]  # fmt: skip

    before = await state(daemon.url)
    wrong, refused = [], 0
    for index, (name, values, expected) in enumerate(hosts):
        for target, data, _ in targets(values, f"bad{index}"):
            answer = await raw.exchange(port, data)
            refused += 1
            if answer.status != expected or leaks(answer):
                wrong.append((name, target, answer.status))
    assert not wrong, wrong
    assert await state(daemon.url) == before, "a refused request changed something"
    for index, host in enumerate(ok_hosts):
        for target, data, expected in targets([host], f"ok{index}"):
            answer = await raw.exchange(port, data)
            assert answer.status == expected, (host, target, answer.status)
    names = sorted(i["name"] for i in (await state(daemon.url))[0])
    assert names == ["h-ok0", "h-ok1", "h-ok2"]
    record(
        "2 host matrix",
        f"{len(hosts)} Host variants x (GET /, REST GET, REST POST, upgrade)",
        "foreign -> 403, missing/duplicate/malformed -> 400, state unchanged; "
        "loopback names with our port served",
        f"{refused}/{refused} refused as expected, 0 side effects",
        refused=refused,
    )


@pytest_twisted.ensureDeferred
async def test_csrf_forms_foreign_origins_and_preflights_change_nothing(daemons):
    """Form, text and multipart POSTs, foreign Origins, cross-site fetches, OPTIONS: refused."""
    daemon = await daemons.start()
    port, url = daemon.port, daemon.url
    for name in ("a", "b"):
        await post_json(url + "/api/instances", {"name": name, "health": "process"})
    code, rule = await post_json(
        url + "/api/routing-rules",
        {"from_instance": "a", "to_instance": "b", "type_pattern": "task.*"},
    )
    assert code == 201
    host = f"127.0.0.1:{port}"
    message = b'{"from_instance":"a","to_instance":"b","message_type":"task.x","payload":{}}'
    boundary = "xyz"
    multipart = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\nforged\r\n'
        f"--{boundary}--\r\n"
    ).encode()

    def post(path: str, body: bytes, *headers: tuple[str, str]) -> bytes:
        return wsraw.request(
            "POST", path, [*headers, ("Content-Length", str(len(body)))], body, host=host
        )

    json_type = ("Content-Type", "application/json")
    evil = ("Origin", "http://evil.example")
    forged = [
        ("text/plain", post("/api/instances", b'{"name":"forged"}',
                            ("Content-Type", "text/plain")), 415),
        ("form", post("/api/instances", b"name=forged",
                      ("Content-Type", "application/x-www-form-urlencoded")), 415),
        ("multipart", post("/api/instances", multipart,
                           ("Content-Type", f"multipart/form-data; boundary={boundary}")), 415),
        ("no content type", post("/api/instances", b'{"name":"forged"}'), 415),
        ("empty form start", post("/api/instances/a/start", b"",
                                  ("Content-Type", "application/x-www-form-urlencoded")), 415),
        ("text/plain message", post("/api/messages", message,
                                    ("Content-Type", "text/plain")), 415),
        ("foreign Origin, JSON", post("/api/instances", b'{"name":"forged"}',
                                      json_type, evil), 403),
        ("foreign Origin, start", post("/api/instances/a/start", b"", evil), 403),
        ("null Origin, JSON", post("/api/messages", message, json_type, ("Origin", "null")), 403),
        ("Sec-Fetch-Site cross-site", post("/api/instances", b'{"name":"forged"}', json_type,
                                           ("Sec-Fetch-Site", "cross-site")), 403),
        ("Sec-Fetch-Site same-site", post("/api/instances/a/start", b"",
                                          ("Sec-Fetch-Site", "same-site")), 403),
        ("foreign DELETE", wsraw.request("DELETE", f"/api/routing-rules/{rule['id']}", [evil],
                                         host=host), 403),
        ("OPTIONS preflight", wsraw.request("OPTIONS", "/api/instances", [evil,
         ("Access-Control-Request-Method", "POST"),
         ("Access-Control-Request-Headers", "content-type")], host=host), 403),
        ("OPTIONS, no Origin", wsraw.request("OPTIONS", "/api/messages", [], host=host), 405),
    ]  # fmt: skip
    before = await state(url)
    wrong = []
    for name, data, expected in forged:
        answer = await raw.exchange(port, data)
        if answer.status != expected or leaks(answer) or "error" not in answer.json():
            wrong.append((name, answer.status, leaks(answer)))
    await sleep(0.2)
    after = await state(url)
    assert not wrong, wrong
    assert after == before, "a forged request changed state"
    assert [i["status"] for i in after[0]] == ["stopped", "stopped"]
    same = ("Origin", f"http://{host}")
    control = await raw.exchange(port, post("/api/instances", b'{"name":"real"}', json_type, same))
    assert control.status == 201 and not leaks(control)
    record(
        "3 CSRF",
        "text/plain, form, multipart, typeless POSTs; foreign/null Origin; Sec-Fetch-Site "
        "cross-site/same-site; foreign DELETE; OPTIONS",
        "415 / 403 / 405 as JSON, no Access-Control-* header, no state change",
        f"{len(forged)}/{len(forged)} refused, 0 state changes, 0 CORS headers",
        refused=len(forged),
    )


@pytest_twisted.ensureDeferred
async def test_autobahn_surface_is_hidden(daemons):
    """A plain GET on a stream path: JSON 400, no HTML, no redirect, no version anywhere."""
    daemon = await daemons.start()
    port = daemon.port
    await post_json(daemon.url + "/api/instances", {"name": "a"})
    host = f"127.0.0.1:{port}"
    probes = [
        (f"GET {path}?redirect=", wsraw.request("GET", f"{path}?redirect=http://evil.example"
                                                "&after=1", [], host=host), 400)
        for path in STREAMS
    ] + [
        ("HEAD /ws/instances", wsraw.request("HEAD", "/ws/instances", [], host=host), 400),
        ("GET /ws/nothing", wsraw.request("GET", "/ws/nothing?redirect=http://evil.example", [],
                                          host=host), 404),
        ("upgrade, version 8", wsraw.upgrade("/ws/instances", host, version="8"), 400),
        ("upgrade, no key", wsraw.request("GET", "/ws/instances", [("Upgrade", "websocket"),
         ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13")], host=host), 400),
        ("upgrade", wsraw.upgrade("/ws/instances", host), 101),
    ]  # fmt: skip
    wrong, seen = [], []
    for name, data, expected in probes:
        answer = await raw.exchange(port, data)
        seen.append(answer)
        if answer.status != expected or leaks(answer):
            wrong.append((name, answer.status, answer.headers, answer.body[:200]))
        if name.startswith("GET /ws"):
            assert answer.header("content-type") == "application/json", name
    assert not wrong, wrong
    servers = sorted({a.header("server") or "(none)" for a in seen})
    record(
        "4 Autobahn surface",
        "plain GET/HEAD on each stream path with ?redirect=, unknown /ws/ path, bad upgrades",
        "JSON 400/404, Autobahn's own 400 for a bad handshake; no HTML, no Location",
        f"0 HTML pages, 0 redirects, Server header values seen: {', '.join(servers)}",
    )


class RecordingGuard(Guard):
    """The real policy, remembering what each request looked like when it was checked."""

    def __init__(self) -> None:
        super().__init__()
        self.args: list[dict] = []

    def check(self, request: Any) -> None:
        self.args.append(dict(request.args))
        super().check(request)


def test_form_bodies_are_never_parsed():
    """A form POST is refused with 415 before Twisted parses its body into request.args."""
    guard = RecordingGuard()
    site = ControlPlaneSite(Resource(), guard, reactor=Clock(), auth=NO_AUTH)
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 8080))
    channel.makeConnection(transport)
    body = b"a=1&b=2"
    channel.dataReceived(
        wsraw.request(
            "POST",
            "/api/instances",
            [("Content-Type", "application/x-www-form-urlencoded"),
             ("Content-Length", str(len(body)))],
            body,
            host="127.0.0.1:8080",
        )
    )  # fmt: skip
    assert transport.value().startswith(b"HTTP/1.1 415 ")
    assert guard.args == [{}]


@pytest_twisted.ensureDeferred
async def test_a_big_multipart_form_is_refused_without_stalling(daemons):
    """1 MiB of multipart form parts (a page can post it cross-site) is a quick 415."""
    daemon = await daemons.start()
    part = b'--xyz\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n'
    body = part * ((1024 * 1024 - 20) // len(part)) + b"--xyz--\r\n"
    headers = [
        ("Content-Type", "multipart/form-data; boundary=xyz"),
        ("Content-Length", str(len(body))),
    ]
    request = wsraw.request(
        "POST", "/api/instances", headers, body, host=f"127.0.0.1:{daemon.port}"
    )
    took = []
    for _ in range(5):
        started = global_reactor.seconds()
        answer = await raw.exchange(daemon.port, request)
        took.append(global_reactor.seconds() - started)
        assert answer.status == 415
    assert min(took) < 0.1, took
    record(
        "3b form flood",
        f"POST of a 1 MiB multipart form ({len(body) // len(part)} parts), 5 times",
        "415 without the body being parsed into request.args",
        f"415 in {min(took) * 1000:.0f}-{max(took) * 1000:.0f} ms",
        refuse_ms=[round(t * 1000, 1) for t in took],
    )
