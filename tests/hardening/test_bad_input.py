"""Beyond the twelve cases: hostile JSON and URLs get a clear JSON 400 (a 1008 on a stream),
change nothing, and leave no traceback in the log."""

from __future__ import annotations

import pytest
import pytest_twisted

from tests import wsraw
from tests.hardening import raw
from tests.hardening.report import record
from tests.hardening.test_policy import state
from tests.support import get_json, http, post_json

SEND = b'{"from_instance":"a","to_instance":"b","message_type":"t.x","payload":%s%s}'
BODIES = {
    "array nested 200,000 deep": b"[" * 200_000,
    "object nested 100,000 deep": b'{"a":' * 100_000,
    "lone surrogate in a payload": SEND % (b'{"x":"\\ud800"}', b""),
    "lone surrogate in correlation_id": SEND % (b"{}", b',"correlation_id":"\\ud800"'),
    "lone surrogate in idempotency_key": SEND % (b"{}", b',"idempotency_key":"x\\udc00"'),
    "NaN in a payload": SEND % (b'{"x":NaN}', b""),
    "Infinity in a payload": SEND % (b'{"x":-Infinity}', b""),
    "5,000-digit number": SEND % (b'{"x":' + b"9" * 5000 + b"}", b""),
}
PATHS = ("/api/instances/%ff", "/api/instances/%ed%a0%80/start", "/api/messages/%c3")
FRAMES = {
    "array nested 60,000 deep": b"[" * 60_000,
    "object nested 10,000 deep": b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
}


@pytest_twisted.ensureDeferred
async def test_hostile_json_and_urls_get_a_clear_400(daemons):
    """Deep nesting, lone surrogates, NaN, huge numbers, non-UTF-8 URLs: JSON 400, no change."""
    daemon = await daemons.start()
    url, port, host = daemon.url, daemon.port, f"127.0.0.1:{daemon.port}"
    for name in ("a", "b"):
        await post_json(url + "/api/instances", {"name": name})
    rule = {"from_instance": "a", "to_instance": "b", "type_pattern": "t.*"}
    assert (await post_json(url + "/api/routing-rules", rule))[0] == 201
    before = await state(url)
    wrong, answered = [], 0
    json_type = ("Content-Type", "application/json")
    for name, body in BODIES.items():
        for path in ("/api/messages", "/api/instances", "/api/routing-rules"):
            headers = [json_type, ("Content-Length", str(len(body)))]
            answer = await raw.exchange(port, wsraw.request("POST", path, headers, body, host=host))
            answered += 1
            if answer.status != 400 or "error" not in answer.json():
                wrong.append((name, path, answer.status, answer.body[:100]))
    for path in PATHS:
        method = "POST" if path.endswith("start") else "GET"
        answer = await raw.exchange(port, wsraw.request(method, path, [], host=host))
        answered += 1
        if answer.status != 400 or "error" not in answer.json():
            wrong.append((path, answer.status, answer.body[:100]))
    closes = []
    for name, payload in FRAMES.items():
        stream = await raw.open_stream(port, "/ws/instances")
        await stream.client.until(lambda c, s=stream: s.frames().messages)
        stream.client.write(wsraw.frame(wsraw.OP_TEXT, payload))
        closes.append(await stream.closed_with(timeout=3))
        errors = [m for m in stream.frames().messages if m["type"] == "error"]
        if closes[-1] != 1008 or [e["code"] for e in errors] != ["invalid_frame"]:
            wrong.append((name, closes[-1], errors))
        stream.client.abort()
    assert not wrong, wrong
    assert await state(url) == before
    record(
        "extra: hostile JSON and URLs",
        f"{len(BODIES)} malformed JSON bodies (deep nesting, lone surrogates, NaN/Infinity, "
        f"a 5,000-digit number) x 3 endpoints, {len(PATHS)} non-UTF-8 URLs, "
        f"{len(FRAMES)} deeply nested stream frames",
        "JSON 400 for every request, invalid_frame + 1008 for every frame; no state change, "
        "no traceback in the log",
        f"{answered}/{answered} answered 400, {closes.count(1008)}/{len(FRAMES)} closed 1008",
    )


@pytest.mark.logs_errors
@pytest_twisted.ensureDeferred
async def test_an_unexpected_error_is_answered_as_json_and_logged(cp, _no_logged_errors):
    """A bug behind a route gives a JSON 500 (no HTML page) and a logged traceback."""

    def broken() -> list:
        raise RuntimeError("registry exploded")

    cp.registry.active = broken
    code, body = await get_json(cp.api("/health"))
    redirect = await http.get(cp.api("/instances/"), allow_redirects=False)
    assert (code, body) == (500, {"error": "internal error"})
    assert "registry exploded" in "\n".join(_no_logged_errors)
    assert redirect.code < 500
