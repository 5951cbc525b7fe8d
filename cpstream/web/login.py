"""Browser sessions: ``/login`` (a link with a token, or a pasted token) and ``/logout``.

The daemon prints a one-time login link at start; following it (or pasting the
operator token into the login page) sets an HttpOnly, ``SameSite=Strict``
session cookie and sends the browser to the dashboard with no token in its URL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.web.error import UnsupportedMethod
from twisted.web.resource import Resource

from cpstream.domain.errors import Invalid
from cpstream.web.auth import SESSION_LIFETIME, Authenticator, cookie_name
from cpstream.web.bodies import json_body
from cpstream.web.errors import error_response, json_response


def _set_session(request: Any, value: str, max_age: int) -> None:
    request.addCookie(
        cookie_name(request),
        value.encode("ascii"),
        path=b"/",
        max_age=str(max_age).encode(),
        httpOnly=True,
        sameSite=b"strict",
        secure=True if request.isSecure() else None,
    )


class _JSONResource(Resource):
    """A leaf whose unsupported methods get a JSON 405, like every other path."""

    isLeaf = True

    def render(self, request: Any) -> Any:
        try:
            return super().render(request)
        except UnsupportedMethod:
            return error_response(request, 405, "method not allowed")


class Login(_JSONResource):
    """``GET /login[?token=T]``: the login page, or a session for a valid token;
    ``POST /login {"token": T}``: the login page's form."""

    def __init__(self, auth: Authenticator, page: Path) -> None:
        super().__init__()
        self._auth = auth
        self._page = page

    def render_GET(self, request: Any) -> bytes:  # noqa: N802 (Twisted API)
        tokens = request.args.get(b"token")
        if not self._auth.required:
            return self._redirect(request)
        if tokens:
            if self._auth.login(tokens[0].decode("utf-8", "replace")):
                _set_session(request, self._auth.sessions.open(), SESSION_LIFETIME)
                return self._redirect(request)
            request.setResponseCode(401)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"referrer-policy", b"no-referrer")
        return self._page.read_bytes()

    def render_POST(self, request: Any) -> bytes:  # noqa: N802 (Twisted API)
        try:
            token = json_body(request, frozenset({"token"})).get("token")
        except Invalid as e:
            return error_response(request, 400, e.message)
        if not isinstance(token, str) or not self._auth.login(token):
            return error_response(request, 401, "unauthorized")
        _set_session(request, self._auth.sessions.open(), SESSION_LIFETIME)
        return json_response(request, {"status": "ok"})

    @staticmethod
    def _redirect(request: Any) -> bytes:
        request.setResponseCode(302)
        request.setHeader(b"location", b"/")
        request.setHeader(b"referrer-policy", b"no-referrer")
        return b""


class Logout(_JSONResource):
    """``POST /logout``: this browser's session ends for good."""

    def __init__(self, auth: Authenticator) -> None:
        super().__init__()
        self._auth = auth

    def render_POST(self, request: Any) -> bytes:  # noqa: N802 (Twisted API)
        cookie = request.getCookie(cookie_name(request))
        if cookie is not None:
            self._auth.sessions.end(cookie.decode("latin-1"))
        _set_session(request, "", 0)
        return json_response(request, {"status": "logged out"})
