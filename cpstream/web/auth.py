"""Who is asking: the operator (its token, or a browser session), an agent, or nobody.

Every ``/api/`` and ``/ws/`` request needs credentials, as ``Authorization:
Bearer <token>`` or the browser's session cookie; only ``GET /api/health``
answers without (and then says only ``{"status": "ok"}``). The operator may do
everything. An agent's token (``CPSTREAM_TOKEN`` in its environment) lets it
do what an agent needs and nothing else: read its own instance, send as itself,
lease its own messages and settle the ones delivered to it (:data:`AGENT_ROUTES`;
which message is whose is checked where the message is). Browser sessions are
signed with the operator token, so rotating the token ends them all; a logout
ends one for good.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cpstream.domain.frames import isotime
from cpstream.domain.registry import Registry
from cpstream.domain.tables import SessionRows
from cpstream.domain.tokens import same

COOKIE = b"cpstream_session"  # then the port: a browser's cookies ignore ports
SESSION_LIFETIME = 7 * 24 * 3600
# (method, path pattern): what an agent's token allows; a ``name`` group must be its own.
AGENT_ROUTES = (
    (b"GET", re.compile(rb"/api/health")),
    (b"GET", re.compile(rb"/api/session")),
    (b"GET", re.compile(rb"/api/instances/(?P<name>[^/]+)")),
    (b"GET", re.compile(rb"/api/instances/(?P<name>[^/]+)/messages/pending")),
    (b"POST", re.compile(rb"/api/messages")),
    (b"POST", re.compile(rb"/api/messages/batch")),
    (b"POST", re.compile(rb"/api/messages/(acknowledge|fail)")),
    (b"POST", re.compile(rb"/api/messages/[^/]+/(acknowledge|fail)")),
)


@dataclass(frozen=True)
class Principal:
    """Who a request speaks for: ``operator``, or ``agent`` with its instance's name."""

    kind: str
    name: str | None = None

    @property
    def operator(self) -> bool:
        return self.kind == "operator"


OPERATOR = Principal("operator")
ANONYMOUS = Principal("anonymous")


class Sessions:
    """Browser sessions: ``ID.EXPIRES.MAC`` cookies, the MAC keyed by the operator token."""

    def __init__(
        self,
        token: str,
        rows: SessionRows,
        clock: Any,
        ended: Callable[[str], None] = lambda session_id: None,
    ) -> None:
        self._key = token.encode("utf-8")
        self._rows = rows
        self._clock = clock
        self._ended = ended

    def open(self) -> str:
        """A new session's cookie value."""
        expires = int(self._clock.seconds()) + SESSION_LIFETIME
        session_id = secrets.token_urlsafe(16)
        return f"{session_id}.{expires}.{self._mac(session_id, expires)}"

    def check(self, value: str) -> bool:
        """Whether ``value`` is a session we opened, not expired and not ended."""
        parsed = self._parse(value)
        if parsed is None:
            return False
        session_id, expires = parsed
        return expires > self._clock.seconds() and not self._rows.ended(session_id)

    def end(self, value: str) -> None:
        """Log out: the session never works again."""
        parsed = self._parse(value)
        if parsed is not None:
            self._rows.prune(isotime(self._clock.seconds()))
            self._rows.end(parsed[0], isotime(parsed[1]))
            self._ended(parsed[0])

    def _parse(self, value: str) -> tuple[str, int] | None:
        parts = value.split(".")
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        session_id, expires, mac = parts[0], int(parts[1]), parts[2]
        if not hmac.compare_digest(mac, self._mac(session_id, expires)):
            return None
        return session_id, expires

    def _mac(self, session_id: str, expires: int) -> str:
        message = f"session:{session_id}.{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()


class LoginCodes:
    """One-time login codes for the link the daemon prints: each works once."""

    def __init__(self) -> None:
        self._codes: set[str] = set()

    def mint(self) -> str:
        code = secrets.token_urlsafe(32)
        self._codes.add(code)
        return code

    def redeem(self, code: str) -> bool:
        for known in list(self._codes):
            if same(code, known):
                self._codes.discard(known)
                return True
        return False


class Authenticator:
    """Resolves a request's credentials; ``required=False`` is ``--auth none``."""

    def __init__(
        self,
        token: str,
        registry: Registry,
        sessions: Sessions,
        codes: LoginCodes,
        required: bool = True,
        cookie_ports: tuple[int, ...] = (),
    ) -> None:
        self._token = token
        self._cookie_ports = cookie_ports
        self._registry = registry
        self.sessions = sessions
        self.codes = codes
        self.required = required

    def principal(self, request: Any) -> Principal | None:
        """The request's principal, or ``None`` without valid credentials."""
        if not self.required:
            return OPERATOR
        bearer = bearer_token(request)
        if bearer is not None:
            if same(bearer, self._token):
                return OPERATOR
            instance = self._registry.by_token(bearer)
            return Principal("agent", instance.name) if instance is not None else None
        names = [cookie_name(request), *(port_cookie(port) for port in self._cookie_ports)]
        for name in names:
            cookie = request.getCookie(name)
            if cookie is not None and self.sessions.check(cookie.decode("latin-1")):
                return OPERATOR
        return None

    def login(self, secret: str) -> bool:
        """Whether ``secret`` (the operator token, or a one-time code) logs a browser in."""
        return same(secret, self._token) or self.codes.redeem(secret)


def cookie_name(request: Any) -> bytes:
    """The session cookie's name on this listener: two daemons on one host (different
    ports) must not overwrite each other's sessions."""
    return port_cookie(getattr(request.getHost(), "port", None))


def port_cookie(port: int | None) -> bytes:
    """The session cookie's name on a listener on ``port`` (a gateway also accepts the
    control plane's, named after the control plane's port)."""
    return COOKIE if port is None else COOKIE + b"_" + str(port).encode()


def bearer_token(request: Any) -> str | None:
    values = request.requestHeaders.getRawHeaders(b"authorization") or []
    if len(values) != 1:
        return None
    scheme, _, value = values[0].decode("latin-1").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def agent_may(principal: Principal, method: bytes, path: bytes) -> bool:
    """Whether an agent may make this request at all (ownership of a message aside)."""
    if method == b"HEAD":
        method = b"GET"
    for allowed, pattern in AGENT_ROUTES:
        match = pattern.fullmatch(path)
        if allowed == method and match is not None:
            name = match.groupdict().get("name")
            return name is None or _unquoted(name) == principal.name
    return False


def _unquoted(segment: bytes) -> str:
    from urllib.parse import unquote

    return unquote(segment.decode("utf-8", "replace"))
