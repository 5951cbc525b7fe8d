"""One Redis connection kept open: reconnects with backoff, and says whether it is up.

Twisted's :class:`ClientService` does the connecting and the backoff; each new
connection is handed to ``on_ready`` (subscribe, catch up...) before it counts
as usable. Commands time out after ``reply_timeout`` seconds, which aborts the
connection: a frozen Redis (or a stalled network) is noticed, not waited on.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import txredisapi
from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import Service
from twisted.internet import defer, endpoints, protocol
from twisted.logger import Logger

REPLY_TIMEOUT = 2.0


def _jitter() -> float:
    """Up to 0.1 s more before a reconnect, so gateways do not all arrive at once."""
    return random.uniform(0.0, 0.1)


class BadURL(ValueError):
    """Not a ``redis://HOST:PORT/DB`` URL."""


def parse_url(url: str) -> tuple[str, int, int, str | None]:
    """``redis://[:PASSWORD@]HOST[:PORT][/DB]`` -> (host, port, db, password)."""
    parts = urlsplit(url)
    if parts.scheme != "redis" or not parts.hostname:
        raise BadURL(f"not a redis://HOST:PORT/DB URL: {url!r}")
    path = parts.path.strip("/") or "0"
    if not path.isdigit():
        raise BadURL(f"the database must be a number: {url!r}")
    try:
        port = parts.port or 6379
    except ValueError:
        raise BadURL(f"bad port: {url!r}") from None
    return parts.hostname, port, int(path), parts.password


class _Factory(protocol.Factory):
    """Builds txredisapi protocols that report their loss to the link."""

    noisy = False  # no "Starting factory" line for each reconnection attempt

    def __init__(self, link: Link, protocol_class: type, db: int, password: str | None) -> None:
        self._link = link
        self._protocol_class = protocol_class
        self._db = db or None
        self._password = password

    def buildProtocol(self, addr: Any) -> Any:  # noqa: N802 (Twisted API)
        proto = self._protocol_class(
            replyTimeout=self._link.reply_timeout,
            password=self._password,
            dbid=self._db,
            convertNumbers=False,
        )
        proto.factory = self
        proto.itself = proto  # ClientService hands out a proxy: this reaches the protocol
        proto.callLater = self._link.reactor.callLater
        link = self._link
        lost = proto.connectionLost

        def connection_lost(why: Any) -> None:
            lost(why)
            link.lost(proto)

        proto.connectionLost = connection_lost
        return proto

    # txredisapi calls these when AUTH or SELECT fails
    def stopTrying(self) -> None:  # noqa: N802 (txredisapi API)
        pass

    def connectionError(self, why: str) -> None:  # noqa: N802 (txredisapi API)
        self._link.log.error("redis: {why}", why=why)


class Link(Service):
    """A Redis connection that comes back; ``protocol`` is the usable one, or None."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        url: str,
        on_ready: Callable[[Any], Any],
        on_lost: Callable[[], None] = lambda: None,
        protocol_class: type = txredisapi.RedisProtocol,
        reply_timeout: float = REPLY_TIMEOUT,
        name: str = "redis",
    ) -> None:
        self.reactor = reactor
        self.url = url
        self.reply_timeout = reply_timeout
        self.label = name
        host, port, db, password = parse_url(url)
        endpoint = endpoints.HostnameEndpoint(reactor, host, port, timeout=reply_timeout)
        self._on_ready = on_ready
        self._on_lost = on_lost
        self.protocol: Any = None
        self.failures = 0
        self._service = ClientService(
            endpoint,
            _Factory(self, protocol_class, db, password),
            retryPolicy=backoffPolicy(initialDelay=0.05, maxDelay=1.0, factor=2.0, jitter=_jitter),
            clock=reactor,
            prepareConnection=self._prepare,
        )

    @property
    def reachable(self) -> bool:
        return self.protocol is not None

    def startService(self) -> None:  # noqa: N802 (Twisted API)
        super().startService()
        self._service.startService()

    def stopService(self) -> defer.Deferred:  # noqa: N802 (Twisted API)
        super().stopService()
        self.protocol = None
        return self._service.stopService()

    @defer.inlineCallbacks
    def _prepare(self, proxy: Any) -> Any:
        """A new connection: ready once authenticated, selected and prepared by the owner."""
        proto = proxy.itself
        yield proto.whenConnected()
        try:
            yield self._on_ready(proto)
        except Exception as e:
            self.failures += 1
            self.log.warn("{name}: preparing a connection failed: {e}", name=self.label, e=e)
            proto.transport.abortConnection()
            raise
        self.protocol = proto
        self.log.info("{name}: connected to {url}", name=self.label, url=self.url)

    def lost(self, proto: Any) -> None:
        """The connection ended: unusable until the service reconnects."""
        self._on_lost()
        if self.protocol is proto:
            self.protocol = None
            self.failures += 1
            if self.running:
                self.log.warn("{name}: lost {url}, reconnecting", name=self.label, url=self.url)

    def drop(self) -> None:
        """Abort the current connection (a command timed out or went wrong): reconnect."""
        proto, self.protocol = self.protocol, None
        if proto is not None and proto.transport is not None:
            proto.transport.abortConnection()
