"""The resource tree and the HTTP site: ``/api/`` (Klein), ``/ws/`` (streams), ``/`` (UI).

The tree is built by hand so that every path has exactly one owner, and the
site applies the request policy of :mod:`cpstream.web.guard` to every request
before any resource sees it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.logger import Logger
from twisted.web.resource import IResource, Resource
from twisted.web.static import File

from cpstream.domain.meter import Meter
from cpstream.web.auth import Authenticator, agent_may
from cpstream.web.deadline import DeadlineSite
from cpstream.web.errors import HTTPError, JSONError
from cpstream.web.guard import MUTATING, Guard, LimitedRequest
from cpstream.web.login import Login, Logout

STATIC_DIR = Path(__file__).parent / "static"
SERVER_NAME = b"cpstream"
ACCESS_FLUSH = 1.0
ACCESS_LOG = Logger(namespace="cpstream.access")


UNAUTHENTICATED = ((b"GET", b"/api/health"), (b"HEAD", b"/api/health"))
PROTECTED = (b"/api/", b"/ws/", b"/metrics")


class ControlPlaneSite(DeadlineSite):
    """A ``Site`` that checks the request policy and the credentials before resolving any
    resource; the request's :class:`~cpstream.web.auth.Principal` is ``request.principal``."""

    requestFactory = LimitedRequest

    def __init__(
        self,
        root: IResource,
        guard: Guard,
        reactor: Any,
        auth: Authenticator,
        access_log: bool = True,
        meter: Meter | None = None,
        **kwargs: Any,
    ) -> None:
        # Bodies are JSON only: a form is refused (415), never parsed (1 MiB of multipart
        # parts, which any web page can post here, held the reactor for ~0.4 s).
        super().__init__(root, parsePOSTFormSubmission=False, reactor=reactor, **kwargs)
        self._guard = guard
        self._auth = auth
        self._meter = meter if meter is not None else Meter()
        self.access_log = access_log
        self._lines: list[str] = []
        self._flush_call: Any = None

    def getResourceFor(self, request: Any) -> IResource:  # noqa: N802 (Twisted API)
        request.setHeader(b"server", SERVER_NAME)
        request.setHeader(b"cache-control", b"no-cache")  # UI files revalidate after upgrades
        try:
            self._guard.check(request)
        except HTTPError as refusal:
            return JSONError(refusal.status, refusal.message)
        refusal = self._authorize(request)
        if refusal is not None:
            return refusal
        return super().getResourceFor(request)

    def _authorize(self, request: Any) -> IResource | None:
        """401 without credentials, 403 for an agent outside its routes (before any upgrade)."""
        request.principal = principal = self._auth.principal(request)
        if not request.path.startswith(PROTECTED):
            return None
        if (request.method, request.path) in UNAUTHENTICATED:
            return None
        if principal is None:
            request.setHeader(b"www-authenticate", b'Bearer realm="cpstream"')
            return JSONError(401, "unauthorized")
        if not principal.operator and not agent_may(principal, request.method, request.path):
            return JSONError(403, "an agent's token does not allow this")
        return None

    def log(self, request: Any) -> None:
        """Access-log changes and errors only (agents' polls would drown the rest), in one
        write a second: a write per request held the reactor (16 % of it under load).
        Every request is counted by route and status (a dict increment)."""
        self._meter.count(("http", route_of(request), request.code))
        if not self.access_log or (request.method not in MUTATING and request.code < 400):
            return
        self._lines.append(self._logFormatter(self._logDateTime, request))
        if self._flush_call is None:
            self._flush_call = self.reactor.callLater(ACCESS_FLUSH, self.flush_access_log)

    def flush_access_log(self) -> None:
        """Write the buffered access-log lines as one log event."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        lines, self._lines = self._lines, []
        if lines:
            ACCESS_LOG.info("{lines}", lines="\n".join(lines), count=len(lines))

    def stopFactory(self) -> None:  # noqa: N802 (Twisted API)
        """The listener stopped: nothing buffered is lost."""
        self.flush_access_log()
        super().stopFactory()


OWN_PATHS = {b"/metrics": "/metrics", b"/login": "/login", b"/logout": "/logout"}


def route_of(request: Any) -> str:
    """A request's route for the metrics, never its raw path: the API's route template,
    ``/ws`` for the streams, ``static`` for the dashboard's files, ``other`` for the rest."""
    route = getattr(request, "route", None)
    if route is not None:
        return route
    path = request.path
    if path in OWN_PATHS:
        return OWN_PATHS[path]
    if path.startswith(b"/ws/"):
        return "/ws"
    if not path.startswith(b"/api/") and request.code < 400:
        return "static"
    return "other"


def build_root(
    api: IResource,
    streams: IResource | None = None,
    auth: Authenticator | None = None,
    metrics: IResource | None = None,
) -> Resource:
    """``/`` serves the UI files, ``/api/`` the REST API, ``/ws/`` the streams, ``/login``
    and ``/logout`` the browser sessions, ``/metrics`` the Prometheus exposition."""
    root = File(str(STATIC_DIR))
    root.indexNames = ["index.html"]
    root.putChild(b"api", api)
    root.putChild(b"ws", streams if streams is not None else JSONError(404, "no such stream"))
    if auth is not None:
        root.putChild(b"login", Login(auth, STATIC_DIR / "login.html"))
        root.putChild(b"logout", Logout(auth))
    if metrics is not None:
        root.putChild(b"metrics", metrics)
    return root
