"""The REST API under ``/api/``: a Klein app whose routes are methods of one class.

Every answer is JSON, errors included (``{"error": "..."}`` with the right
status); unknown paths are a JSON 404, never an HTML page. Request policy
(Host, Origin, content type, body size) is enforced before routing, by
:mod:`cpstream.guard`.
"""

from __future__ import annotations

import json
from typing import Any

from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.static import File
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from cpstream.logfiles import LogFiles, read_page, read_tail
from cpstream.messaging import MAX_WAIT, Messaging, Refused
from cpstream.registry import (
    IllegalTransition,
    InvalidInstance,
    Registry,
    UnknownInstance,
)
from cpstream.store import Conflict
from cpstream.supervisor import Supervisor

MAX_LOG_LINES = 10_000
CREATE_FIELDS = frozenset({"name", "port", "command", "env", "health", "restart"})
CLONE_FIELDS = frozenset({"name", "port"})


class APIError(Exception):
    """An error answer: HTTP status and a message for the operator."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def json_response(request: IRequest, body: Any, status: int = 200) -> bytes:
    """Encode ``body`` as the JSON answer to ``request``."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body).encode("utf-8")


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def json_body(request: IRequest, allowed: frozenset[str] | None = None) -> dict[str, Any]:
    """The request's JSON object body (``{}`` when empty); 400 when malformed, nested
    too deeply, holding NaN or Infinity, or a string that is not Unicode."""
    raw = request.content.read() if request.content is not None else b""
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw, parse_constant=_not_json)
    except RecursionError:
        raise APIError(400, "malformed JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise APIError(400, f"malformed JSON: {e}") from e
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise APIError(400, "malformed JSON: a string holds a lone surrogate") from None
    if not isinstance(body, dict):
        raise APIError(400, "the body must be a JSON object")
    if allowed is not None:
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise APIError(400, f"unknown field(s): {', '.join(unknown)}")
    return body


def int_arg(request: IRequest, name: str, default: int, low: int, high: int) -> int:
    """An integer query argument within ``low``..``high``; 400 otherwise."""
    values = request.args.get(name.encode())
    if not values:
        return default
    try:
        value = int(values[0])
    except ValueError:
        raise APIError(400, f"{name} must be an integer") from None
    if not low <= value <= high:
        raise APIError(400, f"{name} must be between {low} and {high}")
    return value


def str_arg(request: IRequest, name: str, default: str | None = None) -> str | None:
    values = request.args.get(name.encode())
    return values[0].decode("utf-8", "replace") if values else default


def conflict_message(error: Conflict, body: dict[str, Any]) -> str:
    what = str(error)
    if what == "port" and "port" not in body:
        return "no free port left in 18801-18999"
    return f"{what} {body.get(what)!r} is already taken by an active instance"


class ControlAPI:
    """Routes for instances, their lifecycle, their logs, and messaging."""

    app = Klein()
    _log = Logger()

    def __init__(
        self, registry: Registry, supervisor: Supervisor, logs: LogFiles, messaging: Messaging
    ) -> None:
        self._registry = registry
        self._supervisor = supervisor
        self._logs = logs
        self._messaging = messaging

    # -- errors ------------------------------------------------------------

    @app.handle_errors(APIError)
    def _api_error(self, request: IRequest, failure: Failure) -> bytes:
        return json_response(request, {"error": failure.value.message}, failure.value.status)

    @app.handle_errors(Refused)
    def _refused(self, request: IRequest, failure: Failure) -> bytes:
        return json_response(request, {"error": failure.value.message}, failure.value.status)

    @app.handle_errors(UnknownInstance)
    def _unknown(self, request: IRequest, failure: Failure) -> bytes:
        return json_response(request, {"error": str(failure.value)}, 404)

    @app.handle_errors(InvalidInstance)
    def _invalid(self, request: IRequest, failure: Failure) -> bytes:
        return json_response(request, {"error": str(failure.value)}, 400)

    @app.handle_errors(IllegalTransition)
    def _illegal(self, request: IRequest, failure: Failure) -> bytes:
        return json_response(request, {"error": str(failure.value)}, 409)

    @app.handle_errors(NotFound)
    def _not_found(self, request: IRequest, failure: Failure) -> bytes:
        return json_response(request, {"error": "no such API endpoint"}, 404)

    @app.handle_errors(MethodNotAllowed)
    def _not_allowed(self, request: IRequest, failure: Failure) -> bytes:
        allowed = getattr(failure.value, "valid_methods", None) or []
        request.setHeader(b"allow", ", ".join(allowed).encode())
        return json_response(request, {"error": "method not allowed"}, 405)

    @app.handle_errors(Exception)
    def _unexpected(self, request: IRequest, failure: Failure) -> Any:
        """Anything else is a bug: logged with its traceback, answered as JSON, not HTML."""
        if failure.check(HTTPException):
            return failure  # werkzeug's own answers (a redirect, say) stand
        self._log.failure("{method} {uri} failed", failure, method=request.method, uri=request.uri)
        return json_response(request, {"error": "internal error"}, 500)

    # -- instances -----------------------------------------------------------

    @app.route("/health", methods=["GET"])
    def health(self, request: IRequest) -> bytes:
        instances = {i.name: {"status": i.status, "pid": i.pid} for i in self._registry.active()}
        return json_response(request, {"status": "ok", "instances": instances})

    @app.route("/instances", methods=["GET"])
    def list_instances(self, request: IRequest) -> bytes:
        include = str_arg(request, "include_archived", "false") in ("true", "1", "yes")
        body = [i.to_api() for i in self._registry.all(include_archived=include)]
        return json_response(request, body)

    @app.route("/instances", methods=["POST"])
    def create_instance(self, request: IRequest) -> bytes:
        body = json_body(request, CREATE_FIELDS)
        if "name" not in body:
            raise APIError(400, "name is required")
        try:
            instance = self._registry.create(**body)
        except Conflict as e:
            raise APIError(409, conflict_message(e, body)) from None
        return json_response(request, instance.to_api(), 201)

    @app.route("/instances/<string:name>", methods=["GET"])
    def get_instance(self, request: IRequest, name: str) -> bytes:
        return json_response(request, self._registry.get(name).to_api())

    @app.route("/instances/<string:name>", methods=["DELETE"])
    def delete_instance(self, request: IRequest, name: str) -> bytes:
        instance = self._registry.get_archived(name)
        self._registry.delete(instance)
        return json_response(request, {"status": "deleted", "name": name})

    @app.route("/instances/<string:name>/start", methods=["POST"])
    def start(self, request: IRequest, name: str) -> bytes:
        instance = self._supervisor.start(self._registry.get(name))
        return self._lifecycle(request, instance)

    @app.route("/instances/<string:name>/stop", methods=["POST"])
    async def stop(self, request: IRequest, name: str) -> bytes:
        instance = await self._supervisor.stop(self._registry.get(name))
        return self._lifecycle(request, instance)

    @app.route("/instances/<string:name>/restart", methods=["POST"])
    async def restart(self, request: IRequest, name: str) -> bytes:
        instance = await self._supervisor.restart(self._registry.get(name))
        return self._lifecycle(request, instance)

    @app.route("/instances/<string:name>/archive", methods=["POST"])
    async def archive(self, request: IRequest, name: str) -> bytes:
        instance = await self._supervisor.archive(self._registry.get(name))
        return self._lifecycle(request, instance)

    @app.route("/instances/<string:name>/unarchive", methods=["POST"])
    def unarchive(self, request: IRequest, name: str) -> bytes:
        instance = self._registry.get_archived(name)
        try:
            self._registry.unarchive(instance)
        except Conflict as e:
            taken = {"name": instance.name, "port": instance.port}
            raise APIError(409, conflict_message(e, taken)) from None
        return self._lifecycle(request, instance)

    @app.route("/instances/<string:name>/clone", methods=["POST"])
    def clone(self, request: IRequest, name: str) -> bytes:
        source = self._registry.get(name)
        body = json_body(request, CLONE_FIELDS)
        if "name" not in body:
            raise APIError(400, "name is required")
        try:
            instance = self._registry.clone(source, body["name"], body.get("port"))
        except Conflict as e:
            raise APIError(409, conflict_message(e, body)) from None
        return json_response(request, instance.to_api(), 201)

    def _lifecycle(self, request: IRequest, instance: Any) -> bytes:
        return json_response(request, {"status": instance.shown_status, "name": instance.name})

    # -- logs ------------------------------------------------------------------

    @app.route("/instances/<string:name>/logs", methods=["GET"])
    def logs(self, request: IRequest, name: str) -> bytes:
        instance = self._registry.get(name)
        count = int_arg(request, "lines", 100, 1, MAX_LOG_LINES)
        mode = str_arg(request, "mode", "tail")
        path = self._logs.path(instance.name)
        if mode == "tail":
            lines, _ = read_tail(path, count)
            body: dict[str, Any] = {"name": instance.name, "mode": mode, "lines": lines}
        elif mode == "page":
            offset = int_arg(request, "offset", 0, 0, 2**62)
            lines = read_page(path, offset, count)
            body = {
                "name": instance.name,
                "mode": mode,
                "offset": offset,
                "next_offset": offset + len(lines),
                "lines": lines,
            }
        else:
            raise APIError(400, "mode must be 'tail' or 'page'")
        return json_response(request, body)

    @app.route("/instances/<string:name>/logs/download", methods=["GET"])
    def download(self, request: IRequest, name: str) -> File:
        instance = self._registry.get(name)
        path = self._logs.path(instance.name)
        if not path.exists():
            raise APIError(404, f"instance '{name}' has no log yet")
        request.setHeader(
            b"content-disposition", f'attachment; filename="{instance.name}.log"'.encode()
        )
        resource = File(str(path))
        resource.type, resource.encoding = "text/plain; charset=utf-8", None
        return resource

    # -- messaging ---------------------------------------------------------------

    @app.route("/routing-rules", methods=["GET"])
    def list_rules(self, request: IRequest) -> bytes:
        return json_response(request, self._messaging.rules())

    @app.route("/routing-rules", methods=["POST"])
    def add_rule(self, request: IRequest) -> bytes:
        return json_response(request, self._messaging.add_rule(json_body(request)), 201)

    @app.route("/routing-rules/<string:rule_id>", methods=["DELETE"])
    def delete_rule(self, request: IRequest, rule_id: str) -> bytes:
        self._messaging.delete_rule(rule_id)
        return json_response(request, {"id": rule_id, "status": "deleted"})

    @app.route("/messages", methods=["POST"])
    def send(self, request: IRequest) -> bytes:
        status, body = self._messaging.send(json_body(request))
        return json_response(request, body, status)

    @app.route("/messages", methods=["GET"])
    def search(self, request: IRequest) -> bytes:
        found = self._messaging.search(
            instance=str_arg(request, "instance"),
            correlation_id=str_arg(request, "correlation_id"),
            status=str_arg(request, "status"),
            message_type=str_arg(request, "type"),
            limit=int_arg(request, "limit", 100, 1, 1000),
        )
        return json_response(request, found)

    @app.route("/messages/dead_letter", methods=["GET"])
    def dead_letters(self, request: IRequest) -> bytes:
        limit = int_arg(request, "limit", 100, 1, 1000)
        return json_response(request, self._messaging.search(status="dead_letter", limit=limit))

    @app.route("/messages/<string:message_id>", methods=["GET"])
    def message(self, request: IRequest, message_id: str) -> bytes:
        return json_response(request, self._messaging.get(message_id))

    @app.route("/messages/<string:message_id>/acknowledge", methods=["POST"])
    def acknowledge(self, request: IRequest, message_id: str) -> bytes:
        return json_response(request, self._messaging.acknowledge(message_id))

    @app.route("/messages/<string:message_id>/fail", methods=["POST"])
    def fail(self, request: IRequest, message_id: str) -> bytes:
        body = json_body(request, frozenset({"detail"}))
        return json_response(request, self._messaging.fail(message_id, body.get("detail")))

    @app.route("/messages/<string:message_id>/replay", methods=["POST"])
    def replay(self, request: IRequest, message_id: str) -> bytes:
        return json_response(request, self._messaging.replay(message_id))

    @app.route("/instances/<string:name>/messages/pending", methods=["GET"])
    def pending(self, request: IRequest, name: str) -> Any:
        """Long-poll: the next message for ``name``, or ``{"message": null}`` after ``wait`` s."""
        wait = int_arg(request, "wait", 0, 0, MAX_WAIT)
        self._registry.get(name, archived_fallback=False)
        waiting = self._messaging.receive(name, wait)
        return waiting.addCallback(lambda message: json_response(request, {"message": message}))

    @app.route("/instances/<string:name>/messages", methods=["GET"])
    def instance_messages(self, request: IRequest, name: str) -> bytes:
        instance = self._registry.get(name)
        direction = str_arg(request, "direction")
        if direction not in (None, "in", "out"):
            raise APIError(400, "direction must be 'in' or 'out'")
        found = self._messaging.search(
            instance=instance.name,
            direction=direction,
            status=str_arg(request, "status"),
            limit=int_arg(request, "limit", 100, 1, 1000),
        )
        return json_response(request, found)
