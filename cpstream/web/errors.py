"""Every JSON error answer: the one table from domain failures to HTTP statuses.

An error is always ``{"error": "..."}`` with the right status, however it is
written: by a Klein route, by a resource in the tree, or straight to the
transport when no request can be answered normally.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

from cpstream.domain.errors import Conflict, DomainError, Forbidden, Invalid, NotFound, TooLarge

STATUS_OF: dict[type[DomainError], int] = {
    Invalid: 400,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    TooLarge: 413,
}
REASONS = {
    400: b"Bad Request",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    409: b"Conflict",
    413: b"Payload Too Large",
    415: b"Unsupported Media Type",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}


class HTTPError(Exception):
    """A refusal that only HTTP has words for (405, 415, 503...), with its status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def status_of(error: DomainError | HTTPError) -> int:
    """The HTTP status of a domain failure or an :class:`HTTPError`."""
    if isinstance(error, HTTPError):
        return error.status
    for kind in type(error).__mro__:
        if kind in STATUS_OF:
            return STATUS_OF[kind]
    return 500


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode("utf-8")


def json_response(request: IRequest, body: Any, status: int = 200) -> bytes:
    """Encode ``body`` as the JSON answer to ``request``."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body).encode("utf-8")


def error_response(request: IRequest, status: int, message: str) -> bytes:
    """The JSON error answer to ``request``."""
    if status == 405:
        request.setHeader(b"allow", b"GET, HEAD, POST, DELETE")
    return json_response(request, {"error": message}, status)


def raw_response(status: int, message: str) -> bytes:
    """A whole JSON error response that closes the connection, for answers written
    to the transport directly (no ``Request`` is, or can be, answered normally)."""
    body = error_body(message)
    head = (
        b"HTTP/1.1 %d %s\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: %d\r\n"
        b"Connection: close\r\n\r\n" % (status, REASONS[status], len(body))
    )
    return head + body


class JSONError(Resource):
    """A resource that answers any request with one JSON error."""

    isLeaf = True

    def __init__(self, status: int, message: str) -> None:
        super().__init__()
        self._status = status
        self._message = message

    def render(self, request: Any) -> bytes:
        return error_response(request, self._status, self._message)
