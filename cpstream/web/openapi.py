"""The OpenAPI 3.1 document of ``/api/``: every route of :class:`~cpstream.web.api.ControlAPI`
with its parameters, its request body and every answer it can give, errors included.

The document is built from what the server enforces: the field sets and limits of
:mod:`cpstream.web.bodies`, the domain's rules (names, ports, types, retries, TTLs, statuses),
the request policy (:mod:`cpstream.web.guard`, :mod:`cpstream.web.deadline`) and the error
table (:mod:`cpstream.web.errors`), so a changed limit changes the document with it. A field
added to a body without a schema here makes :func:`document` fail (a ``KeyError``), and
``tests/test_openapi.py`` fails when a route and the document disagree.
``GET /api/openapi.json`` serves :func:`document`.
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from cpstream.domain.frames import INSTANCE_EVENT_TYPES, MESSAGE_EVENTS
from cpstream.domain.inbox import MAX_WAIT
from cpstream.domain.instances import (
    AUTO_PORTS,
    HEALTH_CHECKS,
    NAME_RE,
    PORT_RANGE,
    RESTART_POLICIES,
)
from cpstream.domain.instances import STATUSES as INSTANCE_STATUSES
from cpstream.domain.messaging import IN_FLIGHT, MAX_DETAIL, MAX_HOPS, MAX_PAYLOAD
from cpstream.domain.messaging import STATUSES as MESSAGE_STATUSES
from cpstream.domain.routing import (
    DEFAULT_RETRIES,
    DEFAULT_TTL,
    MAX_RETRIES,
    MAX_TTL,
    PATTERN_RE,
    TYPE_RE,
)
from cpstream.domain.usage import MAX_MINUTES
from cpstream.web.bodies import (
    ACK_FIELDS,
    CLONE_FIELDS,
    CREATE_FIELDS,
    FAIL_FIELDS,
    MAX_BATCH,
    MAX_TEXT,
    RULE_FIELDS,
    SEND_FIELDS,
)
from cpstream.web.deadline import BODY_DEADLINE, HEADERS_DEADLINE
from cpstream.web.errors import STATUS_OF
from cpstream.web.guard import MAX_BODY, MUTATING
from cpstream.web.representations import MESSAGE_KEYS

JSON = "application/json"
# Bounds api.py writes inline (``int_arg(request, "limit", 100, 1, 1000)``...).
LIMIT = (1, 1000, 100)  # low, high, default
SEQ_MAX = 2**62  # ``before`` and ``offset``
DEFAULT_LINES = 100


def _full(pattern: re.Pattern[str]) -> str:
    """A Python pattern matched with ``fullmatch`` as an anchored JSON Schema pattern."""
    return f"^(?:{pattern.pattern})$"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(
    properties: dict[str, Any], required: list[str] | tuple[str, ...] = (), **extra: Any
) -> dict[str, Any]:
    """A closed object: no property but those listed."""
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    schema["additionalProperties"] = False
    schema.update(extra)
    return schema


def _array(items: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "array", "items": items, **extra}


def _fields(schemas: dict[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    """The properties of a body that accepts exactly ``allowed`` (in a stable order); a field
    without a schema is a ``KeyError``: the document must not fall behind bodies.py."""
    return {field: schemas[field] for field in sorted(allowed)}


def _settle_batch(fields: frozenset[str]) -> dict[str, Any]:
    """``{"items": [...]}`` of 1 to MAX_BATCH settle items with ``fields`` and the id."""
    item = _object(_fields(SETTLE, fields | {"id"}), ["id", "lease_id"])
    return _object({"items": _array(item, minItems=1, maxItems=MAX_BATCH)}, ["items"])


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema["type"]
    return {**schema, "type": [*([kind] if isinstance(kind, str) else kind), "null"]}


TEXT = {"type": "string", "minLength": 1}
TIME = {"type": "string", "format": "date-time", "description": "UTC, ISO 8601, microseconds"}
NAME = {
    "type": "string",
    "pattern": _full(NAME_RE),
    "description": "1-64 letters, digits or '-', starting with a letter or digit",
}
PORT = {"type": "integer", "minimum": PORT_RANGE[0], "maximum": PORT_RANGE[-1]}
MESSAGE_TYPE = {
    "type": "string",
    "pattern": _full(TYPE_RE),
    "maxLength": MAX_TEXT,
    "description": "dot-separated words, e.g. 'task.handoff'",
}
SHORT_TEXT = {"type": ["string", "null"], "minLength": 1, "maxLength": MAX_TEXT}
UUID = {"type": "string", "format": "uuid"}
# What the domain maps to an HTTP status: the codes a batch item can be answered with.
ITEM_ERRORS = sorted(set(STATUS_OF.values()))

CREATE = {
    "name": NAME,
    "port": {
        **_nullable(PORT),
        "description": f"absent or null: the first free port from {AUTO_PORTS[0]}",
    },
    "command": {
        "type": ["array", "null"],
        "items": {"type": "string", "pattern": r"^[^\x00]+$"},
        "minItems": 1,
        "description": "the argv of the child (no NUL); absent or null: the built-in demo agent",
    },
    "env": {
        "type": ["object", "null"],
        "propertyNames": {"pattern": r"^[^=\x00]+$"},
        "additionalProperties": {"type": "string", "pattern": r"^[^\x00]*$"},
        "description": "added to the child's environment (names without '=', no NUL)",
    },
    "health": {"enum": list(HEALTH_CHECKS), "default": HEALTH_CHECKS[0]},
    "restart": {"enum": list(RESTART_POLICIES), "default": RESTART_POLICIES[0]},
}
CLONE = {
    "name": NAME,
    "port": {**_nullable(PORT), "description": "absent or null: the first free port"},
}
RULE = {
    "from_instance": {**NAME, "description": "an active instance (404 otherwise); no wildcard"},
    "to_instance": {**NAME, "description": "an active instance (404 otherwise); no wildcard"},
    "type_pattern": {
        "type": "string",
        "pattern": _full(PATTERN_RE),
        "description": "a message type ('task.handoff') or a prefix and '.*' ('task.*')",
    },
    "max_retries": {
        "type": "integer",
        "minimum": 0,
        "maximum": MAX_RETRIES,
        "default": DEFAULT_RETRIES,
    },
    "ttl_secs": {"type": "integer", "minimum": 1, "maximum": MAX_TTL, "default": DEFAULT_TTL},
}
SEND = {
    "from_instance": {**NAME, "description": "the sender, an active instance (404 otherwise)"},
    "to_instance": {**NAME, "description": "the recipient, an active instance (404 otherwise)"},
    "message_type": {**MESSAGE_TYPE, "description": "a routing rule must allow it (403)"},
    "payload": {
        "description": f"any JSON; at most {MAX_PAYLOAD} bytes as compact JSON (413 otherwise);"
        " secrets are redacted before it is stored"
    },
    "correlation_id": SHORT_TEXT,
    "idempotency_key": {
        **SHORT_TEXT,
        "description": "the same key from the same sender within 24 h is answered 200"
        " with the first message's id (deduplicated)",
    },
    "hop_count": {"type": "integer", "minimum": 0, "maximum": MAX_HOPS - 1, "default": 0},
}
SETTLE = {
    "id": {**TEXT, "description": "the message's id"},
    "lease_id": {**TEXT, "description": "the lease_id of the delivery"},
    "detail": {
        "type": ["string", "null"],
        "description": f"why it failed (redacted; the first {MAX_DETAIL} characters are kept)",
    },
}

EXAMPLE_MESSAGE = {
    "from_instance": "agent-1",
    "to_instance": "agent-2",
    "message_type": "task.handoff",
    "payload": {"task": "summarize", "doc": 42},
    "correlation_id": "job-42",
}
EXAMPLE_LEASE = "0b5c3a52-31f1-4f07-a7a5-4a4e0e7d1c2e"

USAGE_FIELDS = {
    "cpu": {"type": "number", "minimum": 0, "description": "% of one core since the last sample"},
    "rss": {"type": "integer", "minimum": 0, "description": "resident memory, bytes"},
    "fds": {"type": "integer", "minimum": 0, "description": "open file descriptors"},
    "threads": {"type": "integer", "minimum": 0},
    "children": {"type": "integer", "minimum": 0, "description": "processes besides the child"},
}
USAGE = {
    "oneOf": [
        {"type": "null"},
        _object({**USAGE_FIELDS, "at": TIME}, [*USAGE_FIELDS, "at"]),
    ],
    "description": "the latest sample of the child's whole process group (null when it is"
    " not running or not sampled yet)",
}
LAST_EXIT = {
    "oneOf": [
        {"type": "null"},
        _object({"code": {"type": "integer"}, "at": TIME}, ["code", "at"]),
        _object({"signal": {"type": "integer", "minimum": 1}, "at": TIME}, ["signal", "at"]),
    ],
    "description": "how the child last ended (null: never, or unknown for an adopted child)",
}
RESTARTS = {"type": "integer", "minimum": 0, "description": "starts after the first"}
# The REST shapes (cpstream.web.representations and the routes' own answers).
INSTANCE = {
    "id": UUID,
    "name": NAME,
    "port": PORT,
    "status": {"enum": [*INSTANCE_STATUSES, "archived"]},
    "pid": {"type": ["integer", "null"]},
    "command": _array({"type": "string"}),
    "health": {"enum": list(HEALTH_CHECKS)},
    "restart": {"enum": list(RESTART_POLICIES)},
    "created_at": TIME,
    "started_at": _nullable(TIME),
    "archived_at": _nullable(TIME),
    "usage": USAGE,
    "restarts": RESTARTS,
    "last_exit": LAST_EXIT,
}
MESSAGE = {
    "id": UUID,
    "from_instance": {"type": "string"},
    "to_instance": {"type": "string"},
    "message_type": {"type": "string"},
    "payload": {
        "description": "as sent, secrets redacted (only in a message read by its id or leased)"
    },
    "correlation_id": {"type": ["string", "null"]},
    "idempotency_key": {"type": ["string", "null"]},
    "hop_count": {"type": "integer", "minimum": 0},
    "status": {"enum": list(MESSAGE_STATUSES)},
    "attempts": {"type": "integer", "minimum": 0},
    "max_retries": {"type": "integer", "minimum": 0},
    "created_at": TIME,
    "updated_at": TIME,
    "expires_at": TIME,
    "lease_id": {"type": ["string", "null"], "description": "set while delivered"},
}
TIMELINE_ENTRY = _object(
    {
        "event": {"enum": sorted(MESSAGE_EVENTS)},
        "detail": {"type": ["string", "null"]},
        "timestamp": TIME,
    },
    ["event", "detail", "timestamp"],
)
EXIT = {
    "oneOf": [
        _object({"code": {"type": "integer"}}, ["code"]),
        _object({"signal": {"type": "string"}}, ["signal"]),
    ],
    "description": "how the child ended, when the change was its exit",
}
# Each instance event's own fields (cpstream.domain.frames), besides type, name, id, seq and
# timestamp; ``?`` marks a field only some events carry.
EVENT_FIELDS: dict[str, dict[str, Any]] = {
    "instance_created": {
        "port": PORT,
        "status": {"enum": list(INSTANCE_STATUSES)},
        "cloned_from?": NAME,
        "usage?": {"type": "null"},
        "restarts?": RESTARTS,
        "last_exit?": LAST_EXIT,
    },
    "status_changed": {
        "status": {"enum": list(INSTANCE_STATUSES)},
        "pid": {"type": ["integer", "null"]},
        "started_at": _nullable(TIME),
        "exit?": EXIT,
        "restarts?": RESTARTS,
        "last_exit?": LAST_EXIT,
    },
    "instance_archived": {},
    "instance_unarchived": {
        "port": PORT,
        "status": {"enum": list(INSTANCE_STATUSES)},
        "usage?": {"type": "null"},
        "restarts?": RESTARTS,
        "last_exit?": LAST_EXIT,
    },
    "instance_deleted": {},
}


def _instance_event(kind: str) -> dict[str, Any]:
    own = EVENT_FIELDS[kind]
    properties = {
        "type": {"const": kind},
        "name": NAME,
        "id": UUID,
        **{field.rstrip("?"): schema for field, schema in own.items()},
        "seq": {"type": "integer", "minimum": 1},
        "timestamp": TIME,
    }
    optional = {field.rstrip("?") for field in own if field.endswith("?")}
    return _object(properties, [f for f in properties if f not in optional])


def _schemas() -> dict[str, Any]:
    sent = {"id": UUID, "status": {"const": "queued"}, "expires_at": TIME}
    deduplicated = {"id": UUID, "deduplicated": {"const": True}}
    settled = {"id": {"type": "string"}, "status": {"enum": list(MESSAGE_STATUSES)}}
    item_error = _object(
        {"code": {"enum": ITEM_ERRORS}, "error": {"type": "string"}},
        ["code", "error"],
        description="an item refused on its own, with the status it would have had alone",
    )
    return {
        "Error": _object({"error": {"type": "string"}}, ["error"]),
        "Health": _object(
            {
                "status": {"const": "ok"},
                "instances": {
                    "type": "object",
                    "description": "active instances by name (for the operator only)",
                    "additionalProperties": _object(
                        {
                            "status": {"enum": list(INSTANCE_STATUSES)},
                            "pid": {"type": ["integer", "null"]},
                        },
                        ["status", "pid"],
                    ),
                },
                "broker": {
                    "type": "object",
                    "description": "where stream events go (for the operator only): kind"
                    " memory, or redis with reachable, live (caught up), connection_failures,"
                    " published, resets",
                    "properties": {"kind": {"enum": ["memory", "redis"]}},
                    "required": ["kind"],
                },
            },
            ["status"],
        ),
        "Session": _object(
            {"principal": {"enum": ["operator", "agent"]}, "name": {"type": ["string", "null"]}},
            ["principal", "name"],
            description="name: the agent's instance (null for the operator)",
        ),
        "Instance": _object(INSTANCE, list(INSTANCE)),
        "NewInstance": _object(
            _fields(CREATE, CREATE_FIELDS),
            ["name"],
            examples=[
                {"name": "agent-3", "command": ["python3", "-m", "my_agent"], "health": "process"}
            ],
        ),
        "Clone": _object(_fields(CLONE, CLONE_FIELDS), ["name"], examples=[{"name": "agent-4"}]),
        "UsageSeries": _object(
            {
                "id": UUID,
                "name": NAME,
                "interval": {"type": "number", "exclusiveMinimum": 0, "description": "seconds"},
                "samples": _array(_object({"at": TIME, **USAGE_FIELDS}, ["at", *USAGE_FIELDS])),
            },
            ["id", "name", "interval", "samples"],
            description="samples oldest first, one per interval while the instance ran",
        ),
        "MessageStats": _object(
            {
                "by_status": _object(
                    {status: {"type": "integer", "minimum": 0} for status in MESSAGE_STATUSES},
                    list(MESSAGE_STATUSES),
                ),
                "in_flight": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "not finished: " + ", ".join(IN_FLIGHT),
                },
                "dead_letter": {"type": "integer", "minimum": 0},
            },
            ["by_status", "in_flight", "dead_letter"],
        ),
        "Lifecycle": _object(
            {"status": {"enum": [*INSTANCE_STATUSES, "archived"]}, "name": NAME},
            ["status", "name"],
            description="the instance's status after the operation",
        ),
        "Deleted": _object({"status": {"const": "deleted"}, "name": NAME}, ["status", "name"]),
        "LogTail": _object(
            {"name": NAME, "mode": {"const": "tail"}, "lines": _array({"type": "string"})},
            ["name", "mode", "lines"],
        ),
        "LogPage": _object(
            {
                "name": NAME,
                "mode": {"const": "page"},
                "offset": {"type": "integer", "minimum": 0},
                "next_offset": {"type": "integer", "minimum": 0},
                "lines": _array({"type": "string"}),
            },
            ["name", "mode", "offset", "next_offset", "lines"],
        ),
        "InstanceEvent": {
            "oneOf": [_instance_event(kind) for kind in sorted(INSTANCE_EVENT_TYPES)],
            "description": "a /ws/instances frame, as the stream sent it",
        },
        "NewRoutingRule": _object(
            _fields(RULE, RULE_FIELDS),
            ["from_instance", "to_instance", "type_pattern"],
            examples=[
                {
                    "from_instance": "agent-1",
                    "to_instance": "agent-2",
                    "type_pattern": "report.*",
                    "max_retries": 3,
                    "ttl_secs": 600,
                }
            ],
        ),
        "RoutingRule": _object(
            {
                "id": UUID,
                "from_instance": NAME,
                "to_instance": NAME,
                "type_pattern": RULE["type_pattern"],
                "max_retries": {"type": "integer", "minimum": 0, "maximum": MAX_RETRIES},
                "ttl_secs": {"type": "integer", "minimum": 1, "maximum": MAX_TTL},
                "created_at": TIME,
            },
            [
                "id",
                "from_instance",
                "to_instance",
                "type_pattern",
                "max_retries",
                "ttl_secs",
                "created_at",
            ],
        ),
        "RuleDeleted": _object(
            {"id": {"type": "string"}, "status": {"const": "deleted"}}, ["id", "status"]
        ),
        "NewMessage": _object(
            _fields(SEND, SEND_FIELDS),
            ["from_instance", "to_instance", "message_type"],
            examples=[EXAMPLE_MESSAGE],
        ),
        "Sent": _object(sent, list(sent)),
        "Deduplicated": _object(deduplicated, list(deduplicated)),
        "Message": _object(
            {**_fields(MESSAGE, frozenset(MESSAGE_KEYS)), "events": _array(TIMELINE_ENTRY)},
            [key for key in MESSAGE_KEYS if key != "payload"],
            description="payload and events: only in a message read by its id (events) or"
            " leased (payload)",
        ),
        "Pending": _object(
            {"message": {"oneOf": [_ref("Message"), {"type": "null"}]}}, ["message"]
        ),
        "PendingBatch": _object(
            {"messages": _array(_ref("Message"), maxItems=MAX_BATCH)}, ["messages"]
        ),
        "Acknowledge": _object(
            _fields(SETTLE, ACK_FIELDS), ["lease_id"], examples=[{"lease_id": EXAMPLE_LEASE}]
        ),
        "Fail": _object(
            _fields(SETTLE, FAIL_FIELDS),
            ["lease_id"],
            examples=[{"lease_id": EXAMPLE_LEASE, "detail": "the document was empty"}],
        ),
        "Settled": _object(settled, list(settled)),
        "ItemError": item_error,
        "SendBatch": _object(
            {"messages": _array(_ref("NewMessage"), minItems=1, maxItems=MAX_BATCH)},
            ["messages"],
            examples=[{"messages": [EXAMPLE_MESSAGE, {**EXAMPLE_MESSAGE, "payload": {"doc": 43}}]}],
        ),
        "AcknowledgeBatch": _settle_batch(ACK_FIELDS),
        "FailBatch": _settle_batch(FAIL_FIELDS),
        "SendResults": _object(
            {
                "results": _array(
                    {
                        "oneOf": [
                            _object({"code": {"const": 201}, **sent}, ["code", *sent]),
                            _object(
                                {"code": {"const": 200}, **deduplicated}, ["code", *deduplicated]
                            ),
                            _ref("ItemError"),
                        ]
                    }
                )
            },
            ["results"],
            description="one result per item, in order",
        ),
        "SettleResults": _object(
            {
                "results": _array(
                    {
                        "oneOf": [
                            _object({"code": {"const": 200}, **settled}, ["code", *settled]),
                            _ref("ItemError"),
                        ]
                    }
                )
            },
            ["results"],
            description="one result per item, in order",
        ),
    }


# -- answers -------------------------------------------------------------------------------


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


CHALLENGE = 'Bearer realm="cpstream"'  # the site's WWW-Authenticate on a 401
POLICY = {
    "400": "the Host header is missing, repeated or malformed, or the URL path is not UTF-8",
    "403": "the Host is not served here, the request is cross-site or cross-origin, or an"
    " agent's token does not allow it",
    "408": f"the request's headers did not arrive within {HEADERS_DEADLINE:g} s or its body"
    f" within {BODY_DEADLINE:g} s (the connection is then closed)",
    "413": f"a request body over {MAX_BODY} bytes, refused from its declared length (the"
    " connection is then closed)",
    "415": "a request body that is not application/json",
}


def _answers(method: str, public: bool, own: dict[str, Any]) -> dict[str, Any]:
    """The operation's own answers, then every refusal of the site's request policy that can
    come before the route (each merged with the route's own answer of that status)."""
    answers = dict(own)
    policy = dict(POLICY)
    if method.upper().encode() not in MUTATING:
        del policy["415"]
    if not public:
        answers.setdefault(
            "401",
            {
                **_error("no valid credentials: Authorization: Bearer <token>, or a session"),
                "headers": {"WWW-Authenticate": {"required": True, "schema": {"const": CHALLENGE}}},
            },
        )
    for status, why in policy.items():
        if status in answers:
            answers[status] = {**answers[status]}
            answers[status]["description"] += f"; or {why}"
        else:
            answers[status] = _error(why)
    return dict(sorted(answers.items()))


def _path(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema or {"type": "string", "minLength": 1},
    }


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def _integer(low: int, high: int, default: int | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "minimum": low, "maximum": high}
    if default is not None:
        schema["default"] = default
    return schema


INSTANCE_NAME = {**_path("name", "the instance's name", NAME), "example": "agent-1"}
MESSAGE_ID = _path("message_id", "the message's id (a UUID)", {"type": "string", "format": "uuid"})
LIMIT_ARG = _query("limit", "at most this many, newest first", _integer(*LIMIT))


def _operation(
    method: str,
    operation_id: str,
    summary: str,
    answers: dict[str, Any],
    tag: str,
    parameters: tuple[dict[str, Any], ...] = (),
    body: str | None = None,
    public: bool = False,
) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": operation_id, "summary": summary, "tags": [tag]}
    if parameters:
        operation["parameters"] = list(parameters)
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {JSON: {"schema": _ref(body)}}}
    if public:
        operation["security"] = [{}, {"bearer": []}]
    operation["responses"] = _answers(method, public, answers)
    return operation


# -- the document ------------------------------------------------------------------------------


def _paths(max_log_lines: int) -> dict[str, dict[str, Any]]:
    """Every operation, then the links between them."""
    paths = _operations(max_log_lines)
    for (path, method, status), links in LINKS.items():
        paths[path][method]["responses"][status]["links"] = {
            name: {"operationId": target, **how} for name, (target, how) in links.items()
        }
    return paths


def _by(pointer: str) -> str:
    return f"$response.body#{pointer}"


# How an answer feeds the next requests: (path, method, status) -> name -> (operationId, how).
LINKS: dict[tuple[str, str, str], dict[str, tuple[str, dict[str, Any]]]] = {
    ("/instances", "post", "201"): {
        verb: (verb, {"parameters": {"name": _by("/name")}})
        for verb in ("get_instance", "start", "archive", "logs", "instance_events")
    },
    ("/instances/{name}/archive", "post", "200"): {
        "Unarchive": ("unarchive", {"parameters": {"name": _by("/name")}}),
        "Delete": ("delete_instance", {"parameters": {"name": _by("/name")}}),
    },
    ("/routing-rules", "post", "201"): {
        "Delete": ("delete_rule", {"parameters": {"rule_id": _by("/id")}}),
    },
    ("/messages", "post", "201"): {
        "Get": ("message", {"parameters": {"message_id": _by("/id")}}),
        "Replay": ("replay", {"parameters": {"message_id": _by("/id")}}),
    },
    ("/instances/{name}/messages/pending", "get", "200"): {
        verb: (
            verb,
            {
                "parameters": {"message_id": _by("/message/id")},
                "requestBody": {"lease_id": _by("/message/lease_id")},
            },
        )
        for verb in ("acknowledge", "fail")
    },
}


def _operations(max_log_lines: int) -> dict[str, dict[str, Any]]:
    ok = _json
    instance = _ref("Instance")
    messages = _array(_ref("Message"))
    no_instance = _error("no instance of that name")
    lifecycle_conflict = _error("the instance is not in a status that allows it")
    invalid = _error("the body or a query argument is invalid")
    no_message = _error("no message with that id")
    lease_conflict = _error("the message is not delivered, or the lease is not its current one")

    def lifecycle(verb: str, summary: str) -> dict[str, Any]:
        return {
            "post": _operation(
                "post",
                verb,
                summary,
                {
                    "200": ok(_ref("Lifecycle"), "the instance's status after it"),
                    "404": no_instance,
                    "409": lifecycle_conflict,
                },
                "instances",
                (INSTANCE_NAME,),
            )
        }

    def settle_one(verb: str, body: str, done: str) -> dict[str, Any]:
        return {
            "post": _operation(
                "post",
                verb,
                f"{verb.capitalize()} a delivered message under its lease",
                {
                    "200": ok(_ref("Settled"), done),
                    "400": _error("the body is invalid (lease_id missing)"),
                    "403": _error("an agent settles only messages sent to it"),
                    "404": no_message,
                    "409": lease_conflict,
                },
                "messages",
                (MESSAGE_ID,),
                body,
            )
        }

    def settle_batch(verb: str, body: str) -> dict[str, Any]:
        return {
            "post": _operation(
                "post",
                f"settle_batch_{verb}",
                f"{verb.capitalize()} up to {MAX_BATCH} leased messages, each answered on its"
                " own (one transaction)",
                {
                    "200": ok(_ref("SettleResults"), "one result per item"),
                    "400": _error(f"the body is not {{items: [1..{MAX_BATCH} items]}}"),
                },
                "messages",
                body=body,
            )
        }

    return {
        "/health": {
            "get": _operation(
                "get",
                "health",
                "Liveness; the operator is also told each active instance's status and pid",
                {"200": ok(_ref("Health"), "always ok; instances only for the operator")},
                "meta",
                public=True,
            )
        },
        "/session": {
            "get": _operation(
                "get",
                "session",
                "Whom the credentials speak for",
                {"200": ok(_ref("Session"), "the principal")},
                "meta",
            )
        },
        "/openapi.json": {
            "get": _operation(
                "get",
                "openapi_document",
                "This document",
                {"200": ok({"type": "object"}, "the OpenAPI 3.1 document of /api/")},
                "meta",
            )
        },
        "/instances": {
            "get": _operation(
                "get",
                "list_instances",
                "The instances, oldest first",
                {"200": ok(_array(instance), "the instances")},
                "instances",
                (
                    _query(
                        "include_archived",
                        "'true', '1' or 'yes' lists archived instances too; any other value"
                        " does not",
                        {"type": "string", "default": "false"},
                    ),
                ),
            ),
            "post": _operation(
                "post",
                "create_instance",
                "Create a stopped instance",
                {
                    "201": ok(instance, "the new instance"),
                    "400": _error("the body is invalid"),
                    "409": _error(
                        "the name or port is taken by an active instance, or no port is free"
                    ),
                },
                "instances",
                body="NewInstance",
            ),
        },
        "/instances/{name}": {
            "get": _operation(
                "get",
                "get_instance",
                "One instance (the active one, else the most recently archived)",
                {"200": ok(instance, "the instance"), "404": no_instance},
                "instances",
                (INSTANCE_NAME,),
            ),
            "delete": _operation(
                "delete",
                "delete_instance",
                "Delete an archived instance for good, its logs with it",
                {
                    "200": ok(_ref("Deleted"), "deleted"),
                    "404": no_instance,
                    "409": _error("the instance is not archived"),
                },
                "instances",
                (INSTANCE_NAME,),
            ),
        },
        "/instances/{name}/start": lifecycle("start", "Start a stopped or crashed instance"),
        "/instances/{name}/stop": lifecycle(
            "stop", "Stop an instance (SIGTERM, SIGKILL after the grace period)"
        ),
        "/instances/{name}/restart": lifecycle("restart", "Stop (when live), then start"),
        "/instances/{name}/archive": lifecycle("archive", "Stop if live, then archive"),
        "/instances/{name}/unarchive": lifecycle(
            "unarchive", "Bring back the most recently archived instance of that name, stopped"
        ),
        "/instances/{name}/clone": {
            "post": _operation(
                "post",
                "clone",
                "A new stopped instance with this one's command, env, health and restart",
                {
                    "201": ok(instance, "the new instance"),
                    "400": _error("the body is invalid"),
                    "404": no_instance,
                    "409": _error("the name or port is taken, or no port is free"),
                },
                "instances",
                (INSTANCE_NAME,),
                "Clone",
            )
        },
        "/instances/{name}/logs": {
            "get": _operation(
                "get",
                "logs",
                "Lines of the current log: the last ones (tail), or from a line on (page)",
                {
                    "200": ok({"oneOf": [_ref("LogTail"), _ref("LogPage")]}, "the lines"),
                    "400": invalid,
                    "404": no_instance,
                },
                "logs",
                (
                    INSTANCE_NAME,
                    _query("lines", "how many lines", _integer(1, max_log_lines, DEFAULT_LINES)),
                    _query(
                        "mode",
                        "tail: the last lines; page: from offset on",
                        {"enum": ["tail", "page"], "default": "tail"},
                    ),
                    _query(
                        "offset",
                        "the first line (0-based), with mode=page",
                        _integer(0, SEQ_MAX, 0),
                    ),
                ),
            )
        },
        "/instances/{name}/logs/download": {
            "get": _operation(
                "get",
                "download",
                "The current log file as it was when the request came",
                {
                    "200": {
                        "description": "exactly Content-Length bytes (the connection is closed"
                        " if the file is truncated meanwhile)",
                        "headers": {
                            "Content-Disposition": {
                                "required": True,
                                "schema": {"type": "string"},
                                "description": 'attachment; filename="NAME.log"',
                            }
                        },
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "404": _error("no instance of that name, or it has no log yet"),
                },
                "logs",
                (INSTANCE_NAME,),
            )
        },
        "/instances/{name}/events": {
            "get": _operation(
                "get",
                "instance_events",
                "The instance's lifecycle history, newest first",
                {
                    "200": ok(_array(_ref("InstanceEvent")), "the events"),
                    "400": invalid,
                    "404": no_instance,
                },
                "instances",
                (
                    INSTANCE_NAME,
                    _query("limit", "at most this many", _integer(*LIMIT)),
                    _query("before", "only events with a lower seq", _integer(1, SEQ_MAX)),
                ),
            )
        },
        "/instances/{name}/usage": {
            "get": _operation(
                "get",
                "usage",
                "The instance's resource samples (CPU, memory, descriptors, threads,"
                " processes) of the last minutes, oldest first; kept in memory",
                {
                    "200": ok(_ref("UsageSeries"), "the samples"),
                    "400": invalid,
                    "404": no_instance,
                },
                "instances",
                (
                    INSTANCE_NAME,
                    _query("minutes", "how far back", _integer(1, MAX_MINUTES, 10)),
                ),
            )
        },
        "/instances/{name}/messages": {
            "get": _operation(
                "get",
                "instance_messages",
                "Messages from or to the instance, newest first, without payloads",
                {"200": ok(messages, "the messages"), "400": invalid, "404": no_instance},
                "messages",
                (
                    INSTANCE_NAME,
                    _query(
                        "direction",
                        "in: sent to it; out: sent by it; absent: both",
                        {"enum": ["in", "out"]},
                    ),
                    _query(
                        "status", "only messages in this status", {"enum": list(MESSAGE_STATUSES)}
                    ),
                    LIMIT_ARG,
                ),
            )
        },
        "/instances/{name}/messages/pending": {
            "get": _operation(
                "get",
                "pending",
                "Long poll: lease the oldest queued message (or, with max, up to max of them),"
                " waiting up to wait seconds for the first",
                {
                    "200": ok(
                        {"oneOf": [_ref("Pending"), _ref("PendingBatch")]},
                        "without max: {message} (null if none came); with max: {messages}",
                    ),
                    "400": invalid,
                    "404": _error("no active instance of that name"),
                },
                "messages",
                (
                    INSTANCE_NAME,
                    _query("wait", "seconds to wait for a message", _integer(0, MAX_WAIT, 0)),
                    _query("max", "lease up to this many at once", _integer(1, MAX_BATCH)),
                ),
            )
        },
        "/routing-rules": {
            "get": _operation(
                "get",
                "list_rules",
                "The routing rules, oldest first",
                {"200": ok(_array(_ref("RoutingRule")), "the rules")},
                "routing",
            ),
            "post": _operation(
                "post",
                "add_rule",
                "Allow messages of matching types from one instance to another",
                {
                    "201": ok(_ref("RoutingRule"), "the new rule"),
                    "400": _error("the body is invalid"),
                    "404": _error("from_instance or to_instance is not an active instance"),
                    "409": _error("that rule exists"),
                },
                "routing",
                body="NewRoutingRule",
            ),
        },
        "/routing-rules/{rule_id}": {
            "delete": _operation(
                "delete",
                "delete_rule",
                "Delete a routing rule",
                {"200": ok(_ref("RuleDeleted"), "deleted"), "404": _error("no such rule")},
                "routing",
                (_path("rule_id", "the rule's id"),),
            )
        },
        "/messages": {
            "get": _operation(
                "get",
                "search",
                "Messages matching every filter given, newest first, without payloads",
                {"200": ok(messages, "the messages"), "400": invalid},
                "messages",
                (
                    _query("instance", "sent by or to this instance", {"type": "string"}),
                    _query("correlation_id", "with this correlation id", {"type": "string"}),
                    _query("status", "in this status", {"enum": list(MESSAGE_STATUSES)}),
                    _query("type", "of this message type", {"type": "string"}),
                    LIMIT_ARG,
                ),
            ),
            "post": _operation(
                "post",
                "send",
                "Queue a message (an agent sends only as itself)",
                {
                    "200": ok(_ref("Deduplicated"), "an idempotency key seen within 24 h"),
                    "201": ok(_ref("Sent"), "queued"),
                    "400": _error(f"the body is invalid, or hop_count reached {MAX_HOPS}"),
                    "403": _error("no routing rule allows it, or an agent sends as another"),
                    "404": _error("the sender or the recipient is not an active instance"),
                    "413": _error(f"the payload is over {MAX_PAYLOAD} bytes as JSON"),
                },
                "messages",
                body="NewMessage",
            ),
        },
        "/messages/batch": {
            "post": _operation(
                "post",
                "send_batch",
                f"Up to {MAX_BATCH} sends in one transaction, each answered on its own",
                {
                    "200": ok(_ref("SendResults"), "one result per item"),
                    "400": _error(f"the body is not {{messages: [1..{MAX_BATCH} items]}}"),
                },
                "messages",
                body="SendBatch",
            )
        },
        "/messages/acknowledge": settle_batch("acknowledge", "AcknowledgeBatch"),
        "/messages/fail": settle_batch("fail", "FailBatch"),
        "/messages/stats": {
            "get": _operation(
                "get",
                "message_stats",
                "How many messages are in each status, in flight and dead-lettered",
                {"200": ok(_ref("MessageStats"), "the counts")},
                "messages",
            )
        },
        "/messages/dead_letter": {
            "get": _operation(
                "get",
                "dead_letters",
                "Dead-lettered messages, newest first, without payloads",
                {"200": ok(messages, "the messages"), "400": invalid},
                "messages",
                (LIMIT_ARG,),
            )
        },
        "/messages/{message_id}": {
            "get": _operation(
                "get",
                "message",
                "One message, its payload (redacted) and its event timeline",
                {"200": ok(_ref("Message"), "the message"), "404": no_message},
                "messages",
                (MESSAGE_ID,),
            )
        },
        "/messages/{message_id}/acknowledge": settle_one(
            "acknowledge", "Acknowledge", "acknowledged"
        ),
        "/messages/{message_id}/fail": settle_one(
            "fail", "Fail", "retry_scheduled, or dead_letter when its retries are spent"
        ),
        "/messages/{message_id}/replay": {
            "post": _operation(
                "post",
                "replay",
                "Queue a dead-lettered message again, its attempts reset",
                {
                    "200": ok(_ref("Settled"), "queued"),
                    "404": no_message,
                    "409": _error("the message is not dead-lettered"),
                },
                "messages",
                (MESSAGE_ID,),
            )
        },
    }


DESCRIPTION = f"""\
The REST API of a cpstream control plane. Every answer is JSON (the log download is
text), every error is `{{"error": "..."}}` with its status.

Every request needs the operator token as `Authorization: Bearer <token>` (the token is
`DATA/operator.token`) or a browser session, except `GET /api/health`. An agent's token
(`CPSTREAM_TOKEN` in its environment) may only read its own instance, send as itself,
lease its own pending messages and settle the messages delivered to it (403 otherwise).

The request policy comes before any route: a foreign Host, Origin or Sec-Fetch-Site is
403, a body that is not `application/json` is 415, a body over {MAX_BODY} bytes is 413, a
request too slow to arrive is 408. Every GET also answers HEAD (the same headers, no
body), except `pending`, whose GET leases: its HEAD is 405. A method a path does not have is
405 with the path's `Allow`; OPTIONS is always 405 (no CORS).
"""


def _version() -> str:
    try:
        return version("cpstream")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "0+unknown"


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``/api/``, as a JSON-ready dict (a new one each call)."""
    from cpstream.web.api import MAX_LOG_LINES  # api.py serves this document

    return {
        "openapi": "3.1.0",
        "info": {"title": "cpstream", "version": _version(), "description": DESCRIPTION},
        "servers": [{"url": "/api"}],
        "security": [{"bearer": []}],
        "tags": [
            {"name": "meta", "description": "health, session and this document"},
            {"name": "instances", "description": "instances and their lifecycle"},
            {"name": "logs", "description": "instance logs"},
            {"name": "routing", "description": "the routing rules (the allowlist of routes)"},
            {"name": "messages", "description": "messaging: send, lease, settle, triage"},
        ],
        "paths": _paths(MAX_LOG_LINES),
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the operator token (DATA/operator.token) or an agent's"
                    " token (CPSTREAM_TOKEN)",
                }
            },
            "schemas": _schemas(),
        },
    }
