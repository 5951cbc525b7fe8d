"""The demo agent: ``python -m cpstream.agent [flags]``.

A real, small program run as an instance: it serves ``GET /health`` on
``$CPSTREAM_PORT``, writes a heartbeat line to its log (stdout) every few
seconds, long-polls the control plane at ``$CPSTREAM_URL`` for its messages
(with its own token, ``$CPSTREAM_TOKEN``), logs and acknowledges them under
their lease, and can send ``task.handoff`` messages to a peer.
It exits by itself once its control plane has been unreachable for 60 s.
Flags make it misbehave on purpose for tests.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

UNREACHABLE_EXIT = 60.0


def log(level: str, message: str) -> None:
    """One log line, written straight to fd 1 (the instance's log file)."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    os.write(1, f"{stamp} {level} {message}\n".encode("utf-8", "replace"))


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cpstream.agent", description=__doc__)
    parser.add_argument("--heartbeat", type=float, default=5.0, help="seconds between heartbeats")
    parser.add_argument("--crash-after", type=float, help="exit with status 3 after S seconds")
    parser.add_argument("--log-rate", type=float, default=0.0, help="extra log lines per second")
    parser.add_argument("--ignore-sigterm", action="store_true", help="ignore SIGTERM")
    parser.add_argument("--fork-child", action="store_true", help="leave a grandchild running")
    parser.add_argument("--no-health", action="store_true", help="never answer /health")
    parser.add_argument("--refuse-messages", action="store_true", help="fail every message")
    parser.add_argument("--no-receive", action="store_true", help="do not poll for messages")
    parser.add_argument("--send-to", help="send task.handoff messages to this instance")
    parser.add_argument("--send-every", type=float, default=3.0, help="seconds between sends")
    parser.add_argument("--report-to", help="send numbered report.summary messages to this one")
    parser.add_argument("--report-every", type=float, default=4.0, help="seconds between reports")
    parser.add_argument(
        "--flaky",
        metavar="PREFIX",
        help="messages whose type starts with PREFIX (numbered reports): fail every third"
        " for good and the next one once, acknowledge the rest",
    )
    parser.add_argument(
        "--burn-every", type=float, default=0.0, help="seconds between CPU bursts (0: none)"
    )
    parser.add_argument("--burn-for", type=float, default=5.0, help="seconds each burst lasts")
    parser.add_argument(
        "--burn-share", type=float, default=0.35, help="share of one core a burst uses"
    )
    parser.add_argument(
        "--grow-every", type=float, default=0.0, help="seconds between memory steps (0: none)"
    )
    parser.add_argument("--grow-by", type=int, default=256 * 1024, help="bytes per step")
    parser.add_argument(
        "--grow-cap", type=int, default=16 * 1024 * 1024, help="bytes held at most, then freed"
    )
    parser.add_argument(
        "--orphan-after",
        type=float,
        default=UNREACHABLE_EXIT,
        help="exit once the control plane has been unreachable this long (seconds)",
    )
    return parser.parse_args(argv)


class Agent:
    """The agent's behaviour, on an injected reactor."""

    def __init__(self, reactor: Any, options: argparse.Namespace, env: dict[str, str]) -> None:
        import treq
        from treq.client import HTTPClient
        from twisted.web.client import Agent as WebAgent
        from twisted.web.client import HTTPConnectionPool

        self._reactor = reactor
        self._options = options
        self.name = env.get("CPSTREAM_INSTANCE", "agent")
        self.port = int(env.get("CPSTREAM_PORT", "0"))
        self.cp_url = env.get("CPSTREAM_URL", "http://127.0.0.1:18800").rstrip("/")
        self._token = env.get("CPSTREAM_TOKEN", "")
        self._treq = treq
        pool = HTTPConnectionPool(reactor, persistent=True)
        self._http = HTTPClient(WebAgent(reactor, pool=pool, connectTimeout=5))
        self._last_contact = reactor.seconds()
        self._beats = 0
        self._sent = 0
        self._reports = 0
        self._lines = 0
        self._burn_until = 0.0
        self._burner: Any = None
        self._ballast: list[bytes] = []

    def start(self) -> None:
        from twisted.internet.task import LoopingCall

        log("INFO", f"agent {self.name} starting on port {self.port}, control plane {self.cp_url}")
        if not self._options.no_health:
            self._serve_health()
        self._every(self._options.heartbeat, self._heartbeat)
        self._every(min(5.0, self._options.orphan_after / 4), self._check_cp)
        if self._options.log_rate > 0:
            filler = LoopingCall(self._filler)
            filler.clock = self._reactor
            filler.start(1.0 / self._options.log_rate, now=False)
        if self._options.crash_after is not None:
            self._reactor.callLater(self._options.crash_after, self._crash)
        if self._options.ignore_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            log("INFO", "ignoring SIGTERM")
        if self._options.fork_child:
            child = subprocess.Popen(
                [sys.executable, "-c", "import time; time.sleep(3600)"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            log("INFO", f"grandchild pid {child.pid}")
        if not self._options.no_receive:
            self._reactor.callLater(0, self._receive)
        if self._options.send_to:
            self._every(self._options.send_every, self._send)
        if self._options.report_to:
            self._every(self._options.report_every, self._report)
        if self._options.burn_every > 0:
            self._reactor.callLater(min(3.0, self._options.burn_every), self._burn)
            self._every(self._options.burn_every, self._burn)
        if self._options.grow_every > 0:
            self._every(self._options.grow_every, self._grow)

    def _every(self, seconds: float, work: Any) -> None:
        from twisted.internet.task import LoopingCall

        def guarded() -> None:
            try:
                result = work()
                if hasattr(result, "addErrback"):
                    result.addErrback(lambda f: log("ERROR", f"{work.__name__}: {f.value!r}"))
            except Exception as e:
                log("ERROR", f"{work.__name__}: {e!r}")

        loop = LoopingCall(guarded)
        loop.clock = self._reactor
        loop.start(seconds, now=False)

    def _serve_health(self) -> None:
        from twisted.web.resource import Resource
        from twisted.web.server import Site

        agent = self

        class Health(Resource):
            isLeaf = True

            def render_GET(self, request: Any) -> bytes:  # noqa: N802 (Twisted API)
                request.setHeader(b"content-type", b"application/json")
                return json.dumps({"status": "ok", "instance": agent.name}).encode()

        root = Resource()
        root.putChild(b"health", Health())
        self._reactor.listenTCP(self.port, Site(root), interface="127.0.0.1")

    def _heartbeat(self) -> None:
        self._beats += 1
        log("INFO", f"heartbeat {self._beats} from {self.name}")

    def _filler(self) -> None:
        self._lines += 1
        log("DEBUG", f"{self.name} busy line {self._lines}")

    def _crash(self) -> None:
        log("ERROR", f"{self.name} crashing on purpose")
        os._exit(3)

    def _burn(self) -> None:
        """A CPU burst: ``--burn-share`` of each 10 ms spent spinning, for ``--burn-for`` s
        (in slices, so health checks and messages are still answered)."""
        from twisted.internet.task import LoopingCall

        self._burn_until = self._reactor.seconds() + self._options.burn_for
        log(
            "INFO",
            f"burning {self._options.burn_share:.0%} of a core for {self._options.burn_for:g}s",
        )
        if self._burner is None or not self._burner.running:
            self._burner = LoopingCall(self._burn_slice)
            self._burner.clock = self._reactor
            self._burner.start(0.01)

    def _burn_slice(self) -> None:
        if self._reactor.seconds() >= self._burn_until:
            self._burner.stop()
            return
        spin = time.perf_counter() + 0.01 * self._options.burn_share
        while time.perf_counter() < spin:
            pass

    def _grow(self) -> None:
        """Hold ``--grow-by`` more bytes (touched, so they count as resident); past
        ``--grow-cap`` let go of all of it and start over."""
        if len(self._ballast) * self._options.grow_by >= self._options.grow_cap:
            self._ballast.clear()
            log("INFO", "released the memory held")
            return
        self._ballast.append(b"\x01" * self._options.grow_by)
        held = len(self._ballast) * self._options.grow_by
        log("INFO", f"holding {held / 1024 / 1024:.2f} MiB more")

    def _request(self, method: str, path: str, body: Any = None, **kwargs: Any):
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": ["application/json"]} if data is not None else {}
        if self._token:
            headers["Authorization"] = [f"Bearer {self._token}"]
        return self._http.request(
            method, self.cp_url + path, data=data, headers=headers, reactor=self._reactor, **kwargs
        )

    def _contact(self, response: Any) -> Any:
        self._last_contact = self._reactor.seconds()
        return self._treq.json_content(response)

    def _check_cp(self) -> Any:
        silent = self._reactor.seconds() - self._last_contact
        if silent >= self._options.orphan_after:
            log("WARN", f"control plane unreachable for {silent:.0f}s; exiting")
            self._reactor.stop()
            return None
        d = self._request("GET", "/api/health", timeout=5)
        d.addCallback(self._contact)
        d.addErrback(lambda f: None)
        return d

    def _receive(self) -> None:
        """Long-poll for the next message; handle it; go again."""
        d = self._request("GET", f"/api/instances/{self.name}/messages/pending?wait=25", timeout=35)
        d.addCallback(self._contact)
        d.addCallback(self._handle)
        d.addErrback(self._receive_failed)

    def _handle(self, body: Any) -> None:
        if not isinstance(body, dict) or "message" not in body:
            log("WARN", f"cannot receive messages: {body!r}")
            self._reactor.callLater(5.0, self._receive)
            return
        message = body["message"]
        if message is None:
            self._reactor.callLater(0, self._receive)
            return
        log(
            "INFO",
            f"received {message['message_type']} {message['id']} from {message['from_instance']}"
            f" payload={json.dumps(message.get('payload'))}",
        )
        lease = {"lease_id": message.get("lease_id")}
        flaky = self._flaky(message)
        if flaky is not None:
            action = self._request(
                "POST", f"/api/messages/{message['id']}/fail", {**lease, "detail": flaky}
            )
        elif self._options.refuse_messages:
            action = self._request(
                "POST",
                f"/api/messages/{message['id']}/fail",
                {**lease, "detail": "refused by agent"},
            )
        else:
            action = self._request("POST", f"/api/messages/{message['id']}/acknowledge", lease)
        action.addCallback(self._contact)
        action.addErrback(lambda f: log("ERROR", f"acknowledge failed: {f.value!r}"))
        action.addBoth(lambda _: self._reactor.callLater(0, self._receive))

    def _flaky(self, message: dict[str, Any]) -> str | None:
        """Why a ``--flaky`` message fails this time, or ``None`` to acknowledge it."""
        prefix = self._options.flaky
        if not prefix or not str(message.get("message_type", "")).startswith(prefix):
            return None
        payload = message.get("payload")
        number = payload.get("report") if isinstance(payload, dict) else None
        if not isinstance(number, int):
            return None
        if number % 3 == 0:
            return f"report {number}: the data source is down (fails on purpose, every time)"
        if number % 3 == 1 and message.get("attempts") == 1:
            return f"report {number}: timed out (fails on purpose, once)"
        return None

    def _receive_failed(self, failure: Any) -> None:
        self._reactor.callLater(2.0, self._receive)

    def _send(self) -> Any:
        self._sent += 1
        body = {
            "from_instance": self.name,
            "to_instance": self._options.send_to,
            "message_type": "task.handoff",
            "payload": {"task": f"task-{self._sent}", "from": self.name},
            "correlation_id": f"{self.name}-{uuid.uuid4().hex[:8]}",
        }
        d = self._request("POST", "/api/messages", body, timeout=10)
        d.addCallback(self._contact)
        d.addCallback(
            lambda answer: log(
                "INFO",
                f"sent task-{self._sent} -> {self._options.send_to}: "
                f"{answer.get('id') or answer.get('error')}",
            )
        )
        return d

    def _report(self) -> Any:
        self._reports += 1
        body = {
            "from_instance": self.name,
            "to_instance": self._options.report_to,
            "message_type": "report.summary",
            "payload": {"report": self._reports},
        }
        d = self._request("POST", "/api/messages", body, timeout=10)
        d.addCallback(self._contact)
        return d


def main(argv: list[str] | None = None) -> None:
    options = parse(sys.argv[1:] if argv is None else argv)
    from twisted.internet import reactor

    agent = Agent(reactor, options, dict(os.environ))
    reactor.callWhenRunning(agent.start)
    reactor.run()
    log("INFO", f"agent {agent.name} stopped")


if __name__ == "__main__":
    main()
