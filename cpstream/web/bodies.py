"""Request parsing: JSON bodies, query arguments, and the fields each route accepts.

Everything a request carries is checked here, in the web layer, for shape
(JSON, known fields, required fields, types); the domain then checks the
values' own rules. A failure is :class:`~cpstream.domain.errors.Invalid` (400).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.web.iweb import IRequest

from cpstream.domain.errors import Invalid

CREATE_FIELDS = frozenset({"name", "port", "command", "env", "health", "restart"})
CLONE_FIELDS = frozenset({"name", "port"})
RULE_FIELDS = frozenset({"from_instance", "to_instance", "type_pattern", "max_retries", "ttl_secs"})
# What a sender says about its message, in the order the REST shape of a message shows it.
SENT = (
    "from_instance",
    "to_instance",
    "message_type",
    "payload",
    "correlation_id",
    "idempotency_key",
    "hop_count",
)
SEND_FIELDS = frozenset(SENT)
ACK_FIELDS = frozenset({"lease_id"})
FAIL_FIELDS = frozenset({"lease_id", "detail"})
MAX_BATCH = 100
MAX_TEXT = 200


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def parse_json(raw: bytes) -> dict[str, Any]:
    """A JSON object (``{}`` when empty); :class:`Invalid` when malformed, nested too
    deeply, holding NaN or Infinity, or a string that is not Unicode."""
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw, parse_constant=_not_json)
    except RecursionError:
        raise Invalid("malformed JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise Invalid(f"malformed JSON: {e}") from e
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise Invalid("malformed JSON: a string holds a lone surrogate") from None
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object")
    return body


def json_body(request: IRequest, allowed: frozenset[str] | None = None) -> dict[str, Any]:
    """The request's JSON object body; unknown fields are refused when ``allowed`` is given."""
    body = parse_json(request.content.read() if request.content is not None else b"")
    if allowed is not None:
        _known(body, allowed)
    return body


def _known(body: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise Invalid(f"unknown field(s): {', '.join(unknown)}")


def int_arg(request: IRequest, name: str, default: int, low: int, high: int) -> int:
    """An integer query argument within ``low``..``high``."""
    values = request.args.get(name.encode())
    if not values:
        return default
    try:
        value = int(values[0])
    except ValueError:
        raise Invalid(f"{name} must be an integer") from None
    if not low <= value <= high:
        raise Invalid(f"{name} must be between {low} and {high}")
    return value


def str_arg(request: IRequest, name: str, default: str | None = None) -> str | None:
    values = request.args.get(name.encode())
    return values[0].decode("utf-8", "replace") if values else default


def _required_text(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise Invalid(f"{key} is required")
    return value


def _optional_text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise Invalid(f"{key} must be a non-empty string of at most {MAX_TEXT} characters")
    return value


def create_request(request: IRequest) -> dict[str, Any]:
    """``POST /api/instances``: the arguments of ``Registry.create``."""
    body = json_body(request, CREATE_FIELDS)
    if "name" not in body:
        raise Invalid("name is required")
    return body


def clone_request(request: IRequest) -> dict[str, Any]:
    """``POST /api/instances/NAME/clone``: ``{name, port?}``."""
    body = json_body(request, CLONE_FIELDS)
    if "name" not in body:
        raise Invalid("name is required")
    return {"name": body["name"], "port": body.get("port")}


def rule_request(request: IRequest) -> dict[str, Any]:
    """``POST /api/routing-rules``: the arguments of ``RoutingRules.add``."""
    return rule_fields(json_body(request))


def rule_fields(body: dict[str, Any]) -> dict[str, Any]:
    """The arguments of ``RoutingRules.add`` from a rule body already parsed as JSON."""
    _known(body, RULE_FIELDS)
    fields: dict[str, Any] = {
        key: _required_text(body, key) for key in ("from_instance", "to_instance")
    }
    if not isinstance(body.get("type_pattern"), str):
        raise Invalid("type_pattern must be a type like 'task.handoff' or 'task.*'")
    fields["type_pattern"] = body["type_pattern"]
    for key in ("max_retries", "ttl_secs"):
        if key in body:
            fields[key] = body[key]
    return fields


def send_request(request: IRequest) -> dict[str, Any]:
    """``POST /api/messages``: the arguments of ``Messaging.send``."""
    return send_fields(json_body(request))


def send_fields(body: dict[str, Any]) -> dict[str, Any]:
    """The arguments of ``Messaging.send`` from a send body already parsed as JSON."""
    _known(body, SEND_FIELDS)
    sender = _required_text(body, "from_instance")
    recipient = _required_text(body, "to_instance")
    message_type = body.get("message_type")
    if not isinstance(message_type, str) or len(message_type) > MAX_TEXT:
        raise Invalid("message_type is required, e.g. 'task.handoff'")
    correlation_id = _optional_text(body, "correlation_id")
    key = _optional_text(body, "idempotency_key")
    hop_count = body.get("hop_count", 0)
    if not isinstance(hop_count, int) or isinstance(hop_count, bool) or hop_count < 0:
        raise Invalid("hop_count must be a non-negative integer")
    return {
        "sender": sender,
        "recipient": recipient,
        "message_type": message_type,
        "payload": body.get("payload"),
        "correlation_id": correlation_id,
        "idempotency_key": key,
        "hop_count": hop_count,
    }


def ack_request(request: IRequest) -> str:
    """``POST /api/messages/ID/acknowledge``: the ``lease_id`` of the delivery."""
    return _lease(json_body(request, ACK_FIELDS))


def fail_request(request: IRequest) -> tuple[str, str | None]:
    """``POST /api/messages/ID/fail``: the ``lease_id`` and an optional ``detail``."""
    body = json_body(request, FAIL_FIELDS)
    detail = body.get("detail")
    if detail is not None and not isinstance(detail, str):
        raise Invalid("detail must be a string")
    return _lease(body), detail


def _lease(body: dict[str, Any]) -> str:
    lease_id = body.get("lease_id")
    if not isinstance(lease_id, str) or not lease_id:
        raise Invalid("lease_id is required: the lease_id of the delivery")
    return lease_id


def _items(request: IRequest, key: str) -> list[Any]:
    body = json_body(request, frozenset({key}))
    items = body.get(key)
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
        raise Invalid(f"{key} must be a list of 1 to {MAX_BATCH} items")
    return items


def _each(item: Any, parse: Any) -> dict[str, Any] | Invalid:
    if not isinstance(item, dict):
        return Invalid("each item must be a JSON object")
    try:
        return parse(item)
    except Invalid as e:
        return e


def batch_send_request(request: IRequest) -> list[dict[str, Any] | Invalid]:
    """``POST /api/messages/batch {"messages": [...]}``: each send body parsed on its own
    (a bad one is its own 400, the others go on)."""
    return [_each(item, send_fields) for item in _items(request, "messages")]


def batch_settle_request(request: IRequest, verb: str) -> list[dict[str, Any] | Invalid]:
    """``POST /api/messages/acknowledge|fail {"items": [{id, lease_id[, detail]}]}``."""
    allowed = frozenset({"id"}) | (ACK_FIELDS if verb == "acknowledge" else FAIL_FIELDS)

    def parse(item: dict[str, Any]) -> dict[str, Any]:
        _known(item, allowed)
        message_id = _required_text(item, "id")
        fields = {"message_id": message_id, "lease_id": _lease(item)}
        if verb == "fail":
            detail = item.get("detail")
            if detail is not None and not isinstance(detail, str):
                raise Invalid("detail must be a string")
            fields["detail"] = detail
        return fields

    return [_each(item, parse) for item in _items(request, "items")]
