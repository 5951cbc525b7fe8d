"""The HTTP health probe: ``GET http://127.0.0.1:PORT/health`` answered 2xx."""

from __future__ import annotations

from typing import Any

import treq
from treq.client import HTTPClient
from twisted.internet import defer
from twisted.web.client import Agent, HTTPConnectionPool


class HttpProbe:
    """Probes an instance's ``/health``; any error or non-2xx answer means unhealthy."""

    def __init__(self, reactor: Any, timeout: float = 2.0) -> None:
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 1
        self._client = HTTPClient(Agent(reactor, pool=pool, connectTimeout=timeout))
        self._reactor = reactor
        self._timeout = timeout

    @defer.inlineCallbacks
    def __call__(self, port: int):
        try:
            response = yield self._client.get(
                f"http://127.0.0.1:{port}/health", reactor=self._reactor, timeout=self._timeout
            )
            yield treq.content(response)
        except Exception:
            return False
        return 200 <= response.code < 300
