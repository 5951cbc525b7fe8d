"""Child processes of instances: spawn, watch, stop, restart, adopt.

Each child runs in its own session (so a stop signals its whole process
group), with stdout and stderr appended straight to its log file, so logging
does not depend on the control plane being alive. Status changes go through
the registry, which stores and publishes them. A control plane that stops
leaves its children running; the next one adopts them after checking
``/proc/PID/environ``. Timers run on the injected reactor.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from cpstream.events import isotime
from cpstream.logfiles import LogFiles
from cpstream.registry import LIVE, IllegalTransition, Instance, Registry

Probe = Callable[[int], "defer.Deferred[bool]"]

CRASH_WINDOW = 60.0
CRASH_LOOP_COUNT = 5
MAX_BACKOFF = 60.0
STABLE_AFTER = 60.0
SETSID = shutil.which("setsid") or "/usr/bin/setsid"


def default_command() -> list[str]:
    """The demo agent, run by the interpreter running the control plane."""
    return [sys.executable, "-m", "cpstream.agent"]


def process_environ(pid: int) -> dict[str, str]:
    """The environment a live process was started with (empty if unreadable)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def _signal_group(pid: int, signum: int) -> None:
    """Signal the child's process group (or the child alone if it has no group yet)."""
    for send in (os.killpg, os.kill):
        try:
            send(pid, signum)
            return
        except ProcessLookupError:
            continue
        except PermissionError:
            return


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(eq=False)
class _Run:
    """One live child (spawned here, or adopted from an earlier control plane)."""

    instance: Instance
    pid: int
    spawned_at: float
    adopted: bool = False
    stopping: bool = False
    timer: IDelayedCall | None = None
    kill_timer: IDelayedCall | None = None
    probing: bool = False
    waiters: list[defer.Deferred] = field(default_factory=list)

    def cancel_timers(self) -> None:
        for call in (self.timer, self.kill_timer):
            if call is not None and call.active():
                call.cancel()
        self.timer = self.kill_timer = None


class _Child(ProcessProtocol):
    """Only notices the exit: the child's output goes to its log file, not to us.

    Twisted reaps a child that is already gone while ``spawnProcess`` registers
    it, calling ``processEnded`` before ``spawnProcess`` returns (and clearing the
    transport's pid), so the pid is kept here and an early exit is remembered
    until :meth:`when_ended` is called.
    """

    def __init__(self) -> None:
        self.pid: int | None = None
        self._ended: Callable[[], None] | None = None
        self._exited = False

    def connectionMade(self) -> None:  # noqa: N802 (Twisted API)
        self.pid = self.transport.pid

    def processEnded(self, reason: Failure) -> None:  # noqa: N802 (Twisted API)
        self._exited = True
        if self._ended is not None:
            self._ended()

    def when_ended(self, ended: Callable[[], None]) -> None:
        """Call ``ended`` on exit; at once if the child has exited already."""
        self._ended = ended
        if self._exited:
            ended()


class Supervisor(Service):
    """Starts, stops and watches the children of all instances."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        registry: Registry,
        logs: LogFiles,
        probe: Probe,
        cp_url: str = "http://127.0.0.1:18800",
        grace: float = 5.0,
        interval: float = 1.0,
        start_timeout: float = 30.0,
    ) -> None:
        self._reactor = reactor
        self._registry = registry
        self._logs = logs
        self._probe = probe
        self.cp_url = cp_url
        self.grace = grace
        self._interval = interval
        self._start_timeout = start_timeout
        self._runs: dict[str, _Run] = {}
        self._restarts: dict[str, IDelayedCall] = {}
        self._crashes: dict[str, list[float]] = {}
        self._streak: dict[str, int] = {}
        self._loop = LoopingCall(self._tick)
        self._loop.clock = reactor

    # -- service -----------------------------------------------------------

    def startService(self) -> None:  # noqa: N802 (Twisted API)
        super().startService()
        self._adopt()
        self._loop.start(self._interval, now=False)

    def stopService(self) -> defer.Deferred:  # noqa: N802 (Twisted API)
        """Stop watching; children keep running and are adopted next time."""
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts.clear()
        for run in self._runs.values():
            run.cancel_timers()
        return defer.succeed(None)

    def pid_of(self, instance: Instance) -> int | None:
        run = self._runs.get(instance.id)
        return run.pid if run else None

    # -- operations ----------------------------------------------------------

    def start(self, instance: Instance) -> Instance:
        """Spawn the child of a stopped or crashed instance (operator start)."""
        if instance.archived:
            raise IllegalTransition(f"Instance '{instance.name}' is archived")
        if instance.status in LIVE:
            raise IllegalTransition(f"Instance '{instance.name}' is {instance.status}")
        self._cancel_restart(instance)
        self._crashes.pop(instance.id, None)
        self._streak.pop(instance.id, None)
        self._spawn(instance)
        return instance

    def stop(self, instance: Instance) -> defer.Deferred:
        """SIGTERM the process group, SIGKILL after the grace period; fires when stopped."""
        if instance.archived:
            raise IllegalTransition(f"Instance '{instance.name}' is archived")
        self._cancel_restart(instance)
        if instance.status in ("crashed", "crash_loop"):
            self._registry.set_status(instance, "stopped")
            return defer.succeed(instance)
        run = self._runs.get(instance.id)
        if run is None or run.stopping or instance.status not in LIVE:
            raise IllegalTransition(f"Instance '{instance.name}' is {instance.status}")
        run.stopping = True
        run.cancel_timers()
        self._registry.set_status(instance, "stopping", pid=run.pid)
        _signal_group(run.pid, signal.SIGTERM)
        run.kill_timer = self._reactor.callLater(self.grace, self._kill, run)
        if run.adopted:
            run.timer = self._reactor.callLater(0.1, self._watch_adopted, run)
        done: defer.Deferred = defer.Deferred()
        run.waiters.append(done)
        return done

    def restart(self, instance: Instance) -> defer.Deferred:
        """Stop (when live) then start; both transitions are published."""
        if instance.archived:
            raise IllegalTransition(f"Instance '{instance.name}' is archived")
        if instance.status == "stopping":
            raise IllegalTransition(f"Instance '{instance.name}' is stopping")
        if instance.status in LIVE:
            return self.stop(instance).addCallback(self.start)
        return defer.succeed(self.start(instance))

    def archive(self, instance: Instance) -> defer.Deferred:
        """Stop the instance if it is live, then archive it."""
        if instance.archived:
            raise IllegalTransition(f"Instance '{instance.name}' is already archived")
        if instance.status == "stopping":
            raise IllegalTransition(f"Instance '{instance.name}' is stopping")
        self._cancel_restart(instance)
        stopped = self.stop(instance) if instance.status in LIVE else defer.succeed(instance)
        return stopped.addCallback(lambda _: self._registry.archive(instance) or instance)

    # -- spawning and exits ----------------------------------------------------

    def _spawn(self, instance: Instance) -> None:
        env = {
            **os.environ,
            **instance.env,
            "CPSTREAM_INSTANCE": instance.name,
            "CPSTREAM_INSTANCE_ID": instance.id,
            "CPSTREAM_PORT": str(instance.port),
            "CPSTREAM_URL": self.cp_url,
        }
        log_fd = self._logs.open_for_child(instance.name)
        null_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        child = _Child()
        try:
            self._reactor.spawnProcess(
                child,
                SETSID,
                [SETSID, *instance.command],
                env=env,
                childFDs={0: null_fd, 1: log_fd, 2: log_fd},
            )
        finally:
            os.close(log_fd)
            os.close(null_fd)
        now = self._reactor.seconds()
        run = _Run(instance, child.pid, spawned_at=now)
        self._runs[instance.id] = run
        self.log.info("started {name} pid={pid}", name=instance.name, pid=run.pid)
        self._registry.set_status(instance, "starting", pid=run.pid, started_at=isotime(now))
        if instance.health == "process":
            run.timer = self._reactor.callLater(1.0, self._survived, run)
        else:
            run.timer = self._reactor.callLater(0.1, self._probe_starting, run)
        child.when_ended(lambda: self._ended(run))

    def _survived(self, run: _Run) -> None:
        run.timer = None
        if self._runs.get(run.instance.id) is run and run.instance.status == "starting":
            self._registry.set_status(run.instance, "running", pid=run.pid)

    def _probe_starting(self, run: _Run) -> None:
        run.timer = None

        def answered(healthy: bool) -> None:
            if self._runs.get(run.instance.id) is not run or run.instance.status != "starting":
                return
            if healthy:
                self._registry.set_status(run.instance, "running", pid=run.pid)
            elif self._reactor.seconds() - run.spawned_at >= self._start_timeout:
                self._registry.set_status(run.instance, "unhealthy", pid=run.pid)
            else:
                run.timer = self._reactor.callLater(0.2, self._probe_starting, run)

        self._check_health(run.instance.port).addCallback(answered).addErrback(self._logged)

    def _ended(self, run: _Run) -> None:
        """The child exited: stopped if we asked for it, crashed otherwise.

        After the supervisor stopped (the control plane is shutting down and the
        store may be closed) nothing is recorded: the next control plane finds
        the pid gone and settles the status then.
        """
        if not self.running:
            return
        instance = run.instance
        run.cancel_timers()
        if self._runs.get(instance.id) is run:
            del self._runs[instance.id]
        _signal_group(run.pid, signal.SIGKILL)  # sweep anything left in its group
        self.log.info(
            "{name} pid={pid} exited ({how})",
            name=instance.name,
            pid=run.pid,
            how="stopped" if run.stopping else "unexpectedly",
        )
        if run.stopping:
            self._registry.set_status(instance, "stopped")
            waiters, run.waiters = run.waiters, []
            for waiter in waiters:
                waiter.callback(instance)
        else:
            self._crashed(instance, run.spawned_at)

    def _crashed(self, instance: Instance, spawned_at: float) -> None:
        now = self._reactor.seconds()
        if instance.restart != "on-failure":
            self._registry.set_status(instance, "crashed")
            return
        recent = [t for t in self._crashes.get(instance.id, []) if now - t < CRASH_WINDOW]
        recent.append(now)
        self._crashes[instance.id] = recent
        if len(recent) >= CRASH_LOOP_COUNT:
            self.log.warn("{name} is crash-looping; not restarting", name=instance.name)
            self._registry.set_status(instance, "crash_loop")
            return
        streak = 1 if now - spawned_at >= STABLE_AFTER else self._streak.get(instance.id, 0) + 1
        self._streak[instance.id] = streak
        self._registry.set_status(instance, "crashed")
        delay = min(MAX_BACKOFF, 2.0 ** (streak - 1))
        self._restarts[instance.id] = self._reactor.callLater(delay, self._auto_restart, instance)

    def _auto_restart(self, instance: Instance) -> None:
        self._restarts.pop(instance.id, None)
        if instance.status == "crashed" and not instance.archived:
            self._spawn(instance)

    def _cancel_restart(self, instance: Instance) -> None:
        call = self._restarts.pop(instance.id, None)
        if call is not None and call.active():
            call.cancel()

    def _kill(self, run: _Run) -> None:
        run.kill_timer = None
        self.log.warn(
            "{name} pid={pid} ignored SIGTERM for {grace}s; sending SIGKILL",
            name=run.instance.name,
            pid=run.pid,
            grace=self.grace,
        )
        _signal_group(run.pid, signal.SIGKILL)

    def _watch_adopted(self, run: _Run) -> None:
        """Adopted children are not ours to reap: poll until the pid is gone."""
        run.timer = None
        if _alive(run.pid):
            run.timer = self._reactor.callLater(0.1, self._watch_adopted, run)
        else:
            self._ended(run)

    # -- adoption and the health loop ------------------------------------------

    def _adopt(self) -> None:
        """Take over children a previous control plane left running; clear stale pids."""
        now = self._reactor.seconds()
        for instance in self._registry.active():
            if instance.pid is None:
                if instance.status in LIVE:
                    self._registry.set_status(instance, "stopped")
                continue
            env = process_environ(instance.pid)
            if env.get("CPSTREAM_INSTANCE_ID") != instance.id:
                self.log.info(
                    "{name}: pid {pid} is gone; clearing it", name=instance.name, pid=instance.pid
                )
                if instance.status == "stopping":
                    self._registry.set_status(instance, "stopped")
                else:
                    self._crashed(instance, now)
                continue
            run = _Run(instance, instance.pid, spawned_at=now, adopted=True)
            self._runs[instance.id] = run
            self.log.info("adopted {name} pid={pid}", name=instance.name, pid=run.pid)
            if instance.status == "stopping":
                self.stop(instance)
            elif instance.status != "running":
                self._registry.set_status(instance, "running", pid=run.pid)

    def _tick(self) -> None:
        """One pass of the health loop; its own errors are logged, never fatal."""
        try:
            for run in list(self._runs.values()):
                self._check(run)
        except Exception:
            self.log.failure("health loop pass failed")

    def _check(self, run: _Run) -> None:
        instance = run.instance
        if run.stopping:
            return
        if run.adopted and not _alive(run.pid):
            self._ended(run)
            return
        if self._logs.cap(instance.name):
            self.log.info("{name}: log passed its size cap; rotated", name=instance.name)
        if instance.health == "process":
            return
        if instance.status in ("running", "unhealthy") and not run.probing:
            run.probing = True

            def answered(healthy: bool) -> None:
                run.probing = False
                if self._runs.get(instance.id) is not run or run.stopping:
                    return
                if instance.status in ("running", "unhealthy"):
                    status = "running" if healthy else "unhealthy"
                    self._registry.set_status(instance, status, pid=run.pid)

            self._check_health(instance.port).addCallback(answered).addErrback(self._logged)

    def _check_health(self, port: int) -> defer.Deferred:
        """The probe's verdict; a probe that fails outright counts as unhealthy."""
        return defer.maybeDeferred(self._probe, port).addErrback(self._unhealthy)

    def _unhealthy(self, failure: Failure) -> bool:
        self.log.failure("health probe failed", failure)
        return False

    def _logged(self, failure: Failure) -> None:
        self.log.failure("supervisor callback failed", failure)
