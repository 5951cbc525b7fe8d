"""The ``/ws/`` resource tree: one WebSocket resource per stream, JSON errors elsewhere."""

from __future__ import annotations

from typing import Any

from autobahn.twisted.resource import WebSocketResource
from twisted.web.resource import Resource

from cpstream.domain.hub import Hub
from cpstream.domain.logfiles import LogFiles
from cpstream.domain.logtail import LogTails
from cpstream.domain.messaging import Messaging
from cpstream.domain.registry import Registry
from cpstream.streams.connections import Streams
from cpstream.streams.echo import EchoFactory
from cpstream.streams.hubstreams import InstancesFactory, MessagesFactory
from cpstream.streams.logstream import LogsFactory
from cpstream.streams.protocol import StreamFactory
from cpstream.web.errors import JSONError, error_response


class StreamResource(WebSocketResource):
    """A stream endpoint: JSON 400 for a plain GET, 503 over the connection cap."""

    def __init__(self, factory: StreamFactory) -> None:
        super().__init__(factory)
        self._streams = factory.streams

    def render(self, request: Any) -> Any:
        if [p for p in request.postpath if p]:
            return error_response(request, 404, "no such stream")
        upgrade = (request.getHeader(b"upgrade") or b"").lower()
        if upgrade != b"websocket":
            return error_response(
                request, 400, "this is a WebSocket endpoint: send an Upgrade request"
            )
        if not self._streams.admit():
            why = self._streams.not_ready or "too many stream connections"
            return error_response(request, 503, why)
        return super().render(request)


class _Branch(Resource):
    """A path segment of the stream tree; anything unknown under it is a JSON 404."""

    def __init__(self, render_as: Resource | None = None) -> None:
        super().__init__()
        self._render_as = render_as

    def getChild(self, path: bytes, request: Any) -> Resource:  # noqa: N802 (Twisted API)
        if path == b"" and self._render_as is not None and not request.postpath:
            return self._render_as
        return JSONError(404, "no such stream")

    def render(self, request: Any) -> Any:
        if self._render_as is None:
            return error_response(request, 404, "no such stream")
        return self._render_as.render(request)


class _InstanceLogs(Resource):
    """``/ws/instances/NAME``: only its ``logs`` child exists."""

    def __init__(self, logs: Resource) -> None:
        super().__init__()
        self._logs = logs

    def getChild(self, path: bytes, request: Any) -> Resource:  # noqa: N802 (Twisted API)
        return self._logs if path == b"logs" else JSONError(404, "no such stream")

    def render(self, request: Any) -> bytes:
        return error_response(request, 404, "no such stream")


class _Instances(_Branch):
    """``/ws/instances`` itself, and ``/ws/instances/NAME/logs`` below it."""

    def __init__(self, instances: Resource, logs: Resource) -> None:
        super().__init__(instances)
        self._logs = logs

    def getChild(self, path: bytes, request: Any) -> Resource:  # noqa: N802 (Twisted API)
        if path == b"":
            return super().getChild(path, request)
        return _InstanceLogs(self._logs)


def stream_tree(
    instances: StreamFactory,
    messages: StreamFactory,
    logs: StreamFactory,
    echo: StreamFactory | None = None,
) -> Resource:
    """The ``/ws/`` resource tree of these endpoints' factories (a control plane's, or a
    gateway's: the same tree, fed otherwise)."""
    root = _Branch()
    root.putChild(b"instances", _Instances(StreamResource(instances), StreamResource(logs)))
    root.putChild(b"messages", _Branch(StreamResource(messages)))
    if echo is not None:
        root.putChild(b"echo", _Branch(StreamResource(echo)))
    return root


def build_streams(
    streams: Streams,
    registry: Registry,
    instances_hub: Hub,
    messaging: Messaging,
    messages_hub: Hub,
    logs: LogFiles,
    tails: LogTails,
    echo: bool = False,
) -> Resource:
    """The ``/ws/`` resource tree; ``/ws/echo`` only when ``echo`` is set."""
    return stream_tree(
        InstancesFactory(streams, instances_hub, registry),
        MessagesFactory(streams, messages_hub, messaging),
        LogsFactory(streams, registry, logs, tails),
        EchoFactory(streams) if echo else None,
    )
