"""The lifecycle of instances: start, stop, restart, archive, health, crashes, adoption.

Status changes go through the registry, which stores and publishes them; the
processes themselves are :mod:`cpstream.domain.children`'s. A control plane
that stops leaves its children running; the next one adopts them after
checking ``/proc/PID/environ``. Timers run on the injected reactor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from cpstream.domain.children import Children, Run, alive
from cpstream.domain.frames import isotime
from cpstream.domain.instances import LIVE, IllegalTransition, Instance
from cpstream.domain.logfiles import LogFiles
from cpstream.domain.registry import Registry
from cpstream.domain.restarts import RestartPolicy

Probe = Callable[[int], "defer.Deferred[bool]"]
RESTART_AFTER_ADOPTION = 1.0


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
        self._children = Children(reactor, logs, self._ended, grace)
        self.cp_url = cp_url
        self._interval = interval
        self._start_timeout = start_timeout
        self._runs: dict[str, Run] = {}
        self._restarts: dict[str, IDelayedCall] = {}
        self._policy = RestartPolicy()
        self._loop = LoopingCall(self._tick)
        self._loop.clock = reactor
        self.crash_loops = 0  # crash loops entered since this control plane started (/metrics)

    @property
    def grace(self) -> float:
        return self._children.grace

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
        self._policy.forget(instance.id)
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
        self._registry.set_status(instance, "stopping", pid=run.pid)
        self._children.terminate(run)
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

    def delete(self, instance: Instance) -> None:
        """Delete an archived instance for good, its logs with it."""
        self._registry.delete(instance)
        self._logs.remove(instance)

    # -- spawning and exits ----------------------------------------------------

    def _spawn(self, instance: Instance) -> None:
        run = self._children.spawn(instance, self.cp_url, self._registry.issue_token(instance))
        self._runs[instance.id] = run
        self.log.info("started {name} pid={pid}", name=instance.name, pid=run.pid)
        self._registry.set_status(
            instance, "starting", pid=run.pid, started_at=isotime(run.spawned_at), spawned=True
        )
        if instance.health == "process":
            run.timer = self._reactor.callLater(1.0, self._survived, run)
        else:
            run.timer = self._reactor.callLater(0.1, self._probe_starting, run)
        self._children.watch(run)

    def _survived(self, run: Run) -> None:
        run.timer = None
        if self._runs.get(run.instance.id) is run and run.instance.status == "starting":
            self._registry.set_status(run.instance, "running", pid=run.pid)

    def _probe_starting(self, run: Run) -> None:
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

    def _ended(self, run: Run) -> None:
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
        self._children.sweep(run)
        self.log.info(
            "{name} pid={pid} exited ({how})",
            name=instance.name,
            pid=run.pid,
            how="stopped" if run.stopping else "unexpectedly",
        )
        if run.stopping:
            self._registry.set_status(instance, "stopped", exit=run.exit, last_exit=run.exit_status)
            waiters, run.waiters = run.waiters, []
            for waiter in waiters:
                waiter.callback(instance)
        else:
            self._crashed(instance, run.spawned_at, run)

    def _crashed(self, instance: Instance, spawned_at: float, run: Run | None = None) -> None:
        """The child ended unexpectedly (``run``: how, when it was ours to reap)."""
        ended = {
            "exit": run.exit if run is not None else None,
            "last_exit": run.exit_status if run is not None else None,
        }
        if instance.restart != "on-failure":
            self._registry.set_status(instance, "crashed", **ended)
            return
        delay = self._policy.crashed(instance.id, self._reactor.seconds(), spawned_at)
        if delay is None:
            self.log.warn("{name} is crash-looping; not restarting", name=instance.name)
            self.crash_loops += 1
            self._registry.set_status(instance, "crash_loop", **ended)
            return
        self._registry.set_status(instance, "crashed", **ended)
        self._schedule_restart(instance, delay)

    def _schedule_restart(self, instance: Instance, delay: float) -> None:
        self._restarts[instance.id] = self._reactor.callLater(delay, self._auto_restart, instance)

    def _auto_restart(self, instance: Instance) -> None:
        self._restarts.pop(instance.id, None)
        if instance.status == "crashed" and not instance.archived:
            self._spawn(instance)

    def _cancel_restart(self, instance: Instance) -> None:
        call = self._restarts.pop(instance.id, None)
        if call is not None and call.active():
            call.cancel()

    # -- adoption and the health loop ------------------------------------------

    def _adopt(self) -> None:
        """Take over children a previous control plane left running; clear stale pids."""
        now = self._reactor.seconds()
        for instance in self._registry.active():
            if instance.pid is None:
                if instance.status in LIVE:
                    self._registry.set_status(instance, "stopped")
                elif instance.status == "crashed" and instance.restart == "on-failure":
                    # It was waiting out its backoff when the last control plane stopped.
                    self._schedule_restart(instance, RESTART_AFTER_ADOPTION)
                continue
            run = self._children.adopt(instance)
            if run is None:
                self.log.info(
                    "{name}: pid {pid} is gone; clearing it", name=instance.name, pid=instance.pid
                )
                if instance.status == "stopping":
                    self._registry.set_status(instance, "stopped", last_exit=None)
                else:
                    self._crashed(instance, now)
                continue
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

    def _check(self, run: Run) -> None:
        instance = run.instance
        if run.stopping:
            return
        if run.adopted and not alive(run.pid):
            self._ended(run)
            return
        if self._logs.cap(instance):
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
