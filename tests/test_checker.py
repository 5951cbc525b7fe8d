"""The stream-integrity checker: a model-based, randomized run against a real daemon.

Hypothesis drives a state machine that interleaves lifecycle calls, crashes,
message bursts (sends, leases, acknowledgements, failures, expiries), log writes
with partial lines, rename rotations (restarts) and size-cap truncations, a daemon
restart, and clients that read, pause, stall past their queue, disconnect and
resume. Whenever the system is quiet the oracles of :mod:`tests.checker` compare
every client's view with the truth. A failure prints the steps (and Hypothesis'
reproduction blob) to replay it.

``make test`` runs a bounded version (well under 90 s); ``make soak`` (with
``CPSTREAM_SOAK=1``) runs it long and writes its figures to the artifacts.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from tests.checker import Checker, run
from tests.support import ARTIFACTS, kill_processes_with, sleep

SOAK = os.environ.get("CPSTREAM_SOAK") == "1"
NAMES = st.sampled_from(["a", "b", "c"])
TOTALS = {"runs": 0, "events": 0, "resyncs": 0, "resumes": 0, "gaps": 0, "lines": 0, "usage": 0}
SCALED = {**TOTALS, "kills": 0, "redis_restarts": 0, "stalls": 0, "moves": 0}
# A real daemon is not deterministic enough to shrink against: a failure is reported with
# the steps that found it (and the blob that replays those steps).
RUN_AS_FOUND = {
    "deadline": None,
    "print_blob": True,
    "suppress_health_check": list(HealthCheck),
    "phases": [Phase.explicit, Phase.reuse, Phase.generate],
}


class StreamIntegrity(RuleBasedStateMachine):
    """Operators, agents and viewers doing their worst; the views must stay the truth."""

    totals = TOTALS

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="cpstream-checker-"))
        self.checker = self.make_checker()
        run(self.checker.start())
        self.steps = 0

    def make_checker(self) -> Checker:
        return Checker(self.folder / "data")

    @initialize()
    def seed_world(self) -> None:
        """Three instances running SLEEPER, a route between each pair (short-lived types
        too), and five clients: instances, messages, messages of ``a``, the logs of a and b."""

        async def seed() -> None:
            for name in ("a", "b", "c"):
                await self.checker.create(name)
                await self.checker.call("POST", f"/instances/{name}/start")
            for source in ("a", "b", "c"):
                for target in ("a", "b", "c"):
                    rule_body = {"from_instance": source, "to_instance": target}
                    await self.checker.call(
                        "POST", "/routing-rules", {**rule_body, "type_pattern": "task.*"}
                    )
                    await self.checker.call(
                        "POST",
                        "/routing-rules",
                        {**rule_body, "type_pattern": "brief.*", "ttl_secs": 1},
                    )
            await self.checker.connect("instances")
            await self.checker.connect("messages")
            await self.checker.connect("messages", "instance=a", {"instance": "a"})
            for name in ("a", "b"):
                await self.checker.connect(f"/ws/instances/{name}/logs", "backlog=1000")

        run(seed())

    # -- viewers ---------------------------------------------------------------------

    @precondition(lambda self: len(self.checker.views) < 12)
    @rule(
        kind=st.sampled_from(["instances", "messages", "logs"]),
        name=NAMES,
        filtered=st.booleans(),
    )
    def open_view(self, kind: str, name: str, filtered: bool) -> None:
        """A new client: instances, messages (maybe filtered by an instance), or a log."""
        if kind == "logs":
            run(self.checker.connect(f"/ws/instances/{name}/logs", "backlog=1000"))
        elif kind == "messages" and filtered:
            run(self.checker.connect("messages", f"instance={name}", {"instance": name}))
        else:
            run(self.checker.connect(kind))

    def _view(self, which: int):
        views = self.checker.views
        return views[which % len(views)] if views else None

    @rule(which=st.integers(0, 100))
    def pause(self, which: int) -> None:
        """A client stops reading (its kernel buffers fill; the server pauses, then lags)."""
        view = self._view(which)
        if view is not None and not view.paused:
            self.checker.pause(view)

    @rule(which=st.integers(0, 100))
    def unpause(self, which: int) -> None:
        """A paused client reads again."""
        view = self._view(which)
        if view is not None and view.paused:
            self.checker.unpause(view)

    @rule(which=st.integers(0, 100))
    def resume(self, which: int) -> None:
        """A client drops its connection and resumes where it left off."""
        view = self._view(which)
        if view is not None:
            run(self.checker.reconnect(view))

    # -- operators and agents ----------------------------------------------------------

    @rule(name=NAMES, action=st.sampled_from(["start", "stop", "restart"]))
    def lifecycle(self, name: str, action: str) -> None:
        """start, stop or restart (a restart rotates the log by rename)."""
        run(self.checker.call("POST", f"/instances/{name}/{action}"))

    @rule(name=NAMES)
    def archive_and_back(self, name: str) -> None:
        """Archive an instance, then unarchive it and start it again."""

        async def cycle() -> None:
            await self.checker.call("POST", f"/instances/{name}/archive")
            await self.checker.call("POST", f"/instances/{name}/unarchive")
            await self.checker.call("POST", f"/instances/{name}/start")

        run(cycle())

    @rule(name=NAMES)
    def crash(self, name: str) -> None:
        """The child dies (SIGKILL); the supervisor restarts it after a backoff."""
        self.checker.crash(name)

    @rule(
        source=NAMES,
        recipient=NAMES,
        count=st.integers(1, 40),
        brief=st.booleans(),
    )
    def send_burst(self, source: str, recipient: str, count: int, brief: bool) -> None:
        """A burst of messages; brief ones expire (two events each) in one sweep."""
        kind = "brief.x" if brief else "task.x"
        body = {"from_instance": source, "to_instance": recipient, "message_type": kind}

        async def burst() -> None:
            for _ in range(count):
                await self.checker.call("POST", "/messages", {**body, "payload": {"n": count}})

        run(burst())

    @precondition(lambda self: self.stalls < 2)
    @rule(which=st.integers(0, 100), source=NAMES, recipient=NAMES)
    def stall(self, which: int, source: str, recipient: str) -> None:
        """A client stops reading while 300 brief messages expire together (900 events,
        600 of them in one sweep): far past its queue, and past any reader's window."""
        self.stalls += 1
        view = self._view(which)
        if view is not None and not view.paused:
            self.checker.pause(view)
        body = {"from_instance": source, "to_instance": recipient, "message_type": "brief.y"}

        async def flood() -> None:
            for _ in range(300):
                await self.checker.call("POST", "/messages", body)
            await sleep(2.5)

        run(flood())

    stalls = 0

    @rule(name=NAMES, count=st.integers(1, 10), outcome=st.sampled_from(["ack", "fail"]))
    def receive(self, name: str, count: int, outcome: str) -> None:
        """An agent leases messages and acknowledges or fails them."""

        async def take() -> None:
            for _ in range(count):
                code, answer = await self.checker.call(
                    "GET", f"/instances/{name}/messages/pending?wait=0"
                )
                message = answer.get("message") if code == 200 else None
                if message is None:
                    return
                verb = "acknowledge" if outcome == "ack" else "fail"
                lease = {"lease_id": message["lease_id"]}
                await self.checker.call("POST", f"/messages/{message['id']}/{verb}", lease)

        run(take())

    @rule(name=NAMES, count=st.integers(1, 400), split=st.booleans())
    def write_log(self, name: str, count: int, split: bool) -> None:
        """Lines appended to a log, maybe ending with a partial line (past the 20 KB cap
        while the instance runs, the supervisor copies and truncates it)."""
        self.checker.write_lines(name, count, split)

    @precondition(lambda self: not self.restarted)
    @rule()
    def restart_daemon(self) -> None:
        """The control plane restarts (its children keep running and are adopted); every
        client resumes on the new one."""
        self.restarted = True
        run(self.checker.restart())
        run(self.checker.reconnect_all())

    restarted = False

    @rule()
    def quiet_and_check(self) -> None:
        """Let the system go quiet, then compare every view with the truth."""
        run(self._check())

    async def _check(self) -> None:
        await self.checker.settle()
        await self.checker.check()

    @invariant()
    def bounded(self) -> None:
        """(Bookkeeping) count steps; the daemon is alive."""
        self.steps += 1
        assert self.checker.daemon._protocol is not None

    def teardown(self) -> None:
        try:
            run(self._check())
        finally:
            print(f"run: {self.steps} steps, {len(self.checker.views)} views, {self.checker.stats}")
            for key, value in self.checker.stats.items():
                self.totals[key] += value
            self.totals["runs"] += 1
            url = self.checker.url
            run(self.checker.stop())
            kill_processes_with("CPSTREAM_URL", url)
            self.cleanup()

    def cleanup(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


StreamIntegrity.TestCase.settings = settings(
    max_examples=40 if SOAK else 3, stateful_step_count=120 if SOAK else 25, **RUN_AS_FOUND
)
TestStreamIntegrity = StreamIntegrity.TestCase


class StreamIntegrityAcrossGateways(StreamIntegrity):
    """The same world with two gateways on a real Redis: clients on any of the three
    servers, moving between them; gateways killed with kill -9, Redis restarted with and
    without its data and frozen. Nothing may be lost silently."""

    totals = SCALED

    def make_checker(self) -> Checker:
        from tests.redis import RedisServer, require_binary

        self.redis = RedisServer(require_binary(), persist=True).start()
        return Checker(self.folder / "data", redis=self.redis, gateways=2)

    def cleanup(self) -> None:
        self.redis.close()
        super().cleanup()

    @precondition(lambda self: len(self.checker.views) < 12)
    @rule(
        kind=st.sampled_from(["instances", "messages", "logs"]),
        name=NAMES,
        filtered=st.booleans(),
        via=st.integers(0, 2),
    )
    def open_view(self, kind: str, name: str, filtered: bool, via: int) -> None:
        """A new client on the control plane or a gateway."""
        if kind == "logs":
            run(self.checker.connect(f"/ws/instances/{name}/logs", "backlog=1000", via=via))
        elif kind == "messages" and filtered:
            run(self.checker.connect("messages", f"instance={name}", {"instance": name}, via))
        else:
            run(self.checker.connect(kind, via=via))

    @rule(which=st.integers(0, 100), via=st.integers(0, 2))
    def move(self, which: int, via: int) -> None:
        """A client drops its connection and resumes on another server."""
        view = self._view(which)
        if view is not None:
            self.checker.stats["moves"] += 1
            run(self.checker.reconnect(view, via=via))

    @precondition(lambda self: self.kills < 2)
    @rule(index=st.integers(0, 1))
    def kill_gateway(self, index: int) -> None:
        """kill -9 a gateway; its clients resume elsewhere; it comes back."""
        self.kills += 1
        run(self.checker.kill_gateway(index))

    kills = 0

    @precondition(lambda self: self.redis_restarts < 2)
    @rule(keep_data=st.booleans())
    def restart_redis(self, keep_data: bool) -> None:
        """Redis restarts, with its data or empty."""
        self.redis_restarts += 1
        run(self.checker.restart_redis(keep_data))

    redis_restarts = 0

    @precondition(lambda self: self.redis_stalls < 1)
    @rule()
    def stall_redis(self) -> None:
        """Redis freezes for 3 s (past the clients' 2 s reply timeout)."""
        self.redis_stalls += 1
        run(self.checker.stall_redis(3.0))

    redis_stalls = 0


StreamIntegrityAcrossGateways.TestCase.settings = settings(
    max_examples=20 if SOAK else 2, stateful_step_count=100 if SOAK else 25, **RUN_AS_FOUND
)
TestStreamIntegrityAcrossGateways = StreamIntegrityAcrossGateways.TestCase


def test_zz_checker_figures() -> None:
    """(Report) the checker's figures: events checked, resyncs, resumes, gaps, lines, usage
    frames."""
    print(f"stream-integrity checker: {json.dumps(TOTALS)}")
    print(f"stream-integrity checker, two gateways on Redis: {json.dumps(SCALED)}")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "checker.json").write_text(json.dumps(TOTALS, indent=2))
    (ARTIFACTS / "checker-gateways.json").write_text(json.dumps(SCALED, indent=2))
