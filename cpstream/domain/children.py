"""Child processes: spawn in their own session, signal the group, notice the exit.

Each child runs under ``setsid`` (so a stop signals its whole process group),
with stdout and stderr appended straight to its log file. A child spawned
here is reaped by Twisted; a child adopted from an earlier control plane is
not ours to reap, so its pid is polled until it is gone. Timers run on the
injected reactor. What an exit *means* (stopped, crashed) is the
supervisor's business, not this module's.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from cpstream.domain.instances import Instance
from cpstream.domain.logfiles import LogFiles

SETSID = shutil.which("setsid") or "/usr/bin/setsid"
ADOPTED_POLL = 0.1


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


def signal_group(pid: int, signum: int) -> None:
    """Signal the child's process group (or the child alone if it has no group yet)."""
    for send in (os.killpg, os.kill):
        try:
            send(pid, signum)
            return
        except ProcessLookupError:
            continue
        except PermissionError:
            return


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def exit_status(ended: Any) -> dict[str, int]:
    """``{"signal": N}`` for a child killed by a signal, else ``{"code": N}``."""
    signum = getattr(ended, "signal", None)
    if signum:
        return {"signal": int(signum)}
    return {"code": getattr(ended, "exitCode", None) or 0}


def exit_of(ended: Any) -> dict[str, Any]:
    """``{"signal": NAME}`` for a child killed by a signal, else ``{"code": N}`` (the
    ``exit`` of a ``status_changed`` frame)."""
    status = exit_status(ended)
    if "signal" in status:
        try:
            return {"signal": signal.Signals(status["signal"]).name}
        except ValueError:
            return {"signal": str(status["signal"])}
    return status


@dataclass(eq=False)
class Run:
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
    child: _Child | None = None

    @property
    def exit(self) -> dict[str, Any] | None:
        """How the child ended: ``{"code": N}`` or ``{"signal": "SIGKILL"}`` (``None``:
        unknown, for an adopted child that is not ours to reap)."""
        return self.child.exit if self.child is not None else None

    @property
    def exit_status(self) -> dict[str, int] | None:
        """How the child ended, numerically: ``{"code": N}`` or ``{"signal": N}``."""
        return self.child.status if self.child is not None else None

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
        self.exit: dict[str, Any] | None = None
        self.status: dict[str, int] | None = None

    def connectionMade(self) -> None:  # noqa: N802 (Twisted API)
        self.pid = self.transport.pid

    def processEnded(self, reason: Failure) -> None:  # noqa: N802 (Twisted API)
        self._exited = True
        self.exit = exit_of(reason.value)
        self.status = exit_status(reason.value)
        if self._ended is not None:
            self._ended()

    def when_ended(self, ended: Callable[[], None]) -> None:
        """Call ``ended`` on exit; at once if the child has exited already."""
        self._ended = ended
        if self._exited:
            ended()


class Children:
    """Spawns, adopts, signals and watches children; reports every exit to ``exited``."""

    log = Logger()

    def __init__(
        self, reactor: Any, logs: LogFiles, exited: Callable[[Run], None], grace: float
    ) -> None:
        self._reactor = reactor
        self._logs = logs
        self._exited = exited
        self.grace = grace

    def spawn(self, instance: Instance, cp_url: str, token: str) -> Run:
        """Start the instance's command with a freshly rotated log as its stdout and stderr;
        call :meth:`watch` once the run is recorded."""
        env = {
            **os.environ,
            **instance.env,
            "CPSTREAM_INSTANCE": instance.name,
            "CPSTREAM_INSTANCE_ID": instance.id,
            "CPSTREAM_PORT": str(instance.port),
            "CPSTREAM_URL": cp_url,
            "CPSTREAM_TOKEN": token,
        }
        log_fd = self._logs.open_for_child(instance)
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
        return Run(instance, child.pid, spawned_at=self._reactor.seconds(), child=child)

    def watch(self, run: Run) -> None:
        """Report the exit of a spawned child from now on (at once if it has exited already:
        Twisted can reap a child before ``spawnProcess`` returns)."""
        assert run.child is not None
        run.child.when_ended(lambda: self._exited(run))

    def adopt(self, instance: Instance) -> Run | None:
        """The run of a child an earlier control plane left, if its pid is still that child."""
        if instance.pid is None:
            return None
        if process_environ(instance.pid).get("CPSTREAM_INSTANCE_ID") != instance.id:
            return None
        return Run(instance, instance.pid, spawned_at=self._reactor.seconds(), adopted=True)

    def terminate(self, run: Run) -> None:
        """SIGTERM the group now and SIGKILL it after the grace period."""
        run.stopping = True
        run.cancel_timers()
        signal_group(run.pid, signal.SIGTERM)
        run.kill_timer = self._reactor.callLater(self.grace, self._kill, run)
        if run.adopted:
            run.timer = self._reactor.callLater(ADOPTED_POLL, self._watch_adopted, run)

    def sweep(self, run: Run) -> None:
        """SIGKILL whatever is left in an exited child's group."""
        signal_group(run.pid, signal.SIGKILL)

    def _kill(self, run: Run) -> None:
        run.kill_timer = None
        self.log.warn(
            "{name} pid={pid} ignored SIGTERM for {grace}s; sending SIGKILL",
            name=run.instance.name,
            pid=run.pid,
            grace=self.grace,
        )
        signal_group(run.pid, signal.SIGKILL)

    def _watch_adopted(self, run: Run) -> None:
        """Adopted children are not ours to reap: poll until the pid is gone."""
        run.timer = None
        if alive(run.pid):
            run.timer = self._reactor.callLater(ADOPTED_POLL, self._watch_adopted, run)
        else:
            self._exited(run)
