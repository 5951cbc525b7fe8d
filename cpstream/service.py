"""The control plane service: children started and stopped in an explicit order.

``MultiService`` alone starts and stops its children concurrently; the
control plane needs an order. Start: listen, then adopt or start children,
then seed the demo. Stop: stop listening, close the streams (bounded), stop
the loops, close the store. Children are not killed by a stop: the next
control plane adopts them.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

from cpstream.domain.store import Store


def freeze_startup() -> None:
    """Collect, then move everything still alive (modules, classes, the loaded state) out
    of the cyclic collector's reach: a full collection, which stops the reactor, then
    scans only what came later (bench/gcpause.py). For a process the daemon owns."""
    gc.collect()
    gc.freeze()


class WebService(Service):
    """Listens on the configured endpoint; knows the URL children reach us at."""

    log = Logger()

    def __init__(self, endpoint: Any, site: Any, scheme: str = "http") -> None:
        self._endpoint = endpoint
        self._site = site
        self._scheme = scheme
        self.port: IListeningPort | None = None

    def startService(self) -> None:  # noqa: N802 (Twisted API)
        """Listen; a failure (port in use) is raised at once so twistd exits with it."""
        super().startService()
        failures: list[Any] = []
        listening = self._endpoint.listen(self._site)
        listening.addCallbacks(self._listening, failures.append)
        if failures:
            failures[0].raiseException()

    def _listening(self, port: IListeningPort) -> None:
        self.port = port
        self.log.info("cpstream listening on {url}", url=self.url)

    @property
    def url(self) -> str:
        """Where a browser or an agent reaches us (``http+unix://`` for a unix socket)."""
        address = self.port.getHost() if self.port is not None else None
        name = getattr(address, "name", None)
        if name is not None:
            path = name.decode() if isinstance(name, bytes) else str(name)
            return "http+unix://" + quote(path, safe="")
        host = getattr(address, "host", "127.0.0.1")
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"{self._scheme}://{host}:{getattr(address, 'port', 18800)}"

    def stopService(self) -> defer.Deferred:  # noqa: N802 (Twisted API)
        super().stopService()
        port, self.port = self.port, None
        return defer.maybeDeferred(port.stopListening) if port else defer.succeed(None)


class ControlPlane(MultiService):
    """The whole daemon: store, supervisor, messaging and web, in order."""

    log = Logger()

    def __init__(
        self,
        store: Store,
        web: WebService,
        supervisor: Any,
        streams: Any = None,
        workers: tuple[Service, ...] = (),
        on_ready: tuple[Callable[[], Any], ...] = (),
        registry: Any = None,
        hubs: dict[str, Any] | None = None,
        messaging: Any = None,
    ) -> None:
        super().__init__()
        # the instance table, messaging and the hubs, for tests and benchmarks
        self.registry = registry
        self.messaging = messaging
        self.hubs = hubs or {}
        self.store = store
        self.web = web
        self.supervisor = supervisor
        self.streams = streams
        self.workers = workers
        self._on_ready = on_ready
        for child in (web, supervisor, *workers):
            child.setServiceParent(self)

    def startService(self) -> None:  # noqa: N802 (Twisted API)
        Service.startService(self)
        self.web.startService()
        self.supervisor.cp_url = self.web.url
        self.supervisor.startService()
        for worker in self.workers:
            worker.startService()
        for ready in self._on_ready:
            ready()

    @defer.inlineCallbacks
    def stopService(self):  # noqa: N802 (Twisted API)
        """Stop listening, close streams, stop loops, close the store — in that order."""
        Service.stopService(self)
        yield self.web.stopService()
        if self.streams is not None:
            yield self.streams.close_all()
        for worker in reversed(self.workers):
            yield worker.stopService()
        yield self.supervisor.stopService()
        self.store.close()
        self.log.info("control plane stopped")


class Gateway(MultiService):
    """A stream gateway: its broker feed, then its listener; stopped the other way round."""

    log = Logger()

    def __init__(self, web: WebService, feed: Service, streams: Any) -> None:
        super().__init__()
        self.web = web
        self.feed = feed
        self.streams = streams
        for child in (feed, web):
            child.setServiceParent(self)

    def startService(self) -> None:  # noqa: N802 (Twisted API)
        Service.startService(self)
        self.feed.startService()
        self.web.startService()

    @defer.inlineCallbacks
    def stopService(self):  # noqa: N802 (Twisted API)
        """Stop listening, close the streams, then leave Redis."""
        Service.stopService(self)
        yield self.web.stopService()
        yield self.streams.close_all()
        yield self.feed.stopService()
        self.log.info("gateway stopped")
