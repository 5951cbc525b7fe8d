"""``twistd cpstream``: the options and the one composition root.

``makeService`` builds every collaborator and wires them together; it is the
only place that touches the global reactor. (A gateway has its own composition
root, :mod:`cpstream.gatewaytap`, built from the same stream parts.)
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from twisted.internet import endpoints
from twisted.internet.interfaces import IReactorThreads
from twisted.logger import Logger
from twisted.python import usage

from cpstream.broker.link import BadURL, parse_url
from cpstream.broker.publisher import RedisPublisher
from cpstream.demo import seed_demo
from cpstream.domain.broker import INSTANCES, MESSAGES, Broker, InProcessBroker, Source
from cpstream.domain.checkpoint import Checkpointer
from cpstream.domain.children import default_command
from cpstream.domain.delivery import DeliveryWorker
from cpstream.domain.inbox import Inbox
from cpstream.domain.logfiles import SIZE_CAP, LogFiles
from cpstream.domain.logtail import LogTails
from cpstream.domain.messaging import Messaging
from cpstream.domain.meter import Meter
from cpstream.domain.registry import Registry
from cpstream.domain.retention import DEFAULT_RETENTION, Retention
from cpstream.domain.routing import RoutingRules
from cpstream.domain.store import Store
from cpstream.domain.supervisor import Supervisor
from cpstream.domain.tokens import operator_token
from cpstream.domain.usage import INTERVAL, GroupReader, UsageSampler, in_thread
from cpstream.service import ControlPlane, WebService, freeze_startup
from cpstream.streams.connections import Streams
from cpstream.streams.settings import prepare_frame
from cpstream.web.api import ControlAPI
from cpstream.web.auth import Authenticator, LoginCodes, Sessions
from cpstream.web.guard import Guard
from cpstream.web.metrics import ControlPlaneCollector, Metrics, MetricsResource
from cpstream.web.probe import HttpProbe
from cpstream.web.site import ControlPlaneSite, build_root
from cpstream.web.streams import build_streams

log = Logger()


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError("must be positive")
    return number


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError("must be at least 1")
    return number


def _duration(value: str | float) -> float:
    """Seconds from ``N``, ``Ns``, ``Nm``, ``Nh`` or ``Nd``."""
    if isinstance(value, int | float):
        return float(value)
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = value.strip().lower()
    scale = units.get(text[-1:], None)
    number = float(text[:-1] if scale else text)
    if not number > 0:
        raise ValueError("must be positive")
    return number * (scale or 1)


_positive_float.coerceDoc = "Must be a positive number."  # type: ignore[attr-defined]
_duration.coerceDoc = "A duration: seconds, or a number with s, m, h or d."  # type: ignore[attr-defined]
_positive_int.coerceDoc = "Must be a positive integer."  # type: ignore[attr-defined]


class ListenerOptions(usage.Options):
    """The options of anything that serves the streams: where, to whom, how many."""

    default_listen = "tcp:18800:interface=127.0.0.1"
    optParameters = [
        [
            "listen",
            None,
            None,
            "Twisted server endpoint to listen on [default: tcp:18800:interface=127.0.0.1;"
            " a gateway: tcp:18801:interface=127.0.0.1].",
        ],
        [
            "auth",
            None,
            "token",
            "token (the operator token, agent tokens, browser sessions) or none (a"
            " single-user machine: loopback or unix listener only).",
        ],
        [
            "idle-timeout",
            None,
            90.0,
            "Seconds without a client frame before a stream is closed.",
            _positive_float,
        ],
        [
            "max-connections",
            None,
            1024,
            "Most WebSocket connections open at once.",
            _positive_int,
        ],
    ]
    optFlags = [
        ["no-access-log", None, "Do not log requests (changes and errors are logged by default)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["allowed-origin"] = []
        self["allowed-host"] = []

    def opt_allowed_origin(self, origin: str) -> None:
        """An extra Origin (scheme://host[:port]) allowed to mutate and open streams;
        repeatable."""
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise usage.UsageError(f"--allowed-origin must look like http://host:port: {origin!r}")
        self["allowed-origin"].append(origin)

    def opt_allowed_host(self, host: str) -> None:
        """An extra Host header value (host or host:port) to serve; repeatable."""
        if not host or "/" in host or " " in host:
            raise usage.UsageError(f"--allowed-host must be a host name: {host!r}")
        self["allowed-host"].append(host)

    def check_listener(self) -> None:
        """The listener and the access mode, checked (``--auth none`` only on loopback)."""
        from twisted.internet import reactor

        if self["listen"] is None:
            self["listen"] = self.default_listen
        if self["listen"].startswith("unix:") and ":mode=" not in self["listen"]:
            self["listen"] += ":mode=600"  # the socket file: only this user may connect
        try:
            endpoints.serverFromString(reactor, self["listen"])
        except (ValueError, KeyError, TypeError, OSError) as e:
            raise usage.UsageError(
                f"--listen: not a server endpoint: {self['listen']!r} ({e})"
            ) from None
        if self["auth"] not in ("token", "none"):
            raise usage.UsageError(f"--auth must be 'token' or 'none', not {self['auth']!r}")
        if self["auth"] == "none" and not local_only(self["listen"]):
            raise usage.UsageError(
                "--auth none needs a loopback or unix listener (for example"
                " tcp:18800:interface=127.0.0.1): anyone who reaches the port could run commands"
            )


class Options(ListenerOptions):
    """Command-line options of ``twistd cpstream`` (and ``python -m cpstream``)."""

    synopsis = "[options]"
    longdesc = "A control plane for local agent processes, with live WebSocket streams."
    optParameters = [
        ["data-dir", None, "~/.cpstream", "Directory for the database and instance logs."],
        [
            "log-size-cap",
            None,
            SIZE_CAP,
            "Bytes past which a running instance's log is copied to .1 and truncated.",
            _positive_int,
        ],
        [
            "retention",
            None,
            DEFAULT_RETENTION,
            "How long finished messages and event history are kept (e.g. 7d, 12h, 3600).",
            _duration,
        ],
        [
            "usage-interval",
            None,
            INTERVAL,
            "Seconds between resource samples (CPU, memory, ...) of running instances.",
            _positive_float,
        ],
        [
            "broker",
            None,
            "memory",
            "memory (one process) or redis://HOST:PORT/DB: also publish every stream event"
            " to Redis, for gateways (cpstream gateway).",
        ],
    ]
    optFlags = [
        ["demo", None, "On an empty data dir, create and start two demo agents."],
        ["echo", None, "Mount /ws/echo, a conformance-test endpoint (a test aid)."],
    ]

    def postOptions(self) -> None:  # noqa: N802 (Twisted API)
        self.check_listener()
        check_broker(self["broker"])
        self["data-dir"] = Path(self["data-dir"]).expanduser()


def check_broker(url: str) -> None:
    """``memory`` or a redis:// URL, else a usage error."""
    if url == "memory":
        return
    try:
        parse_url(url)
    except BadURL as e:
        raise usage.UsageError(f"--broker: {e}") from None


def make_broker(url: str, reactor: Any, epoch: str) -> Broker:
    """The in-process broker, or a Redis publisher for the database of ``epoch``."""
    if url == "memory":
        return InProcessBroker()
    return RedisPublisher(reactor, url, epoch)


LOOPBACK = ("127.", "::1", "localhost")


def local_only(listen: str) -> bool:
    """Whether an endpoint string listens on loopback only or on a unix socket."""
    kind, _, rest = listen.partition(":")
    if kind == "unix":
        return True
    if kind not in ("tcp", "tcp6", "ssl"):
        return False
    parts = [part.replace("\\:", ":") for part in re.split(r"(?<!\\):", rest)]
    fields = dict(part.partition("=")[::2] for part in parts if "=" in part)
    interface = fields.get("interface", "").strip("[]")
    return interface.startswith(LOOPBACK)


def makeService(config: Options, reactor: Any = None) -> ControlPlane:  # noqa: N802 (Twisted API)
    """Build the control plane from parsed options, every part on ``reactor``.

    Without a reactor (twistd's call) the daemon owns its process: once started it
    freezes its start-up objects out of the garbage collector. Tests and benchmarks
    pass their reactor and share their process: they keep it as it is.
    """
    owns_process = reactor is None
    if reactor is None:
        from twisted.internet import reactor
    data_dir = Path(config["data-dir"]).expanduser()
    # A reactor with threads checkpoints in its pool; one without (a test's) keeps SQLite's.
    threaded = IReactorThreads.providedBy(reactor)
    store = Store.open(data_dir / "cp.db", autocheckpoint=not threaded)
    checkpointer: tuple[Any, ...] = (Checkpointer(store.path, reactor),) if threaded else ()
    meter = Meter()
    broker = make_broker(config["broker"], reactor, store.meta.get("epoch"))
    instances_hub, messages_hub = (
        broker.hub(topic, reactor, seq, prepare=prepare_frame, meter=meter, kind=topic)
        for topic, seq in (
            (INSTANCES, store.instance_events.last_id()),
            (MESSAGES, store.messages.last_event_id()),
        )
    )
    registry = Registry(store, instances_hub, reactor, default_command())
    logs = LogFiles(data_dir, size_cap=config["log-size-cap"])
    logs.adopt_named(registry.all(include_archived=True))
    supervisor = Supervisor(reactor, registry, logs, HttpProbe(reactor))
    rules = RoutingRules(store.rules, registry, reactor)
    messaging = Messaging(store, messages_hub, reactor, rules, meter=meter)
    inbox = Inbox(messaging, reactor)
    broker.bind(INSTANCES, Source(registry.history, registry.mirrored, registry.ids))
    broker.bind(MESSAGES, Source(messaging.history))
    worker = DeliveryWorker(messaging, reactor)
    sampler = UsageSampler(
        registry, reactor, in_thread(reactor, GroupReader()), interval=config["usage-interval"]
    )
    api = ControlAPI(registry, supervisor, logs, rules, messaging, inbox, sampler, broker.health)
    streams = Streams(reactor, config["idle-timeout"], config["max-connections"], meter=meter)
    tails = LogTails(
        reactor,
        inotify=_inotify(reactor),
        secret=bytes.fromhex(store.meta.get("secret")),
        meter=meter,
    )
    logs.when_capped(tails.capped)
    logs.when_removed(tails.removed)
    retention = Retention(store, reactor, keep=config["retention"])
    ws = build_streams(
        streams, registry, instances_hub, messaging, messages_hub, logs, tails, config["echo"]
    )
    guard = Guard(config["allowed-host"], config["allowed-origin"])
    token = operator_token(data_dir / "operator.token")
    auth = Authenticator(
        token,
        registry,
        Sessions(token, store.sessions, reactor, broker.sessions(store.sessions.all)),
        LoginCodes(),
        required=config["auth"] == "token",
    )
    metrics = Metrics(
        ControlPlaneCollector(registry, supervisor, sampler, messaging, streams, meter), meter
    )
    site = ControlPlaneSite(
        build_root(api.app.resource(), ws, auth, MetricsResource(metrics)),
        guard,
        reactor,
        auth,
        access_log=not config["no-access-log"],
        meter=meter,
    )
    scheme = "https" if config["listen"].startswith("ssl:") else "http"
    web = WebService(endpoints.serverFromString(reactor, config["listen"]), site, scheme)
    on_ready: tuple[Any, ...] = (lambda: _welcome(web, auth),)
    if config["demo"]:
        on_ready += (lambda: seed_demo(registry, supervisor, rules),)
    if owns_process:
        on_ready += (freeze_startup,)
    return ControlPlane(
        store,
        web,
        supervisor,
        streams=streams,
        workers=(*checkpointer, inbox, worker, retention, sampler, broker),
        on_ready=on_ready,
        registry=registry,
        hubs={"instances": instances_hub, "messages": messages_hub},
        messaging=messaging,
    )


def _welcome(web: WebService, auth: Authenticator) -> None:
    """Log where the dashboard is: with a one-time login link when a token is needed."""
    if auth.required:
        link = f"{web.url}/login?token={auth.codes.mint()}"
        log.info("dashboard: {link}  (a one-time login link)", link=link)
    else:
        log.warn("--auth none: anyone who can reach {url} can run commands", url=web.url)
        log.info("dashboard: {url}/", url=web.url)


def _inotify(reactor: Any) -> Any:
    """An inotify reader on Linux; ``None`` (poll only) where there is none.

    ``CPSTREAM_POLL_ONLY=1`` turns it off, for filesystems where inotify sees
    nothing (NFS and some container mounts) and to measure the poll alone.
    """
    if os.environ.get("CPSTREAM_POLL_ONLY") == "1":
        return None
    try:
        from twisted.internet.inotify import INotify
    except ImportError:
        return None
    try:
        notifier = INotify(reactor)
    except Exception:
        return None
    notifier.startReading()
    return notifier
