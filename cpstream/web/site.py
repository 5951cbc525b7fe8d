"""The resource tree and the HTTP site: ``/api/`` (Klein), ``/ws/`` (streams), ``/`` (UI).

The tree is built by hand so that every path has exactly one owner, and the
site applies the request policy of :mod:`cpstream.web.guard` to every request
before any resource sees it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.web.resource import IResource, Resource
from twisted.web.static import File

from cpstream.web.deadline import DeadlineSite
from cpstream.web.errors import HTTPError, JSONError
from cpstream.web.guard import MUTATING, Guard, LimitedRequest

STATIC_DIR = Path(__file__).parent / "static"
SERVER_NAME = b"cpstream"


class ControlPlaneSite(DeadlineSite):
    """A ``Site`` that checks the request policy before resolving any resource."""

    requestFactory = LimitedRequest

    def __init__(self, root: IResource, guard: Guard, reactor: Any, **kwargs: Any) -> None:
        # Bodies are JSON only: a form is refused (415), never parsed (1 MiB of multipart
        # parts, which any web page can post here, held the reactor for ~0.4 s).
        super().__init__(root, parsePOSTFormSubmission=False, reactor=reactor, **kwargs)
        self._guard = guard

    def getResourceFor(self, request: Any) -> IResource:  # noqa: N802 (Twisted API)
        request.setHeader(b"server", SERVER_NAME)
        request.setHeader(b"cache-control", b"no-cache")  # UI files revalidate after upgrades
        try:
            self._guard.check(request)
        except HTTPError as refusal:
            return JSONError(refusal.status, refusal.message)
        return super().getResourceFor(request)

    def log(self, request: Any) -> None:
        """Access-log changes and errors only; agents' polls would drown the rest."""
        if request.method in MUTATING or request.code >= 400:
            super().log(request)


def build_root(api: IResource, streams: IResource | None = None) -> Resource:
    """``/`` serves the UI files, ``/api/`` the REST API, ``/ws/`` the streams."""
    root = File(str(STATIC_DIR))
    root.indexNames = ["index.html"]
    root.putChild(b"api", api)
    root.putChild(b"ws", streams if streams is not None else JSONError(404, "no such stream"))
    return root
