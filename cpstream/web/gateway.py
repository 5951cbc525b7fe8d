"""A gateway's HTTP side: ``/api/health`` (is Redis reachable?) and the ``/ws/`` tree.

A gateway has no REST API of its own: the control plane keeps it. ``/api/health``
answers everyone ``{"status": "ok"}`` (200) while the broker is reachable (and the
streams were loaded from it) and ``{"status": "degraded"}`` (503) while not, so a
load balancer stops sending new clients to a gateway that cannot see new events;
the operator also gets the broker's figures and the open stream count. Any other
``/api/`` path is a JSON 404.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.web.resource import Resource

from cpstream.streams.connections import Streams
from cpstream.web.errors import JSONError, error_response, json_response


class GatewayHealth(Resource):
    """``GET /api/health`` on a gateway."""

    isLeaf = True

    def __init__(self, broker: Callable[[], dict[str, Any]], streams: Streams) -> None:
        super().__init__()
        self._broker = broker
        self._streams = streams

    def render_GET(self, request: Any) -> bytes:  # noqa: N802 (Twisted API)
        if request.postpath and any(request.postpath):
            return error_response(request, 404, "no such route")
        broker = self._broker()
        ok = bool(broker.get("reachable")) and bool(broker.get("loaded"))
        body: dict[str, Any] = {"status": "ok" if ok else "degraded"}
        principal = getattr(request, "principal", None)
        if principal is not None and principal.operator:
            body["broker"] = broker
            body["connections"] = len(self._streams.connections)
        return json_response(request, body, 200 if ok else 503)

    def render_HEAD(self, request: Any) -> bytes:  # noqa: N802 (Twisted API)
        return self.render_GET(request)


def gateway_root(health: Resource, streams: Resource) -> Resource:
    """``/api/health`` and ``/ws/``; everything else a JSON 404."""
    api = _Only404()
    api.putChild(b"health", health)
    root = _Only404()
    root.putChild(b"api", api)
    root.putChild(b"ws", streams)
    return root


class _Only404(Resource):
    """A branch whose unknown children (and itself) are JSON 404s."""

    def getChild(self, path: bytes, request: Any) -> Resource:  # noqa: N802 (Twisted API)
        return JSONError(404, "not served by a gateway: ask the control plane")

    def render(self, request: Any) -> bytes:
        return error_response(request, 404, "not served by a gateway: ask the control plane")
