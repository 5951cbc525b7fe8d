"""Request policy for every HTTP request: the security defaults of DESIGN.md 7.

Credentials are :mod:`cpstream.web.auth`'s; this is what no credential can
lift: the ``Host`` must name this server (DNS rebinding), no cross-site
request reaches data (``/api/``, ``/ws/``, GET included) or changes anything
(login and logout included), bodies must be JSON and small. The policy is
checked before any routing, for REST, static files and WebSocket upgrades
alike, and an oversized body is refused from its declared length before it is
read. OPTIONS is never supported (no CORS): under ``/api/`` the router answers it
405 with the path's own ``Allow``, elsewhere this policy does.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.web.server import Request

from cpstream.web.errors import HTTPError, raw_response

MAX_BODY = 1024 * 1024
MUTATING = frozenset({b"POST", b"PUT", b"PATCH", b"DELETE"})
# Paths that hold data: no cross-site request reaches them, GET included (a GET may
# lease a message, and any answer is data another page must not read). /login and
# /logout are protected like every mutation (POST); a GET of the login page is not.
DATA_PATHS = (b"/api/", b"/ws/", b"/metrics")
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})
SAFE_FETCH_SITES = frozenset({b"same-origin", b"none"})


def _split_host(value: str) -> tuple[str, int | None]:
    """``host[:port]`` (IPv6 in brackets) into a lower-case name and a port."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        name, rest = value[: end + 1], value[end + 1 :]
    else:
        name, _, rest = value.partition(":")
        rest = ":" + rest if rest else ""
    if not rest:
        return name, None
    if not rest.startswith(":") or not rest[1:].isdigit():
        raise ValueError(value)
    return name, int(rest[1:])


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class Guard:
    """Decides whether a request may proceed; see the module docstring."""

    def __init__(self, allowed_hosts: Iterable[str] = (), allowed_origins: Iterable[str] = ()):
        self._allowed_hosts = {h.strip().lower() for h in allowed_hosts}
        self._allowed_origins = {o.strip().lower().rstrip("/") for o in allowed_origins}

    def check(self, request: Any) -> None:
        """Raise :class:`HTTPError` unless ``request`` may proceed."""
        host = self._host(request)
        if not all(_is_utf8(segment) for segment in request.postpath):
            raise HTTPError(400, "the URL path must be UTF-8")
        if request.method == b"OPTIONS" and not request.path.startswith(b"/api/"):
            raise HTTPError(405, "OPTIONS is not supported (no cross-origin access)")
        upgrade = (request.getHeader(b"upgrade") or b"").lower() == b"websocket"
        data = request.path.startswith(DATA_PATHS)
        if upgrade or data or request.method in MUTATING:
            self._check_origin(request, host)
            site = request.requestHeaders.getRawHeaders(b"sec-fetch-site") or []
            if any(value.strip().lower() not in SAFE_FETCH_SITES for value in site):
                raise HTTPError(403, "cross-site requests are not allowed")
        if request.method in MUTATING:
            self._check_content_type(request)

    def _host(self, request: Any) -> str:
        values = request.requestHeaders.getRawHeaders(b"host") or []
        if len(values) != 1 or not values[0].strip():
            raise HTTPError(400, "exactly one Host header is required")
        raw = values[0].decode("latin-1")
        try:
            name, port = _split_host(raw)
        except ValueError:
            raise HTTPError(400, "malformed Host header") from None
        local = request.getHost()
        local_port = getattr(local, "port", None)
        if port is None:
            port = 80 if local_port is not None else None
        if raw.strip().lower() in self._allowed_hosts or name in self._allowed_hosts:
            return raw.strip().lower()
        names = set(LOOPBACK_NAMES)
        local_name = getattr(local, "host", None)
        if local_name:
            names.add(f"[{local_name}]" if ":" in local_name else local_name)
        if name not in names or port != local_port:
            raise HTTPError(403, "this Host is not served here")
        return raw.strip().lower()

    def _check_origin(self, request: Any, host: str) -> None:
        headers = request.requestHeaders
        origins = (headers.getRawHeaders(b"origin") or []) + (
            headers.getRawHeaders(b"sec-websocket-origin") or []
        )
        if len(origins) > 1:
            raise HTTPError(403, "more than one Origin header")
        if not origins:
            return  # curl, scripts: not a browser, so no cross-origin page behind it
        origin = origins[0].decode("latin-1").strip().lower().rstrip("/")
        scheme = "https" if request.isSecure() else "http"
        if origin == f"{scheme}://{host}" or origin in self._allowed_origins:
            return
        raise HTTPError(403, "cross-origin requests are not allowed")

    def _check_content_type(self, request: Any) -> None:
        declared = request.getHeader(b"content-type")
        length = request.getHeader(b"content-length")
        has_body = (length is not None and length.strip() not in (b"", b"0")) or (
            request.getHeader(b"transfer-encoding") is not None
        )
        if declared is None and not has_body:
            return
        media = (declared or b"").split(b";")[0].strip().lower()
        if media != b"application/json":
            raise HTTPError(415, "request bodies must be application/json")


class _Discard:
    """Swallows a refused body."""

    def write(self, data: bytes) -> None:
        pass

    def seek(self, *args: Any) -> int:
        return 0

    def read(self, *args: Any) -> bytes:
        return b""

    def close(self) -> None:
        pass


class LimitedRequest(Request):
    """A request that refuses bodies over :data:`MAX_BODY` before reading them."""

    refused = False

    def gotLength(self, length: int | None) -> None:  # noqa: N802 (Twisted API)
        if length is not None and length > MAX_BODY:
            self._refuse()
            return
        super().gotLength(length)
        self._received = 0

    def handleContentChunk(self, data: bytes) -> None:  # noqa: N802 (Twisted API)
        if self.refused:
            return
        self._received += len(data)
        if self._received > MAX_BODY:
            self._refuse()
            return
        super().handleContentChunk(data)

    def process(self) -> None:
        if not self.refused:
            super().process()

    def _refuse(self) -> None:
        """Answer 413 at once and close, without reading the body."""
        self.refused = True
        old, self.content = self.content, _Discard()
        if old is not None:
            old.close()
        message = f"request body over {MAX_BODY} bytes"
        self.channel.transport.write(raw_response(413, message))
        self.channel.loseConnection()
