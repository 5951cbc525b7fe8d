"""What contract fuzzing (tests/test_schemathesis.py) found, kept fixed.

- An instance created with a NUL in its command or environment (or an environment name that
  is empty or holds '=') could not be started: ``os.posix_spawnp`` raised ``ValueError`` and
  start and restart answered 500. Such instances are now refused at creation (400).
- ``GET /instances/NAME/logs?offset=-1`` was 200 in tail mode (``offset`` was only read in
  page mode); it is now checked in either mode, as the document says.
- A 405 (OPTIONS, say) under ``/api/`` named one ``Allow`` for the whole site; it now names
  the methods of the path asked about.
- A HEAD of ``pending`` leased a message no one could read (the answer has no body); it is
  now 405.
"""

from __future__ import annotations

import pytest
import pytest_twisted
import treq

from tests.support import SLEEPER, auth_headers, create, get_json, post_json


@pytest.mark.parametrize(
    "fields",
    [
        {"command": ["sleep\x00", "1"]},
        {"command": [*SLEEPER[:2], "pass\x00"]},
        {"env": {"A": "b\x00c"}},
        {"env": {"A\x00": "b"}},
        {"env": {"A=B": "c"}},
        {"env": {"": "c"}},
    ],
)
@pytest_twisted.ensureDeferred
async def test_what_no_process_can_start_with_is_refused_at_creation(cp, fields):
    """A NUL in the command or env, or an env name empty or holding '=', is a 400: the
    instance is not created (its start would fail)."""
    code, body = await post_json(cp.api("/instances"), {"name": "a", **fields})
    assert code == 400, body
    assert (await get_json(cp.api("/instances/a")))[0] == 404


@pytest_twisted.ensureDeferred
async def test_an_ordinary_env_is_still_accepted(cp):
    """Names with letters, digits, '_' and non-ASCII, values with '=' and spaces, are fine."""
    code, body = await post_json(
        cp.api("/instances"),
        {"name": "a", "command": SLEEPER, "env": {"A_1": "x=y z", "É": ""}, "health": "process"},
    )
    assert code == 201, body
    code, body = await post_json(cp.api("/instances/a/start"))
    assert code == 200, body
    await post_json(cp.api("/instances/a/stop"))


@pytest.mark.parametrize("mode", ["tail", "page"])
@pytest_twisted.ensureDeferred
async def test_the_log_offset_is_checked_in_either_mode(cp, mode):
    """offset out of 0..2**62 is a 400 whether the mode reads it or not."""
    await create(cp.url, "a")
    for offset, expected in ((-1, 400), (2**62 + 1, 400), (0, 200), (2**62, 200)):
        code, body = await get_json(cp.api(f"/instances/a/logs?mode={mode}&offset={offset}"))
        assert code == expected, (mode, offset, body)


@pytest_twisted.ensureDeferred
async def test_a_405_names_the_methods_of_the_path_asked_about(cp):
    """OPTIONS (never supported: no CORS) and a wrong method under /api/ are 405 with the
    path's own Allow."""
    await create(cp.url, "a")
    for method, path, allow in (
        ("OPTIONS", "/instances", {"GET", "HEAD", "POST"}),
        ("OPTIONS", "/instances/a/start", {"POST"}),
        ("PUT", "/instances/a", {"GET", "HEAD", "DELETE"}),
    ):
        response = await treq.request(method, cp.api(path).encode(), headers=auth_headers(cp.url))
        await response.content()
        assert response.code == 405, (method, path)
        (header,) = response.headers.getRawHeaders("allow")
        assert {m.strip() for m in header.split(",")} == allow, (method, path, header)


@pytest_twisted.ensureDeferred
async def test_a_head_of_pending_leases_nothing(cp):
    """HEAD of pending is 405 (Allow: GET) and the message stays queued for the next GET."""
    for name in ("a", "b"):
        await create(cp.url, name)
    rule = {"from_instance": "a", "to_instance": "b", "type_pattern": "t"}
    assert (await post_json(cp.api("/routing-rules"), rule))[0] == 201
    code, sent = await post_json(
        cp.api("/messages"),
        {"from_instance": "a", "to_instance": "b", "message_type": "t", "payload": {}},
    )
    assert code == 201, sent
    response = await treq.head(
        cp.api("/instances/b/messages/pending"), headers=auth_headers(cp.url)
    )
    assert response.code == 405
    assert response.headers.getRawHeaders("allow") == ["GET"]
    code, body = await get_json(cp.api("/instances/b/messages/pending"))
    assert (code, body["message"]["id"]) == (200, sent["id"])
