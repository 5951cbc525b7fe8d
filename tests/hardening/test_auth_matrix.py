"""Case 13, the auth matrix: every route x every kind of credential, against a real daemon.

Routes: every REST route, the three streams (upgrades), the dashboard's files, login
and logout, /metrics. Credentials: none, a bad token, an expired session, another agent's token,
the agent's own token, the operator token, a session cookie sent same-site, the same
cookie sent cross-site. Each case has one expected answer: a refusal (401 or 403) or
not. A refusal that did not happen is a bypass; an allowed request refused is a denial.
Destructive routes aim at things that do not exist (404 for whoever may ask), so the
matrix can run them all without changing the state other cases rely on.
"""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest_twisted

from tests.hardening import raw
from tests.hardening.report import record
from tests.support import agent_token, create, get_json, post_json, read_token

CREDENTIALS = (
    "none",
    "bad token",
    "expired session",
    "other agent",
    "own agent",
    "operator",
    "session same-site",
    "session cross-site",
)
ANON = frozenset({"none", "bad token", "expired session"})
OPERATORS = frozenset({"operator", "session same-site"})
WS_HEADERS = (
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("Sec-WebSocket-Version", "13"),
)


def routes(message: str) -> list[tuple[str, str, dict | None, str]]:
    """(method, path, body, who may) for every route. ``who``: ``static`` (anyone),
    ``health``, ``agent`` (its own agent), ``operator``, ``login``."""
    gone = "00000000-0000-4000-8000-00000000dead"
    send = {"from_instance": "a", "to_instance": "b", "message_type": "t.x"}
    return [
        ("GET", "/", None, "static"),
        ("GET", "/app.css", None, "static"),
        ("GET", "/login", None, "static"),
        ("POST", "/login", {"token": "wrong"}, "wrong token"),
        ("GET", "/api/health", None, "health"),
        ("GET", "/api/session", None, "any agent"),
        ("GET", "/api/instances", None, "operator"),
        ("POST", "/api/instances", {"name": "!bad"}, "operator"),
        ("GET", "/api/instances/a", None, "agent"),
        ("DELETE", "/api/instances/nope", None, "operator"),
        ("GET", "/api/instances/a/events", None, "operator"),
        ("GET", "/api/instances/a/logs", None, "operator"),
        ("GET", "/api/instances/a/logs/download", None, "operator"),
        ("GET", "/api/instances/a/messages", None, "operator"),
        ("GET", "/api/instances/a/messages/pending", None, "agent"),
        ("GET", "/api/instances/a/usage", None, "operator"),
        *(
            ("POST", f"/api/instances/nope/{verb}", None, "operator")
            for verb in ("start", "stop", "restart", "archive", "unarchive")
        ),  # fmt: skip
        ("POST", "/api/instances/nope/clone", {"name": "x"}, "operator"),
        ("GET", "/api/routing-rules", None, "operator"),
        ("POST", "/api/routing-rules", {"from_instance": "x"}, "operator"),
        ("DELETE", f"/api/routing-rules/{gone}", None, "operator"),
        ("POST", "/api/messages", send, "agent"),
        ("GET", "/api/messages", None, "operator"),
        ("GET", "/api/messages/dead_letter", None, "operator"),
        ("GET", "/api/messages/stats", None, "operator"),
        ("GET", f"/api/messages/{message}", None, "operator"),
        ("POST", f"/api/messages/{message}/acknowledge", {"lease_id": "x"}, "agent"),
        ("POST", f"/api/messages/{message}/fail", {"lease_id": "x"}, "agent"),
        ("POST", f"/api/messages/{gone}/replay", None, "operator"),
        ("GET", "/api/nothing/here", None, "operator"),
        ("GET", "/metrics", None, "operator"),
        ("WS", "/ws/instances", None, "operator"),
        ("WS", "/ws/messages", None, "operator"),
        ("WS", "/ws/instances/a/logs", None, "operator"),
        ("POST", "/logout", None, "login"),  # last: it ends the session the matrix uses
    ]


def expected_refusal(who: str, method: str, credential: str) -> int | None:
    """The status a case must be refused with, or None when it must get through."""
    data = who not in ("static", "login", "wrong token")
    if credential == "session cross-site" and (data or method != "GET"):
        return 403
    if who == "wrong token":
        return 401  # the body's token is the credential here, and it is wrong
    if who in ("static", "login", "health"):
        return None
    if credential in ANON:
        return 401
    if credential in OPERATORS:
        return None
    if who == "any agent":
        return None
    if who == "agent" and credential == "own agent":
        return None
    return 403


@pytest_twisted.ensureDeferred
async def test_the_auth_matrix_has_no_bypass(daemons):
    """Every route x every credential gets exactly the answer its row says: 0 bypasses,
    0 operators refused."""
    daemon = await daemons.start(auth=True)
    url = daemon.url
    token = read_token(daemon.data_dir)
    for name in ("a", "b"):
        await create(url, name)
        await post_json(f"{url}/api/instances/{name}/start")
    for source, target in (("a", "b"), ("b", "a")):
        rule = {"from_instance": source, "to_instance": target, "type_pattern": "t.*"}
        assert (await post_json(f"{url}/api/routing-rules", rule))[0] == 201
    _, sent = await post_json(
        f"{url}/api/messages", {"from_instance": "b", "to_instance": "a", "message_type": "t.x"}
    )
    await get_json(f"{url}/api/instances/a/messages/pending")
    agents = {name: await agent_token(daemon.data_dir, name) for name in ("a", "b")}
    session = await _session(url, token)
    cookie = f"cpstream_session_{daemon.port}"
    expires = 1_000_000
    mac = hmac.new(token.encode(), f"session:old.{expires}".encode(), hashlib.sha256).hexdigest()
    same_origin = [("Origin", url), ("Sec-Fetch-Site", "same-origin")]
    headers = {
        "none": [],
        "bad token": [("Authorization", "Bearer not-a-token")],
        "expired session": [("Cookie", f"{cookie}=old.{expires}.{mac}")],
        "other agent": [("Authorization", f"Bearer {agents['b']}")],
        "own agent": [("Authorization", f"Bearer {agents['a']}")],
        "operator": [("Authorization", f"Bearer {token}")],
        "session same-site": [("Cookie", f"{cookie}={session}"), *same_origin],
        "session cross-site": [
            ("Cookie", f"{cookie}={session}"),
            ("Origin", "http://evil.example"),
            ("Sec-Fetch-Site", "cross-site"),
        ],
    }
    cases, bypasses, denials = 0, [], []
    for method, path, body, who in routes(sent["id"]):
        for credential in CREDENTIALS:
            status = await _ask(daemon, method, path, body, headers[credential])
            cases += 1
            refusal = expected_refusal(who, method, credential)
            if refusal is not None and status != refusal:
                bypasses.append(f"{credential} {method} {path}: {status}, not {refusal}")
            if refusal is None and status in (401, 403):
                denials.append(f"{credential} {method} {path}: {status}")
    record(
        "13 auth matrix",
        f"{len(routes(''))} routes (REST, streams, static, login/logout) x {len(CREDENTIALS)}"
        " credentials",
        "every case answered as its row says",
        f"{cases} cases, {len(bypasses)} bypasses, {len(denials)} wrongly refused",
        cases=cases,
        bypasses=len(bypasses),
        denials=len(denials),
    )
    assert bypasses == [] and denials == [], "\n".join(bypasses + denials)


async def _ask(daemon, method: str, path: str, body, headers) -> int:
    """One request on a fresh connection; its status (101 for an upgrade)."""
    client = await raw.connect(daemon.port)
    extra = list(headers)
    if method == "WS":
        method, extra = "GET", [*extra, *WS_HEADERS]
    data = b""
    if body is not None:
        data = json.dumps(body).encode()
        extra += [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    elif method in ("POST", "DELETE"):
        extra.append(("Content-Length", "0"))
    client.write(raw.request(method, path, extra, data, host=f"127.0.0.1:{daemon.port}"))
    answer = await client.response(timeout=10, bodyless=method == "HEAD")
    client.abort()
    return answer.status


async def _session(url: str, token: str) -> str:
    import treq

    response = await treq.post(
        url + "/login",
        data=json.dumps({"token": token}).encode(),
        headers={b"Content-Type": [b"application/json"]},
    )
    cookie = response.headers.getRawHeaders(b"set-cookie")[0].decode()
    return cookie.split(";")[0].split("=", 1)[1]
