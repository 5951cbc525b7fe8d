"""The OpenAPI document of /api/ stays true: it names exactly the Klein routes, it is a valid
OpenAPI 3.1 document, its bodies name exactly the fields bodies.py accepts, every operation
lists the refusals of the request policy, its query bounds hold on a running control plane,
and a real daemon serves it as :func:`cpstream.web.openapi.document` builds it.

The whole contract (statuses, bodies, shapes) is fuzzed against a real daemon by
tests/test_schemathesis.py.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import pytest_twisted
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from cpstream.domain.instances import Instance
from cpstream.web.api import ControlAPI
from cpstream.web.bodies import (
    ACK_FIELDS,
    CLONE_FIELDS,
    CREATE_FIELDS,
    FAIL_FIELDS,
    RULE_FIELDS,
    SEND_FIELDS,
)
from cpstream.web.guard import MUTATING
from cpstream.web.openapi import document
from cpstream.web.representations import MESSAGE_KEYS, instance_json
from cpstream.web.site import UNAUTHENTICATED
from tests.support import create, get_json, http

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# <converter(args):name> in a werkzeug rule; the converter is optional.
PLACEHOLDER = re.compile(r"<(?:(?P<converter>\w+)(?:\((?P<args>[^)]*)\))?:)?(?P<name>\w+)>")


def expansions(rule: str) -> list[tuple[str, str]]:
    """A werkzeug rule as OpenAPI paths, each with its operationId suffix: ``<string:name>``
    is ``{name}``; ``<any(a, b):verb>`` is one path per value (``_a``, ``_b``)."""
    paths = [("", "")]
    position = 0
    for match in PLACEHOLDER.finditer(rule):
        literal = rule[position : match.start()]
        position = match.end()
        if match["converter"] == "any":
            values = [v.strip().strip("'\"") for v in match["args"].split(",")]
            paths = [(p + literal + v, s + "_" + v) for p, s in paths for v in values]
        else:
            paths = [(p + literal + "{" + match["name"] + "}", s) for p, s in paths]
    return [(p + rule[position:], s) for p, s in paths]


def routes() -> dict[tuple[str, str], tuple[str, set[str]]]:
    """(OpenAPI path, method) -> (operationId, path parameters), from the Klein app's rules."""
    found: dict[tuple[str, str], tuple[str, set[str]]] = {}
    for rule in ControlAPI.app.url_map.iter_rules():
        methods = {m.lower() for m in rule.methods or ()}
        # werkzeug answers HEAD wherever there is a GET, and only there.
        assert ("head" in methods) == ("get" in methods), rule.rule
        for path, suffix in expansions(rule.rule):
            parameters = set(re.findall(r"{(\w+)}", path))
            for method in methods - {"head"}:
                assert (path, method) not in found, f"{method} {path} has two routes"
                found[(path, method)] = (rule.endpoint + suffix, parameters)
    return found


def operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (path, method): operation
        for path, item in doc["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }


def resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        *_, kind, name = node["$ref"].split("/")
        node = doc["components"][kind][name]
    return node


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return document()


def test_expansions_of_werkzeug_rules():
    """The rule-to-path conversion the route check relies on."""
    assert expansions("/instances/<string:name>/logs") == [("/instances/{name}/logs", "")]
    assert expansions("/messages/<any(acknowledge, fail):verb>") == [
        ("/messages/acknowledge", "_acknowledge"),
        ("/messages/fail", "_fail"),
    ]
    assert expansions("/a/<x>/<any('p','q'):v>") == [("/a/{x}/p", "_p"), ("/a/{x}/q", "_q")]


def test_every_route_is_documented_and_nothing_else(doc):
    """Each Klein route is one operation of the document, with the route's endpoint as its
    operationId and its path parameters, and the document has no operation without a route."""
    served = routes()
    documented = operations(doc)
    assert sorted(set(served) - set(documented)) == [], "routes missing from the document"
    assert sorted(set(documented) - set(served)) == [], "documented operations with no route"
    for key, (endpoint, parameters) in served.items():
        operation = documented[key]
        assert operation["operationId"] == endpoint, key
        declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert declared == parameters, key
    ids = [operation["operationId"] for operation in documented.values()]
    assert len(ids) == len(set(ids))


def test_the_document_is_valid_openapi_3_1(doc):
    """openapi-spec-validator accepts it as OpenAPI 3.1 (schemas, references, parameters)."""
    assert doc["openapi"].startswith("3.1.")
    validate(doc, cls=OpenAPIV31SpecValidator)


def test_request_bodies_name_exactly_the_fields_bodies_py_accepts(doc):
    """Every body schema lists the fields its parser accepts, refuses the others, and
    requires what the parser requires."""
    schemas = doc["components"]["schemas"]
    expected = {
        "NewInstance": (CREATE_FIELDS, {"name"}),
        "Clone": (CLONE_FIELDS, {"name"}),
        "NewRoutingRule": (RULE_FIELDS, {"from_instance", "to_instance", "type_pattern"}),
        "NewMessage": (SEND_FIELDS, {"from_instance", "to_instance", "message_type"}),
        "Acknowledge": (ACK_FIELDS, {"lease_id"}),
        "Fail": (FAIL_FIELDS, {"lease_id"}),
        "SendBatch": ({"messages"}, {"messages"}),
        "AcknowledgeBatch": ({"items"}, {"items"}),
        "FailBatch": ({"items"}, {"items"}),
    }
    for name, (fields, required) in expected.items():
        schema = schemas[name]
        assert set(schema["properties"]) == set(fields), name
        assert set(schema.get("required", [])) == required, name
        assert schema["additionalProperties"] is False, name
    for name, fields in (("AcknowledgeBatch", ACK_FIELDS), ("FailBatch", FAIL_FIELDS)):
        item = schemas[name]["properties"]["items"]["items"]
        assert set(item["properties"]) == fields | {"id"} and item["additionalProperties"] is False
    # Each body is the one its route parses.
    bodies = {
        key: resolve(doc, op["requestBody"]["content"]["application/json"]["schema"])
        for key, op in operations(doc).items()
        if "requestBody" in op
    }
    assert bodies[("/instances", "post")] is schemas["NewInstance"]
    assert bodies[("/messages/fail", "post")] is schemas["FailBatch"]
    assert bodies[("/messages/{message_id}/fail", "post")] is schemas["Fail"]


def test_the_rest_shapes_name_exactly_the_fields_the_server_sends(doc):
    """The Instance and Message schemas list the keys representations.py sends."""
    schemas = doc["components"]["schemas"]
    instance = Instance(
        id="i", name="a", port=18801, command=["x"], env={}, health="http",
        restart="never", status="stopped", pid=None, created_at="t",
    )  # fmt: skip
    assert set(schemas["Instance"]["properties"]) == set(instance_json(instance))
    assert set(schemas["Instance"]["required"]) == set(instance_json(instance))
    assert set(schemas["Message"]["properties"]) == set(MESSAGE_KEYS) | {"events"}
    assert set(schemas["Message"]["required"]) == set(MESSAGE_KEYS) - {"payload"}


def test_every_operation_lists_the_refusals_of_the_request_policy(doc):
    """400 (Host), 403 (Host, cross-site, agents), 408, 413 everywhere; 401 except where no
    credential is needed; 415 on the methods that carry a body. Errors are {"error"}."""
    public = {(p.decode().removeprefix("/api"), m.decode().lower()) for m, p in UNAUTHENTICATED}
    for (path, method), operation in operations(doc).items():
        answers = operation["responses"]
        assert {"400", "403", "408", "413"} <= set(answers), (path, method)
        assert ("401" in answers) == ((path, method) not in public), (path, method)
        assert ("security" in operation) == ((path, method) in public), (path, method)
        assert ("415" in answers) == (method.upper().encode() in MUTATING), (path, method)
        for status, answer in answers.items():
            if status.startswith("4"):
                schema = answer["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (path, method, status)
    scheme = doc["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert doc["security"] == [{"bearer": []}]


def integer_arguments(doc: dict[str, Any]) -> list[tuple[str, str, int, int]]:
    """(path, argument, minimum, maximum) of every bounded integer query argument."""
    found = []
    for (path, method), operation in operations(doc).items():
        for parameter in operation.get("parameters", []):
            schema = parameter["schema"]
            if parameter["in"] == "query" and schema.get("type") == "integer":
                assert method == "get"
                found.append((path, parameter["name"], schema["minimum"], schema["maximum"]))
    return found


def test_every_integer_query_argument_is_bounded(doc):
    """Each integer query argument has both bounds (the probe below checks them)."""
    names = {(path, name) for path, name, _, _ in integer_arguments(doc)}
    assert {
        ("/instances/{name}/logs", "lines"),
        ("/instances/{name}/logs", "offset"),
        ("/instances/{name}/events", "limit"),
        ("/instances/{name}/events", "before"),
        ("/instances/{name}/messages/pending", "wait"),
        ("/instances/{name}/messages/pending", "max"),
        ("/messages", "limit"),
    } <= names


@pytest_twisted.ensureDeferred
async def test_query_bounds_hold_on_a_control_plane(cp, doc):
    """Each bounded integer argument is accepted at its bounds and refused (400) one past
    them; each enumerated argument refuses a value outside its enum."""
    await create(cp.url, "probe")
    # pending parses its arguments before it looks the instance up: an unknown instance
    # answers at once (404) where a known one would wait for a message.
    names = {"/instances/{name}/messages/pending": "nobody"}
    checked = 0
    for path, argument, low, high in integer_arguments(doc):
        url = cp.api(path.replace("{name}", names.get(path, "probe")))
        for value, refused in ((low - 1, True), (low, False), (high, False), (high + 1, True)):
            code, body = await get_json(f"{url}?{argument}={value}")
            assert (code == 400) == refused, (path, argument, value, code, body)
            checked += 1
    for (path, _), operation in operations(doc).items():
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "query" and "enum" in parameter["schema"]:
                url = cp.api(path.replace("{name}", "probe"))
                code, body = await get_json(f"{url}?{parameter['name']}=bogus")
                assert code == 400, (path, parameter["name"], code, body)
                checked += 1
    assert checked >= 30


@pytest_twisted.ensureDeferred
async def test_a_real_daemon_serves_the_document(daemon):
    """GET /api/openapi.json answers the module's document, to the operator only."""
    code, served = await get_json(f"{daemon.url}/api/openapi.json")
    assert code == 200
    assert served == document()
    response = await http.get(
        f"{daemon.url}/api/openapi.json", headers={b"Authorization": [b"Bearer wrong"]}
    )
    assert response.code == 401 and await response.json() == {"error": "unauthorized"}


def test_links_name_real_operations_and_their_parameters(doc):
    """Each link targets a documented operation, by its operationId, and fills in exactly
    that operation's path parameters (and a body only where it takes one)."""
    by_id = {op["operationId"]: op for op in operations(doc).values()}
    links = [
        link
        for op in operations(doc).values()
        for answer in op["responses"].values()
        for link in answer.get("links", {}).values()
    ]
    assert len(links) >= 10
    for link in links:
        target = by_id[link["operationId"]]
        path_parameters = {p["name"] for p in target.get("parameters", []) if p["in"] == "path"}
        assert set(link.get("parameters", {})) == path_parameters, link
        assert ("requestBody" in link) <= ("requestBody" in target), link
