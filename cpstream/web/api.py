"""The REST API under ``/api/``: a Klein app whose routes are methods of one class.

Every answer is JSON, errors included (``{"error": "..."}`` with the status
:mod:`cpstream.web.errors` maps the failure to); unknown paths are a JSON 404,
never an HTML page. Request policy (Host, Origin, content type, body size) is
enforced before routing, by :mod:`cpstream.web.guard`; bodies are parsed by
:mod:`cpstream.web.bodies`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any
from uuid import UUID

from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.static import SingleRangeStaticProducer
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.exceptions import NotFound as NoRoute

from cpstream.domain.errors import DomainError, Forbidden, Invalid, NotFound
from cpstream.domain.inbox import MAX_WAIT, Inbox
from cpstream.domain.logfiles import LogFiles, read_page, read_tail
from cpstream.domain.messaging import Messaging
from cpstream.domain.registry import Registry
from cpstream.domain.routing import RoutingRules
from cpstream.domain.supervisor import Supervisor
from cpstream.domain.usage import MAX_MINUTES, UsageSampler
from cpstream.web import bodies
from cpstream.web.auth import ANONYMOUS, OPERATOR, Principal
from cpstream.web.bodies import MAX_BATCH, int_arg, str_arg
from cpstream.web.errors import HTTPError, error_response, json_response, status_of
from cpstream.web.openapi import document
from cpstream.web.representations import instance_json, message_json

MAX_LOG_LINES = 10_000
CONVERTER = re.compile(r"<(?:[^:>]+:)?([^>]+)>")


def templates(app: Klein) -> dict[str, str]:
    """Each endpoint's route as an OpenAPI-style template: ``/api/instances/{name}``."""
    return {
        rule.endpoint: "/api" + CONVERTER.sub(r"{\1}", rule.rule)
        for rule in app.url_map.iter_rules()
    }


class RoutedKlein(Klein):
    """Klein that notes on each request the template of the route it matched
    (``request.route``): a label of bounded cardinality for the request metrics."""

    _templates: dict[str, str] | None = None

    def execute_endpoint(self, endpoint: str, request: IRequest, *args: Any, **kwargs: Any) -> Any:
        if self._templates is None:
            self._templates = templates(self)
        request.route = self._templates.get(endpoint, "other")  # type: ignore[attr-defined]
        return super().execute_endpoint(endpoint, request, *args, **kwargs)


def item_answer(result: Any, code: int) -> dict[str, Any]:
    """One item of a batch: its HTTP ``code`` and answer, or its code and error."""
    if isinstance(result, DomainError):
        return {"code": status_of(result), "error": result.message}
    return {"code": 200 if result.get("deduplicated") else code, **result}


def principal_of(request: IRequest) -> Principal:
    """Whom the request speaks for: the site sets it on every request (``None`` without
    credentials); in-memory tests without the site act as the operator."""
    principal = getattr(request, "principal", OPERATOR)
    return principal if principal is not None else ANONYMOUS


class _Download(Resource):
    """Renders a download with :class:`BoundedFileProducer` (its headers are set)."""

    isLeaf = True

    def __init__(self, f: Any, size: int) -> None:
        super().__init__()
        self._file = f
        self._size = size

    def render(self, request: IRequest) -> int:
        BoundedFileProducer(request, self._file, self._size).start()
        return NOT_DONE_YET


class BoundedFileProducer(SingleRangeStaticProducer):
    """Sends exactly ``size`` bytes of a file; if it shrank below that meanwhile (someone
    truncated it), the connection is aborted rather than the body cut short, which would
    leave the client waiting or corrupt the next response on a kept-alive connection."""

    _log = Logger()

    def __init__(self, request: IRequest, f: Any, size: int) -> None:
        super().__init__(request, f, 0, size)

    def resumeProducing(self) -> None:  # noqa: N802 (Twisted API)
        request = self.request
        written = getattr(self, "bytesWritten", 0)
        super().resumeProducing()
        if self.request is not None and self.bytesWritten == written:
            self._log.info("a log shrank while it was downloaded; closing the connection")
            request.unregisterProducer()
            request.channel.transport.abortConnection()
            self.stopProducing()


class ControlAPI:
    """Routes for instances, their lifecycle, their logs, and messaging."""

    app = RoutedKlein()
    _log = Logger()

    def __init__(
        self,
        registry: Registry,
        supervisor: Supervisor,
        logs: LogFiles,
        rules: RoutingRules,
        messaging: Messaging,
        inbox: Inbox,
        usage: UsageSampler,
        broker: Callable[[], dict[str, Any]] = lambda: {"kind": "memory"},
    ) -> None:
        self._broker = broker
        self._registry = registry
        self._supervisor = supervisor
        self._logs = logs
        self._rules = rules
        self._messaging = messaging
        self._inbox = inbox
        self._usage = usage

    @app.handle_errors(Exception)
    def _error(self, request: IRequest, failure: Failure) -> Any:
        """Every failure as a JSON error; anything unexpected is a logged bug (500)."""
        error = failure.value
        if isinstance(error, DomainError | HTTPError):
            return error_response(request, status_of(error), error.message)
        if isinstance(error, NoRoute):
            return error_response(request, 404, "no such API endpoint")
        if isinstance(error, MethodNotAllowed):
            allowed = getattr(error, "valid_methods", None) or []
            request.setHeader(b"allow", ", ".join(allowed).encode())
            return json_response(request, {"error": "method not allowed"}, 405)
        if isinstance(error, HTTPException):
            return failure  # werkzeug's own answers (a redirect, say) stand
        self._log.failure("{method} {uri} failed", failure, method=request.method, uri=request.uri)
        return error_response(request, 500, "internal error")

    # -- instances -----------------------------------------------------------

    @app.route("/health", methods=["GET"])
    def health(self, request: IRequest) -> bytes:
        """Everyone may ask; only the operator is told about the instances."""
        if not principal_of(request).operator:
            return json_response(request, {"status": "ok"})
        instances = {i.name: {"status": i.status, "pid": i.pid} for i in self._registry.active()}
        body = {"status": "ok", "instances": instances, "broker": self._broker()}
        return json_response(request, body)

    @app.route("/session", methods=["GET"])
    def session(self, request: IRequest) -> bytes:
        """Who the credentials speak for (the dashboard asks before it opens streams)."""
        principal = principal_of(request)
        return json_response(request, {"principal": principal.kind, "name": principal.name})

    @app.route("/openapi.json", methods=["GET"])
    def openapi_document(self, request: IRequest) -> bytes:
        """The OpenAPI 3.1 document of these routes (:mod:`cpstream.web.openapi`)."""
        return json_response(request, document())

    @app.route("/instances", methods=["GET"])
    def list_instances(self, request: IRequest) -> bytes:
        include = str_arg(request, "include_archived", "false") in ("true", "1", "yes")
        body = [instance_json(i) for i in self._registry.all(include_archived=include)]
        return json_response(request, body)

    @app.route("/instances", methods=["POST"])
    def create_instance(self, request: IRequest) -> bytes:
        instance = self._registry.create(**bodies.create_request(request))
        return json_response(request, instance_json(instance), 201)

    @app.route("/instances/<string:name>", methods=["GET"])
    def get_instance(self, request: IRequest, name: str) -> bytes:
        return json_response(request, instance_json(self._registry.get(name)))

    @app.route("/instances/<string:name>", methods=["DELETE"])
    def delete_instance(self, request: IRequest, name: str) -> bytes:
        instance = self._registry.get_archived(name)
        self._supervisor.delete(instance)
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
        self._registry.unarchive(instance)
        return self._lifecycle(request, instance)

    @app.route("/instances/<string:name>/clone", methods=["POST"])
    def clone(self, request: IRequest, name: str) -> bytes:
        source = self._registry.get(name)
        fields = bodies.clone_request(request)
        instance = self._registry.clone(source, fields["name"], fields["port"])
        return json_response(request, instance_json(instance), 201)

    def _lifecycle(self, request: IRequest, instance: Any) -> bytes:
        return json_response(request, {"status": instance.shown_status, "name": instance.name})

    # -- logs ------------------------------------------------------------------

    @app.route("/instances/<string:name>/logs", methods=["GET"])
    def logs(self, request: IRequest, name: str) -> bytes:
        instance = self._registry.get(name)
        count = int_arg(request, "lines", 100, 1, MAX_LOG_LINES)
        mode = str_arg(request, "mode", "tail")
        offset = int_arg(request, "offset", 0, 0, 2**62)  # checked in either mode
        path = self._logs.path(instance)
        if mode == "tail":
            lines, _ = read_tail(path, count)
            body: dict[str, Any] = {"name": instance.name, "mode": mode, "lines": lines}
        elif mode == "page":
            lines = read_page(path, offset, count)
            body = {
                "name": instance.name,
                "mode": mode,
                "offset": offset,
                "next_offset": offset + len(lines),
                "lines": lines,
            }
        else:
            raise Invalid("mode must be 'tail' or 'page'")
        return json_response(request, body)

    @app.route("/instances/<string:name>/logs/download", methods=["GET"])
    def download(self, request: IRequest, name: str) -> Any:
        """The current log file as it was when the request came: exactly the bytes its
        Content-Length announces, however the file grows meanwhile."""
        instance = self._registry.get(name)
        try:
            f = open(self._logs.path(instance), "rb")
        except FileNotFoundError:
            raise NotFound(f"instance '{name}' has no log yet") from None
        size = os.fstat(f.fileno()).st_size
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"content-length", str(size).encode())
        request.setHeader(
            b"content-disposition", f'attachment; filename="{instance.name}.log"'.encode()
        )
        if request.method == b"HEAD" or size == 0:
            f.close()
            return b""
        return _Download(f, size)

    @app.route("/instances/<string:name>/events", methods=["GET"])
    def instance_events(self, request: IRequest, name: str) -> bytes:
        """The instance's lifecycle history, newest first (``before``: a seq to page from)."""
        instance = self._registry.get(name)
        limit = int_arg(request, "limit", 100, 1, 1000)
        before = int_arg(request, "before", 2**62, 1, 2**62)
        return json_response(request, self._registry.events(instance, limit, before))

    @app.route("/instances/<string:name>/usage", methods=["GET"])
    def usage(self, request: IRequest, name: str) -> bytes:
        """The instance's resource samples of the last ``minutes`` (1-60, default 10),
        oldest first (kept in memory: an hour at most, none from before a restart)."""
        instance = self._registry.get(name)
        minutes = int_arg(request, "minutes", 10, 1, MAX_MINUTES)
        body = {
            "id": instance.id,
            "name": instance.name,
            "interval": self._usage.interval,
            "samples": self._usage.series(instance, minutes),
        }
        return json_response(request, body)

    # -- messaging ---------------------------------------------------------------

    @app.route("/routing-rules", methods=["GET"])
    def list_rules(self, request: IRequest) -> bytes:
        return json_response(request, self._rules.all())

    @app.route("/routing-rules", methods=["POST"])
    def add_rule(self, request: IRequest) -> bytes:
        return json_response(request, self._rules.add(**bodies.rule_request(request)), 201)

    @app.route("/routing-rules/<string:rule_id>", methods=["DELETE"])
    def delete_rule(self, request: IRequest, rule_id: str) -> bytes:
        self._rules.delete(rule_id)
        return json_response(request, {"id": rule_id, "status": "deleted"})

    @app.route("/messages", methods=["POST"])
    def send(self, request: IRequest) -> bytes:
        fields = bodies.send_request(request)
        principal = principal_of(request)
        if not principal.operator and fields["sender"] != principal.name:
            raise Forbidden(f"an agent sends as itself ({principal.name}), not as another")
        answer = self._messaging.send(**fields)
        return json_response(request, answer, 200 if answer.get("deduplicated") else 201)

    @app.route("/messages/batch", methods=["POST"])
    def send_batch(self, request: IRequest) -> bytes:
        """Up to 100 sends in one request (and one transaction); each answered on its own."""
        principal = principal_of(request)
        results: list[Any] = []
        valid: list[int] = []
        for item in bodies.batch_send_request(request):
            if isinstance(item, DomainError):
                results.append(item)
                continue
            if not principal.operator and item["sender"] != principal.name:
                results.append(Forbidden(f"an agent sends as itself ({principal.name})"))
                continue
            valid.append(len(results))
            results.append(item)
        sent = self._messaging.send_many([results[i] for i in valid])
        for position, answer in zip(valid, sent, strict=True):
            results[position] = answer
        return json_response(request, {"results": [item_answer(r, 201) for r in results]})

    @app.route("/messages/<any(acknowledge, fail):verb>", methods=["POST"])
    def settle_batch(self, request: IRequest, verb: str) -> bytes:
        """Acknowledge or fail up to 100 leased messages; each answered on its own."""
        parsed = bodies.batch_settle_request(request, verb)
        results: list[Any] = list(parsed)
        valid = [i for i, item in enumerate(parsed) if not isinstance(item, DomainError)]
        recipient = principal_of(request).name
        settled = self._messaging.settle_many(verb, [parsed[i] for i in valid], recipient)
        for position, answer in zip(valid, settled, strict=True):
            results[position] = answer
        return json_response(request, {"results": [item_answer(r, 200) for r in results]})

    @app.route("/messages", methods=["GET"])
    def search(self, request: IRequest) -> bytes:
        found = self._messaging.search(
            instance=str_arg(request, "instance"),
            correlation_id=str_arg(request, "correlation_id"),
            status=str_arg(request, "status"),
            message_type=str_arg(request, "type"),
            limit=int_arg(request, "limit", 100, 1, 1000),
        )
        return json_response(request, [message_json(m) for m in found])

    @app.route("/messages/stats", methods=["GET"])
    def message_stats(self, request: IRequest) -> bytes:
        """Messages by status (every status, zeros included), in flight, dead letters."""
        return json_response(request, self._messaging.stats())

    @app.route("/messages/dead_letter", methods=["GET"])
    def dead_letters(self, request: IRequest) -> bytes:
        limit = int_arg(request, "limit", 100, 1, 1000)
        found = self._messaging.search(status="dead_letter", limit=limit)
        return json_response(request, [message_json(m) for m in found])

    # A message id is a UUID: ``/messages/batch`` and the like are never mistaken for one.
    @app.route("/messages/<uuid:message_id>", methods=["GET"])
    def message(self, request: IRequest, message_id: UUID) -> bytes:
        return json_response(request, message_json(self._messaging.get(str(message_id))))

    @app.route("/messages/<uuid:message_id>/acknowledge", methods=["POST"])
    def acknowledge(self, request: IRequest, message_id: UUID) -> bytes:
        lease_id = bodies.ack_request(request)
        recipient = principal_of(request).name
        answer = self._messaging.acknowledge(str(message_id), lease_id, recipient)
        return json_response(request, answer)

    @app.route("/messages/<uuid:message_id>/fail", methods=["POST"])
    def fail(self, request: IRequest, message_id: UUID) -> bytes:
        lease_id, detail = bodies.fail_request(request)
        recipient = principal_of(request).name
        answer = self._messaging.fail(str(message_id), lease_id, detail, recipient)
        return json_response(request, answer)

    @app.route("/messages/<uuid:message_id>/replay", methods=["POST"])
    def replay(self, request: IRequest, message_id: UUID) -> bytes:
        return json_response(request, self._messaging.replay(str(message_id)))

    @app.route("/instances/<string:name>/messages/pending", methods=["GET"])
    def pending(self, request: IRequest, name: str) -> Any:
        """Long-poll: the next message for ``name``, or ``{"message": null}`` after ``wait`` s;
        with ``max=N``, ``{"messages": [...]}``: up to N leased at once. Not HEAD, which
        would lease what no one reads."""
        if request.method == b"HEAD":
            request.setHeader(b"allow", b"GET")
            return json_response(request, {"error": "HEAD would lease a message: use GET"}, 405)
        wait = int_arg(request, "wait", 0, 0, MAX_WAIT)
        count = int_arg(request, "max", 0, 1, MAX_BATCH) if b"max" in request.args else None
        self._registry.get(name, archived_fallback=False)
        waiting = self._inbox.receive(name, wait, count)
        if count is not None:
            return waiting.addCallback(
                lambda leased: json_response(
                    request, {"messages": [message_json(m) for m in leased]}
                )
            )
        return waiting.addCallback(
            lambda message: json_response(
                request, {"message": None if message is None else message_json(message)}
            )
        )

    @app.route("/instances/<string:name>/messages", methods=["GET"])
    def instance_messages(self, request: IRequest, name: str) -> bytes:
        instance = self._registry.get(name)
        direction = str_arg(request, "direction")
        if direction not in (None, "in", "out"):
            raise Invalid("direction must be 'in' or 'out'")
        found = self._messaging.search(
            instance=instance.name,
            direction=direction,
            status=str_arg(request, "status"),
            limit=int_arg(request, "limit", 100, 1, 1000),
        )
        return json_response(request, [message_json(m) for m in found])
