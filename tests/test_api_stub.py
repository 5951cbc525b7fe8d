"""The REST handlers in memory: ``/api/`` answered through ``treq.testing.StubTreq``.

The resource tree is the one the site serves (:func:`cpstream.web.site.build_root`)
over the domain of :class:`tests.support.World` on a ``task.Clock``, and the
requests are made by the JSON helpers of :mod:`tests.support` with the stub as
their client. No socket is opened and no child is started, so every request is
answered before the call returns. Requests go straight to the tree, not through
the site: Host, Origin, content-type and body-size policy are the guard's and are
tested over real sockets (tests/test_api.py, tests/test_guard.py, tests/hardening/).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet import defer
from twisted.python.failure import Failure

from cpstream.domain.supervisor import Supervisor
from cpstream.domain.usage import GroupReader, UsageSampler
from cpstream.web.api import ControlAPI
from cpstream.web.site import build_root
from tests.support import SLEEPER, World, create, delete_json, get_json, post_json

URL = "http://cp.test"
BASE = f"{URL}/api"
CREATED_AT = "2026-09-21T14:13:20.000000Z"  # tests.support.EPOCH, the World's Clock
SEND = {
    "from_instance": "a",
    "to_instance": "b",
    "message_type": "task.handoff",
    "payload": {"n": 1},
}


def fired(deferred: Any) -> Any:
    """The result of a Deferred that has already fired (the stub answers synchronously)."""
    results: list[Any] = []
    deferred.addBoth(results.append)
    assert results, "the stub left the request unanswered"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def run(coroutine: Any) -> Any:
    """Run one of the :mod:`tests.support` JSON helpers against the stub, to its end."""
    return fired(defer.ensureDeferred(coroutine))


class StubAPI:
    """``/api/`` of a control plane over ``world``, through StubTreq."""

    def __init__(self, world: World) -> None:
        # Never started: no child is spawned and no timer runs.
        supervisor = Supervisor(world.reactor, world.registry, world.logs, world.probe)
        usage = UsageSampler(world.registry, world.clock, GroupReader())
        api = ControlAPI(
            world.registry, supervisor, world.logs, world.rules, world.messaging, world.inbox, usage
        )
        self.world = world
        self.client = StubTreq(build_root(api.app.resource()))

    def request(self, method: str, path: str, data: bytes | None = None) -> tuple[Any, Any]:
        """The response to ``method /api<path>`` (``data`` sent as JSON) and its JSON body."""
        headers = {b"Content-Type": [b"application/json"]} if data is not None else {}
        response = fired(self.client.request(method, BASE + path, data=data, headers=headers))
        self.client.flush()
        return response, json.loads(fired(self.client.content(response)))

    def get(self, path: str) -> tuple[int, Any]:
        return run(get_json(BASE + path, client=self.client))

    def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        return run(post_json(BASE + path, body, client=self.client))

    def delete(self, path: str) -> tuple[int, Any]:
        return run(delete_json(BASE + path, client=self.client))

    def create(self, name: str, **fields: Any) -> dict:
        return run(create(URL, name, client=self.client, **fields))

    def pair(self) -> dict:
        """Instances ``a`` and ``b`` and a rule letting ``a`` send ``task.*`` to ``b``."""
        self.create("a")
        self.create("b")
        code, rule = self.post(
            "/routing-rules", {"from_instance": "a", "to_instance": "b", "type_pattern": "task.*"}
        )
        assert code == 201, rule
        return rule


@pytest.fixture
def api(world: World) -> StubAPI:
    return StubAPI(world)


def content_type(response: Any) -> list[bytes]:
    return response.headers.getRawHeaders(b"content-type")


# -- instances -------------------------------------------------------------------------


def test_create_answers_201_with_the_instance(api):
    """Create answers 201 with the whole instance, stopped; get and list show the same."""
    code, created = api.post(
        "/instances", {"name": "a", "port": 18850, "command": SLEEPER, "health": "process"}
    )
    assert code == 201
    assert created == {
        "id": str(uuid.UUID(created["id"])),
        "name": "a",
        "port": 18850,
        "status": "stopped",
        "pid": None,
        "command": SLEEPER,
        "health": "process",
        "restart": "on-failure",
        "created_at": CREATED_AT,
        "started_at": None,
        "archived_at": None,
        "usage": None,
        "restarts": 0,
        "last_exit": None,
    }
    assert api.get("/instances/a") == (200, created)
    assert api.get("/instances") == (200, [created])
    assert api.world.registry.get("a").id == created["id"]


def test_create_refuses_bad_and_unknown_fields(api):
    """Malformed JSON, a non-object, unknown, missing or invalid fields: a JSON 400 each."""
    cases = [
        (b"{nope", "malformed JSON"),
        (b"[1]", "must be a JSON object"),
        ({"name": "b", "colour": "red"}, "unknown field(s): colour"),
        ({"port": 18851}, "name is required"),
        ({"name": "-x"}, "name must be"),
        ({"name": "b", "port": 22}, "port must be"),
        ({"name": "b", "port": "x"}, "port must be"),
        ({"name": "b", "command": "sleep 1"}, "command must be"),
        ({"name": "b", "health": "tcp"}, "health must be"),
    ]
    for body, words in cases:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        response, answer = api.request("POST", "/instances", data)
        assert response.code == 400 and words in answer["error"], (body, answer)
        assert content_type(response) == [b"application/json"]
    assert api.get("/instances") == (200, [])


def test_create_with_a_taken_name_or_port_is_409(api):
    """A name or a port an active instance holds is a 409 naming it; nothing is created."""
    api.create("a", port=18850)
    code, body = api.post("/instances", {"name": "a", "command": SLEEPER})
    assert code == 409 and "'a' is already taken" in body["error"]
    code, body = api.post("/instances", {"name": "b", "port": 18850, "command": SLEEPER})
    assert code == 409 and "18850 is already taken" in body["error"]
    assert [i.name for i in api.world.registry.all()] == ["a"]


def test_get_unknown_instance_is_json_404(api):
    """GET of an instance that does not exist is a JSON 404 naming it."""
    response, body = api.request("GET", "/instances/ghost")
    assert response.code == 404 and "ghost" in body["error"]
    assert content_type(response) == [b"application/json"]


def test_unknown_api_path_is_json_404(api):
    """A path under /api/ that no route matches is a JSON 404, never an HTML page."""
    for method, path in [("GET", "/nothing/here"), ("POST", "/instances/a/b/c")]:
        response, body = api.request(method, path)
        assert (response.code, body) == (404, {"error": "no such API endpoint"}), path
        assert content_type(response) == [b"application/json"]


def test_wrong_method_is_405_with_allow(api):
    """A method the path does not take is a JSON 405 whose Allow lists those it does."""
    for method, path, allowed in [
        ("PUT", "/instances", {"GET", "HEAD", "POST"}),
        ("POST", "/instances/a", {"GET", "HEAD", "DELETE"}),
        ("DELETE", "/routing-rules", {"GET", "HEAD", "POST"}),
        ("GET", "/messages/0193a5b2-7c1d-7000-8000-000000000000/acknowledge", {"POST"}),
        ("GET", "/messages/batch", {"POST"}),
        ("GET", "/messages/fail", {"POST"}),
    ]:
        response, body = api.request(method, path)
        assert (response.code, body) == (405, {"error": "method not allowed"}), (method, path)
        (allow,) = response.headers.getRawHeaders(b"allow")
        assert set(allow.decode().split(", ")) == allowed, (method, path, allow)


# -- routing rules -------------------------------------------------------------------------


def test_routing_rules_add_list_delete(api):
    """A rule is added (201, with defaults), listed, deleted (200), and then gone (404)."""
    rule = api.pair()
    assert {k: v for k, v in rule.items() if k not in ("id", "created_at")} == {
        "from_instance": "a",
        "to_instance": "b",
        "type_pattern": "task.*",
        "max_retries": 5,
        "ttl_secs": 3600,
    }
    assert rule["created_at"] == CREATED_AT
    assert api.get("/routing-rules") == (200, [rule])
    assert api.delete(f"/routing-rules/{rule['id']}") == (
        200,
        {"id": rule["id"], "status": "deleted"},
    )
    assert api.get("/routing-rules") == (200, [])
    code, body = api.delete(f"/routing-rules/{rule['id']}")
    assert code == 404 and rule["id"] in body["error"]


# -- messages --------------------------------------------------------------------------------


def test_send_is_201_and_a_keyed_resend_is_200_deduplicated(api):
    """A send queues (201); the same key from the same sender answers 200 deduplicated."""
    api.pair()
    code, sent = api.post("/messages", {**SEND, "idempotency_key": "k1"})
    assert (code, sent["status"]) == (201, "queued") and set(sent) == {"id", "status", "expires_at"}
    again = api.post("/messages", {**SEND, "idempotency_key": "k1"})
    assert again == (200, {"id": sent["id"], "deduplicated": True})
    assert [m["id"] for m in api.get("/messages")[1]] == [sent["id"]]


def test_send_to_an_unknown_instance_is_404(api):
    """A send to (or from) an instance that does not exist is a 404 naming it."""
    api.pair()
    code, body = api.post("/messages", {**SEND, "to_instance": "ghost"})
    assert code == 404 and "ghost" in body["error"]
    code, body = api.post("/messages", {**SEND, "from_instance": "ghost"})
    assert code == 404 and "ghost" in body["error"]
    assert api.get("/messages") == (200, [])


def test_send_without_a_route_is_403(api):
    """A send no routing rule allows is a 403 saying what was refused."""
    api.pair()
    code, body = api.post("/messages", {**SEND, "message_type": "chat.hello"})
    assert code == 403 and "no routing rule allows chat.hello from a to b" in body["error"]
    code, body = api.post("/messages", {**SEND, "from_instance": "b", "to_instance": "a"})
    assert code == 403


def test_payload_over_64_KiB_is_413(api):
    """A payload whose JSON is over 64 KiB is a 413; one of exactly 64 KiB is queued."""
    api.pair()
    code, body = api.post("/messages", {**SEND, "payload": "x" * (64 * 1024 - 1)})
    assert code == 413 and "limit is 65536" in body["error"]
    code, body = api.post("/messages", {**SEND, "payload": "x" * (64 * 1024 - 2)})
    assert code == 201, body


def test_acknowledging_a_queued_message_is_409(api):
    """Only a delivered message can be acknowledged: a queued one is a 409 and stays queued."""
    api.pair()
    _, sent = api.post("/messages", SEND)
    code, body = api.post(f"/messages/{sent['id']}/acknowledge", {"lease_id": "none-yet"})
    assert code == 409 and "is queued, not delivered" in body["error"]
    assert api.get(f"/messages/{sent['id']}")[1]["status"] == "queued"


def test_message_search(api):
    """Search filters by instance, correlation id and status, newest first, without payloads."""
    api.pair()
    api.create("c")
    _, first = api.post("/messages", {**SEND, "correlation_id": "chain-1"})
    _, second = api.post("/messages", {**SEND, "correlation_id": "chain-2"})
    code, found = api.get("/messages?instance=b&correlation_id=chain-1")
    assert code == 200 and [m["id"] for m in found] == [first["id"]]
    assert "payload" not in found[0] and found[0]["status"] == "queued"
    assert [m["id"] for m in api.get("/messages?status=queued")[1]] == [second["id"], first["id"]]
    assert api.get("/messages?instance=c") == (200, [])
    assert api.get("/messages?status=acknowledged") == (200, [])
    code, body = api.get("/messages?status=bogus")
    assert code == 400 and "status must be one of" in body["error"]


def test_pending_with_wait_0_answers_null_at_once(api):
    """With nothing queued, pending with wait=0 answers {"message": null} and leaves no waiter."""
    api.pair()
    assert api.get("/instances/b/messages/pending?wait=0") == (200, {"message": None})
    assert api.world.inbox.waiting == 0


def test_pending_leases_the_oldest_queued_message(api):
    """Pending hands out the oldest queued message, now delivered, with its payload."""
    api.pair()
    _, first = api.post("/messages", SEND)
    _, second = api.post("/messages", {**SEND, "payload": {"n": 2}})
    code, body = api.get("/instances/b/messages/pending?wait=0")
    message = body["message"]
    assert code == 200 and message["id"] == first["id"]
    assert (message["status"], message["attempts"], message["payload"]) == (
        "delivered",
        1,
        {"n": 1},
    )
    events = api.get(f"/messages/{first['id']}")[1]["events"]
    assert [e["event"] for e in events] == ["queued", "delivered"]
    assert api.get("/instances/b/messages/pending?wait=0")[1]["message"]["id"] == second["id"]
    lease = {"lease_id": message["lease_id"]}
    assert api.post(f"/messages/{first['id']}/acknowledge", lease) == (
        200,
        {"id": first["id"], "status": "acknowledged"},
    )


def test_a_batch_send_answers_each_item_on_its_own(api):
    """Up to 100 sends in one request: good items are queued (201, or 200 for a repeated
    key), bad ones get their own error, in order; every queued one is published once."""
    api.pair()
    items = [
        SEND,
        {**SEND, "message_type": "bad type"},
        {**SEND, "to_instance": "ghost"},
        {**SEND, "idempotency_key": "k"},
        {**SEND, "idempotency_key": "k"},
        "not an object",
        {**SEND, "surprise": 1},
    ]
    code, body = api.post("/messages/batch", {"messages": items})
    codes = [r["code"] for r in body["results"]]
    assert code == 200 and codes == [201, 400, 404, 201, 200, 400, 400]
    results = body["results"]
    assert results[4]["id"] == results[3]["id"] and results[4]["deduplicated"] is True
    queued = [f for f in api.world.message_frames.frames if f["event"] == "queued"]
    assert [f["message_id"] for f in queued] == [results[0]["id"], results[3]["id"]]
    assert api.post("/messages/batch", {"messages": []})[0] == 400
    assert api.post("/messages/batch", {"messages": [SEND] * 101})[0] == 400


def test_pending_with_max_leases_several_and_settling_takes_a_list(api):
    """pending?max=N leases up to N at once; acknowledge and fail take a list of
    {id, lease_id}, each answered on its own."""
    api.pair()
    _, body = api.post("/messages/batch", {"messages": [SEND] * 5})
    code, leased = api.get("/instances/b/messages/pending?wait=0&max=3")
    assert code == 200 and len(leased["messages"]) == 3
    first, second, third = leased["messages"]
    items = [
        {"id": first["id"], "lease_id": first["lease_id"]},
        {"id": second["id"], "lease_id": "stale"},
        {"id": third["id"]},
    ]
    code, answer = api.post("/messages/acknowledge", {"items": items})
    assert code == 200 and [r["code"] for r in answer["results"]] == [200, 409, 400]
    assert answer["results"][0]["status"] == "acknowledged"
    code, answer = api.post(
        "/messages/fail", {"items": [{"id": third["id"], "lease_id": third["lease_id"]}]}
    )
    assert answer["results"] == [{"code": 200, "id": third["id"], "status": "retry_scheduled"}]
    remaining = api.get("/instances/b/messages/pending?wait=0&max=10")[1]["messages"]
    assert [m["id"] for m in remaining] == [body["results"][3]["id"], body["results"][4]["id"]]
    assert api.get("/instances/b/messages/pending?max=0")[0] == 400
