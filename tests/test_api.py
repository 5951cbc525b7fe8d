"""The REST API over a real loopback socket, against a control plane built by makeService."""

from __future__ import annotations

import json

import pytest_twisted

from tests.support import (
    SLEEPER,
    create,
    delete_json,
    get_json,
    http,
    instance_log,
    post_json,
    wait_for,
)


async def status_of(cp, name):
    code, body = await get_json(cp.api(f"/instances/{name}"))
    return body["status"]


@pytest_twisted.ensureDeferred
async def test_health_lists_active_instances(cp):
    """GET /api/health answers ok with each active instance's status and pid, and the
    broker (in-process by default)."""
    await create(cp.url, "a")
    code, body = await get_json(cp.api("/health"))
    assert code == 200
    assert body == {
        "status": "ok",
        "instances": {"a": {"status": "stopped", "pid": None}},
        "broker": {"kind": "memory"},
    }


@pytest_twisted.ensureDeferred
async def test_create_get_and_list(cp):
    """Create answers 201 with the instance; get and list show it."""
    created = await create(cp.url, "a", port=18850)
    assert {k: created[k] for k in ("name", "port", "status", "pid", "archived_at")} == {
        "name": "a",
        "port": 18850,
        "status": "stopped",
        "pid": None,
        "archived_at": None,
    }
    assert created["command"] == SLEEPER and created["id"] and created["created_at"]
    code, body = await get_json(cp.api("/instances/a"))
    assert code == 200 and body == created
    code, listed = await get_json(cp.api("/instances"))
    assert listed == [created]


@pytest_twisted.ensureDeferred
async def test_create_errors(cp):
    """Bad names, ports, fields and taken names or ports get JSON errors with their status."""
    await create(cp.url, "a", port=18850)
    cases = [
        ({"name": "-x"}, 400, "name"),
        ({"name": "b", "port": 22}, 400, "port"),
        ({"name": "b", "port": "x"}, 400, "port"),
        ({"name": "b", "colour": "red"}, 400, "colour"),
        ({"port": 18851}, 400, "name is required"),
        ({"name": "a"}, 409, "'a' is already taken"),
        ({"name": "b", "port": 18850}, 409, "18850 is already taken"),
        ({"name": "b", "command": "sleep 1"}, 400, "command"),
    ]
    for body, status, words in cases:
        code, answer = await post_json(cp.api("/instances"), body)
        assert (code, words in answer["error"]) == (status, True), (body, answer)
    code, listed = await get_json(cp.api("/instances"))
    assert [i["name"] for i in listed] == ["a"]


@pytest_twisted.ensureDeferred
async def test_malformed_json_and_wrong_types(cp):
    """Malformed JSON is 400, a non-object body 400, a non-JSON content type 415."""
    headers = {b"Content-Type": [b"application/json"]}
    response = await http.post(cp.api("/instances"), data=b"{nope", headers=headers)
    assert response.code == 400 and "malformed JSON" in (await response.json())["error"]
    response = await http.post(cp.api("/instances"), data=b"[1]", headers=headers)
    assert response.code == 400
    response = await http.post(
        cp.api("/instances"), data=b"name=a", headers={b"Content-Type": [b"text/plain"]}
    )
    assert response.code == 415 and "application/json" in (await response.json())["error"]


@pytest_twisted.ensureDeferred
async def test_oversized_body_is_413(cp):
    """A body over 1 MiB is refused with a JSON 413."""
    big = json.dumps({"name": "a", "pad": "x" * (1024 * 1024)}).encode()
    response = await http.post(
        cp.api("/instances"), data=big, headers={b"Content-Type": [b"application/json"]}
    )
    assert response.code == 413 and "over" in (await response.json())["error"]


@pytest_twisted.ensureDeferred
async def test_unknown_paths_and_methods_are_json(cp):
    """Unknown /api/ paths are JSON 404; a wrong method is JSON 405."""
    response = await http.get(cp.api("/nothing/here"))
    assert response.code == 404
    assert response.headers.getRawHeaders(b"content-type") == [b"application/json"]
    assert (await response.json()) == {"error": "no such API endpoint"}
    response = await http.put(
        cp.api("/instances"), data=b"{}", headers={b"Content-Type": [b"application/json"]}
    )
    assert response.code == 405 and "error" in await response.json()


@pytest_twisted.ensureDeferred
async def test_unknown_instance_is_404_everywhere(cp):
    """Every per-instance endpoint answers 404 for a name that does not exist."""
    for method, path in [
        ("GET", "/instances/ghost"),
        ("DELETE", "/instances/ghost"),
        ("POST", "/instances/ghost/start"),
        ("POST", "/instances/ghost/stop"),
        ("POST", "/instances/ghost/restart"),
        ("POST", "/instances/ghost/archive"),
        ("POST", "/instances/ghost/unarchive"),
        ("POST", "/instances/ghost/clone"),
        ("GET", "/instances/ghost/logs"),
        ("GET", "/instances/ghost/logs/download"),
    ]:
        response = await http.request(method, cp.api(path))
        body = await response.json()
        assert response.code == 404 and "ghost" in body["error"], (method, path, body)


@pytest_twisted.ensureDeferred
async def test_lifecycle_over_rest(cp):
    """Start, stop, restart, archive, unarchive and delete work and answer with the status."""
    await create(cp.url, "a")
    assert await post_json(cp.api("/instances/a/start")) == (
        200,
        {"status": "starting", "name": "a"},
    )
    await wait_for(lambda: cp.registry.get("a").status == "running", timeout=5)
    assert await post_json(cp.api("/instances/a/restart")) == (
        200,
        {"status": "starting", "name": "a"},
    )
    assert await post_json(cp.api("/instances/a/stop")) == (200, {"status": "stopped", "name": "a"})
    assert await post_json(cp.api("/instances/a/start")) == (
        200,
        {"status": "starting", "name": "a"},
    )
    assert await post_json(cp.api("/instances/a/archive")) == (
        200,
        {"status": "archived", "name": "a"},
    )
    assert cp.registry.get("a").pid is None
    assert await post_json(cp.api("/instances/a/unarchive")) == (
        200,
        {"status": "stopped", "name": "a"},
    )
    await post_json(cp.api("/instances/a/archive"))
    assert await delete_json(cp.api("/instances/a")) == (200, {"status": "deleted", "name": "a"})
    code, _ = await get_json(cp.api("/instances/a"))
    assert code == 404


@pytest_twisted.ensureDeferred
async def test_illegal_transitions_are_409(cp):
    """Deleting an active instance, starting an archived one, double start: all 409."""
    await create(cp.url, "a")
    code, body = await delete_json(cp.api("/instances/a"))
    assert code == 409 and "archived" in body["error"]
    await post_json(cp.api("/instances/a/start"))
    code, body = await post_json(cp.api("/instances/a/start"))
    assert code == 409 and "starting" in body["error"] or "running" in body["error"]
    await post_json(cp.api("/instances/a/stop"))
    code, body = await post_json(cp.api("/instances/a/stop"))
    assert code == 409 and "stopped" in body["error"]
    await post_json(cp.api("/instances/a/archive"))
    for action in ("start", "stop", "restart", "archive"):
        code, body = await post_json(cp.api(f"/instances/a/{action}"))
        assert code == 409 and "archived" in body["error"], (action, body)


@pytest_twisted.ensureDeferred
async def test_unarchive_into_a_taken_name_is_409(cp):
    """Unarchiving when another active instance took the name is a 409 and changes nothing."""
    await create(cp.url, "a", port=18850)
    await post_json(cp.api("/instances/a/archive"))
    await create(cp.url, "a", port=18851)
    code, body = await post_json(cp.api("/instances/a/unarchive"))
    assert code == 409 and "already taken" in body["error"]
    assert len(cp.registry.all(include_archived=True)) == 2 and cp.registry.get("a").port == 18851


@pytest_twisted.ensureDeferred
async def test_archived_and_active_instances_sharing_a_name(cp):
    """Delete and unarchive act on the archived instance even when the name is active again."""
    old = await create(cp.url, "a", port=18850)
    await post_json(cp.api("/instances/a/archive"))
    new = await create(cp.url, "a", port=18851)
    assert await delete_json(cp.api("/instances/a")) == (200, {"status": "deleted", "name": "a"})
    code, listed = await get_json(cp.api("/instances?include_archived=true"))
    assert [i["id"] for i in listed] == [new["id"]] and old["id"] != new["id"]
    code, body = await delete_json(cp.api("/instances/a"))
    assert code == 409 and "not archived" in body["error"]


@pytest_twisted.ensureDeferred
async def test_list_includes_archived_on_request(cp):
    """Archived instances appear, with status 'archived', only with include_archived=true."""
    await create(cp.url, "a")
    await create(cp.url, "b")
    await post_json(cp.api("/instances/b/archive"))
    code, listed = await get_json(cp.api("/instances"))
    assert [i["name"] for i in listed] == ["a"]
    code, listed = await get_json(cp.api("/instances?include_archived=true"))
    assert [(i["name"], i["status"]) for i in listed] == [("a", "stopped"), ("b", "archived")]
    code, one = await get_json(cp.api("/instances/b"))
    assert one["status"] == "archived" and one["archived_at"]


@pytest_twisted.ensureDeferred
async def test_clone(cp):
    """Clone makes a new stopped instance with the same command and a new port."""
    source = await create(cp.url, "a", env={"K": "V"})
    code, copy = await post_json(cp.api("/instances/a/clone"), {"name": "b"})
    assert code == 201
    assert copy["command"] == source["command"] and copy["port"] != source["port"]
    assert cp.registry.get("b").env == {"K": "V"}
    code, body = await post_json(cp.api("/instances/a/clone"), {"name": "b"})
    assert code == 409
    code, body = await post_json(cp.api("/instances/a/clone"), {})
    assert code == 400


@pytest_twisted.ensureDeferred
async def test_logs_tail_page_and_download(cp):
    """Logs come back in tail and page modes from the real file, and download whole."""
    await create(cp.url, "a")
    path = instance_log(cp.data_dir, "a")
    path.write_bytes(b"".join(b"line %d\n" % i for i in range(300)) + b"partial")
    code, body = await get_json(cp.api("/instances/a/logs"))
    assert code == 200 and body["mode"] == "tail" and body["name"] == "a"
    assert len(body["lines"]) == 100 and body["lines"][-1] == "line 299"
    code, body = await get_json(cp.api("/instances/a/logs?lines=3&mode=page&offset=10"))
    assert body["lines"] == ["line 10", "line 11", "line 12"] and body["next_offset"] == 13
    for query in ("lines=0", "lines=10001", "lines=x", "mode=head", "mode=page&offset=-1"):
        code, body = await get_json(cp.api(f"/instances/a/logs?{query}"))
        assert code == 400, query
    response = await http.get(cp.api("/instances/a/logs/download"))
    assert response.code == 200
    assert (await response.content()) == path.read_bytes()
    assert b"attachment" in response.headers.getRawHeaders(b"content-disposition")[0]


@pytest_twisted.ensureDeferred
async def test_logs_of_an_instance_that_never_ran(cp):
    """An instance without a log file has an empty tail and a 404 download."""
    await create(cp.url, "a")
    assert await get_json(cp.api("/instances/a/logs")) == (
        200,
        {"name": "a", "mode": "tail", "lines": []},
    )
    code, body = await get_json(cp.api("/instances/a/logs/download"))
    assert code == 404
