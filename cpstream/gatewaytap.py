"""``twistd cpstream-gateway`` (and ``cpstream gateway``): the options and its composition root.

A gateway serves ``/ws/instances``, ``/ws/messages`` and ``/ws/instances/NAME/logs``
with the control plane's own stream protocols, resource tree, settings, connection
bookkeeping and request policy; only what feeds them differs: mirrors kept current
from Redis by :class:`~cpstream.broker.feed.RedisFeed` instead of the store, and
the control plane's log stream relayed instead of the files. ``makeService`` is
the only place here that touches the global reactor.

Access: the operator token (``--token-file PATH`` or ``CPSTREAM_TOKEN``) as a
bearer token, or a browser session cookie of the control plane: sessions are
HMAC-signed with the operator token itself, so the same token is the same key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from twisted.internet import endpoints
from twisted.python import usage

from cpstream.broker.feed import RedisFeed
from cpstream.domain.broker import INSTANCES, MESSAGES
from cpstream.domain.hub import Hub
from cpstream.domain.mirror import InstancesView, MessagesView, Mirror
from cpstream.service import Gateway, WebService, freeze_startup
from cpstream.streams.connections import Streams
from cpstream.streams.hubstreams import InstancesFactory, MessagesFactory
from cpstream.streams.logproxy import ProxiedLogsFactory
from cpstream.streams.settings import prepare_frame
from cpstream.tap import ListenerOptions
from cpstream.web.auth import Authenticator, LoginCodes, Sessions
from cpstream.web.gateway import GatewayHealth, gateway_root
from cpstream.web.guard import Guard
from cpstream.web.site import ControlPlaneSite
from cpstream.web.streams import stream_tree


class Options(ListenerOptions):
    """Command-line options of ``twistd cpstream-gateway`` (and ``cpstream gateway``)."""

    synopsis = "--broker redis://HOST:PORT/DB [options]"
    longdesc = (
        "A stream gateway: /ws/instances, /ws/messages and /ws/instances/NAME/logs, the"
        " control plane's protocol, fed by Redis (the control plane runs with the same --broker)."
    )
    default_listen = "tcp:18801:interface=127.0.0.1"
    optParameters = [
        ["broker", None, None, "redis://HOST:PORT/DB, the control plane's --broker (required)."],
        [
            "control",
            None,
            None,
            "The control plane's URL (http://HOST:PORT), for the log streams it relays.",
        ],
        [
            "token-file",
            None,
            None,
            "A file holding the operator token (else CPSTREAM_TOKEN); the control plane's"
            " DATA/operator.token.",
        ],
    ]

    def postOptions(self) -> None:  # noqa: N802 (Twisted API)
        from cpstream.tap import check_broker

        self.check_listener()
        if not self["broker"] or self["broker"] == "memory":
            raise usage.UsageError("--broker redis://HOST:PORT/DB is required")
        check_broker(self["broker"])
        if self["control"] is not None:
            parts = urlsplit(self["control"])
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise usage.UsageError(f"--control must be http://HOST:PORT: {self['control']!r}")
        self["token"] = None
        if self["token-file"] is not None:
            try:
                self["token"] = Path(self["token-file"]).expanduser().read_text().strip()
            except OSError as e:
                raise usage.UsageError(f"--token-file: {e}") from None
        elif os.environ.get("CPSTREAM_TOKEN"):
            self["token"] = os.environ["CPSTREAM_TOKEN"].strip()
        if self["auth"] == "token" and not self["token"]:
            raise usage.UsageError("the operator token is needed: --token-file or CPSTREAM_TOKEN")


class _NoAgents:
    """Agents' tokens open no stream (``AGENT_ROUTES``): a gateway knows none."""

    def by_token(self, token: str) -> None:
        return None


def mirrors(reactor: Any) -> dict[str, Mirror]:
    """One empty mirror per topic, each with its hub."""
    return {topic: Mirror(Hub(reactor, prepare=prepare_frame)) for topic in (INSTANCES, MESSAGES)}


def makeService(config: Options, reactor: Any = None) -> Gateway:  # noqa: N802 (Twisted API)
    """Build a gateway from parsed options, every part on ``reactor``; without a reactor
    (twistd's call) it owns its process, and freezes its objects once the streams are
    loaded (as :func:`cpstream.tap.makeService` does)."""
    owns_process = reactor is None
    if reactor is None:
        from twisted.internet import reactor
    kept = mirrors(reactor)
    streams = Streams(reactor, config["idle-timeout"], config["max-connections"])
    streams.not_ready = "the gateway has not loaded the streams from its broker yet: retry"
    feed = RedisFeed(
        reactor, config["broker"], kept, on_loaded=lambda: _ready(streams, owns_process)
    )
    token = config["token"] or ""
    instances = InstancesFactory(streams, kept[INSTANCES].hub, InstancesView(kept[INSTANCES]))
    messages = MessagesFactory(streams, kept[MESSAGES].hub, MessagesView(kept[MESSAGES]))
    logs = ProxiedLogsFactory(streams, reactor, config["control"] or "", token or None)
    ws = stream_tree(instances, messages, logs)
    auth = Authenticator(
        token,
        _NoAgents(),  # type: ignore[arg-type]
        Sessions(token, feed.ended_sessions, reactor),  # type: ignore[arg-type]
        LoginCodes(),
        required=config["auth"] == "token",
        cookie_ports=_port_of(config["control"]),
    )
    site = ControlPlaneSite(
        gateway_root(GatewayHealth(feed.health, streams), ws),
        Guard(config["allowed-host"], config["allowed-origin"]),
        reactor,
        auth,
        access_log=not config["no-access-log"],
    )
    scheme = "https" if config["listen"].startswith("ssl:") else "http"
    web = WebService(endpoints.serverFromString(reactor, config["listen"]), site, scheme)
    return Gateway(web, feed, streams)


def _ready(streams: Streams, owns_process: bool) -> None:
    """The first load is done: streams may open (their snapshots are the broker's)."""
    streams.not_ready = None
    if owns_process:
        freeze_startup()


def _port_of(control: str | None) -> tuple[int, ...]:
    """The control plane's port: its session cookie is named after it."""
    if not control:
        return ()
    parts = urlsplit(control)
    return (parts.port or (443 if parts.scheme == "https" else 80),)
