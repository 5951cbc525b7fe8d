"""The command line's REST side: treq, the daemon's URL and the credentials it sends.

Credentials, first found wins: ``--token``, ``$CPSTREAM_TOKEN`` (an agent runs
with its own there), then ``DATA_DIR/operator.token``. Without any, requests
go out without an ``Authorization`` header (a daemon started with ``--auth none``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import treq
from twisted.internet import defer, error
from twisted.web import client as web_client

from cpstream import __version__

DEFAULT_URL = "http://127.0.0.1:18800"
DEFAULT_DATA_DIR = "~/.cpstream"
# Long enough for a stop (SIGTERM, then SIGKILL after 5 s) or a restart to answer.
REQUEST_TIMEOUT = 60.0
USER_AGENT = f"cpstream-cli/{__version__}"

# What "cannot connect" looks like through treq and Twisted's Agent.
UNREACHABLE = (
    error.ConnectError,
    error.DNSLookupError,
    error.TimeoutError,
    error.ConnectionLost,
    defer.CancelledError,
    web_client.ResponseNeverReceived,
    web_client.ResponseFailed,
    web_client.RequestTransmissionFailed,
    OSError,
)


class ApiError(Exception):
    """The API refused: its HTTP status and the ``error`` of its JSON answer (exit 1)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message


class Unreachable(Exception):
    """Nothing answered at the URL (exit 3)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot connect to {url}: {reason}")
        self.url = url
        self.reason = reason


def find_token(token: str | None, data_dir: str | None) -> str | None:
    """The credential to send: ``--token``, else ``$CPSTREAM_TOKEN``, else the data dir's
    ``operator.token``; ``None`` when there is none."""
    if token:
        return token.strip()
    if os.environ.get("CPSTREAM_TOKEN"):
        return os.environ["CPSTREAM_TOKEN"].strip()
    path = Path(data_dir or DEFAULT_DATA_DIR).expanduser() / "operator.token"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def check_url(url: str) -> str | None:
    """Why ``url`` cannot be the daemon's base URL, or ``None`` when it can."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"--url must look like http://HOST:PORT, not {url!r}"
    return None


def reason_of(failure_value: BaseException) -> str:
    """A one-line reason for a connection failure (Agent wraps the real one in a list)."""
    inner = getattr(failure_value, "reasons", None)
    if inner:
        return reason_of(inner[0].value)
    if isinstance(failure_value, defer.CancelledError):
        return f"no answer within {REQUEST_TIMEOUT:g} s"
    if isinstance(failure_value, error.ConnectionRefusedError):
        return "connection refused"
    text = str(failure_value).strip().rstrip(".")
    return text or type(failure_value).__name__


class Client:
    """REST calls to one daemon with one credential; answers are decoded JSON."""

    def __init__(self, url: str, token: str | None, reactor: Any = None) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self._reactor = reactor

    def headers(self) -> dict[str, str]:
        """The headers every request carries (REST and WebSocket upgrades alike)."""
        headers = {"User-Agent": USER_AGENT}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def stream_url(self, path: str, params: dict[str, Any] | None = None) -> str:
        """The ``ws://`` (or ``wss://``) URL of a stream path, with its query."""
        base = "ws" + self.url[len("http") :]
        query = {k: v for k, v in (params or {}).items() if v is not None}
        return base + path + (f"?{urlencode(query)}" if query else "")

    async def request(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        body: Any = None,
    ) -> Any:
        """One request; the decoded JSON answer on 2xx, else :class:`ApiError`;
        :class:`Unreachable` when nothing answers."""
        headers = {k: [v] for k, v in self.headers().items()}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = ["application/json"]
        query = {k: str(v) for k, v in (params or {}).items() if v is not None}
        try:
            response = await treq.request(
                method,
                self.url + path,
                data=data,
                params=query or None,
                headers=headers,
                allow_redirects=False,
                timeout=REQUEST_TIMEOUT,
                reactor=self._reactor,
            )
            raw = await treq.content(response)
        except UNREACHABLE as e:
            raise Unreachable(self.url, reason_of(e)) from None
        try:
            answer = json.loads(raw) if raw.strip() else None
        except ValueError:
            answer = None
        if not 200 <= response.code < 300:
            message = answer.get("error") if isinstance(answer, dict) else None
            if not isinstance(message, str):
                message = raw.decode("utf-8", "replace").strip().splitlines()[:1]
                message = message[0][:200] if message else response.phrase.decode()
            raise ApiError(response.code, message)
        if answer is None and raw.strip():
            raise ApiError(response.code, "the answer is not JSON (is --url a cpstream daemon?)")
        return answer

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)


def segment(value: str) -> str:
    """``value`` as one path segment (a name or an id)."""
    return quote(value, safe="")
