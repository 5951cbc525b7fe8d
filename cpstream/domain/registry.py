"""The instance table: the one place an instance changes.

Every change is one transaction that writes the instance's row and appends
one row to ``instance_events`` (its id is the event's ``seq``), then publishes
that event to the hub, so REST, the supervisor and the demo all produce the
same frames, nothing changes without being published, and the history can be
replayed (:class:`~cpstream.domain.history.History`). Lookups and snapshots
are served from memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from twisted.internet.interfaces import IReactorTime

from cpstream.domain import frames
from cpstream.domain.errors import Conflict
from cpstream.domain.frames import Frame, isotime
from cpstream.domain.history import History
from cpstream.domain.hub import Hub
from cpstream.domain.ids import new_id
from cpstream.domain.instances import (
    AUTO_PORTS,
    LIVE,
    STATUSES,
    IllegalTransition,
    Instance,
    UnknownInstance,
    check_name,
    check_spec,
)
from cpstream.domain.store import Store
from cpstream.domain.tables import DuplicateKey
from cpstream.domain.tokens import hash_token, new_token

UNCHANGED: Any = object()


class Registry:
    """In-memory instance table backed by the store; publishes every change."""

    def __init__(
        self, store: Store, hub: Hub, clock: IReactorTime, default_command: list[str]
    ) -> None:
        self._store = store
        self._rows = store.instances
        self._events = store.instance_events
        self._hub = hub
        self._clock = clock
        self._default_command = default_command
        self._by_id: dict[str, Instance] = {row["id"]: Instance(**row) for row in self._rows.load()}
        self._by_token = {i.token_hash: i for i in self._by_id.values() if i.token_hash}
        self._active = {i.name: i for i in self._by_id.values() if not i.archived}
        self.history = History(
            store.meta.get("epoch"),
            hub,
            self._missed,
            lambda: int(store.meta.get("pruned:instance_events")),
        )

    def _missed(self, since: int, limit: int) -> list[Frame]:
        return [frames.instance_event(row) for row in self._events.after(since, limit)]

    def _now(self) -> str:
        return isotime(self._clock.seconds())

    @contextmanager
    def _changing(self, now: str | None = None) -> Iterator[Callable[[Frame], None]]:
        """One transaction for a change: the block writes the instance's row and records
        its event (stamped ``now``); the event is published once the transaction is committed."""
        recorded: list[Frame] = []
        now = now or self._now()

        def record(frame: Frame) -> None:
            data = {k: v for k, v in frame.items() if k not in ("type", "name", "id")}
            seq = self._events.append(frame["id"], frame["name"], frame["type"], data, now)
            recorded.append(frames.stamped(frame, seq, now))

        with self._store.transaction():
            yield record
            self._store.on_commit(lambda: [self._hub.publish(event) for event in recorded])

    def events(self, instance: Instance, limit: int, before: int | None = None) -> list[Frame]:
        """The instance's lifecycle history, newest first, as its stream frames."""
        rows = self._events.of_instance(instance.id, limit, before)
        return [frames.instance_event(row) for row in rows]

    # -- lookups -----------------------------------------------------------

    def active(self) -> list[Instance]:
        """Instances that are not archived, oldest first."""
        return [i for i in self._by_id.values() if not i.archived]

    def all(self, include_archived: bool = False) -> list[Instance]:
        """Instances in creation order, archived ones only when asked."""
        return [i for i in self._by_id.values() if include_archived or not i.archived]

    def find(self, name: str) -> Instance | None:
        """The active instance of that name, or ``None`` (a dict lookup: every request asks)."""
        instance = self._active.get(name)
        return instance if instance is not None and not instance.archived else None

    def get(self, name: str, archived_fallback: bool = True) -> Instance:
        """The active instance of that name, else its most recently archived one."""
        instance = self.find(name)
        if instance is None and archived_fallback:
            archived = [i for i in self._by_id.values() if i.name == name and i.archived]
            if archived:
                instance = max(archived, key=lambda i: i.archived_at or "")
        if instance is None:
            raise UnknownInstance(f"No instance named '{name}'")
        return instance

    def get_archived(self, name: str) -> Instance:
        """The most recently archived instance of that name, even if the name is active again.

        Archived and active instances may share a name; operations meant for
        archived ones (unarchive, delete) must find the archived one.
        """
        archived = [i for i in self._by_id.values() if i.name == name and i.archived]
        if archived:
            return max(archived, key=lambda i: i.archived_at or "")
        if self.find(name) is not None:
            raise IllegalTransition(f"Instance '{name}' is not archived")
        raise UnknownInstance(f"No instance named '{name}'")

    def by_id(self, instance_id: str) -> Instance | None:
        """The instance with that id (archived ones included), or ``None`` once deleted."""
        return self._by_id.get(instance_id)

    def by_token(self, token: str) -> Instance | None:
        """The instance an agent token belongs to (an active one), or ``None``."""
        instance = self._by_token.get(hash_token(token))
        return instance if instance is not None and not instance.archived else None

    def snapshot(self, include_archived: bool) -> dict[str, Any]:
        """A ``/ws/instances`` snapshot frame, current to the hub's ``seq``."""
        return frames.instances_snapshot(
            self.all(include_archived), include_archived, self._hub.seq, self.history.epoch
        )

    def mirrored(self, instance_id: str) -> Frame | None:
        """One instance as a gateway's mirror keeps it: its snapshot item and its place in
        creation order; ``None`` once deleted."""
        instance = self._by_id.get(instance_id)
        if instance is None:
            return None
        return {"order": instance.created_at, "item": frames.instance_in_snapshot(instance)}

    def ids(self) -> list[str]:
        """Every instance's id (archived ones too), in creation order."""
        return list(self._by_id)

    # -- changes -----------------------------------------------------------

    def create(
        self,
        name: str,
        port: int | None = None,
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
        health: str = "http",
        restart: str = "on-failure",
        cloned_from: str | None = None,
    ) -> Instance:
        """Create a stopped instance and publish ``instance_created``."""
        check_name(name)
        if self.find(name) is not None:
            raise _taken("name", name)
        if port is None:
            port = self._free_port()
        command = self._default_command if command is None else command
        env = {} if env is None else env
        check_spec(port, command, env, health, restart)
        instance = Instance(
            id=new_id(),
            name=name,
            port=port,
            command=list(command),
            env=dict(env),
            health=health,
            restart=restart,
            status="stopped",
            pid=None,
            created_at=self._now(),
        )
        try:
            with self._changing() as record:
                self._rows.insert(instance.to_record())
                record(frames.instance_created(instance, cloned_from))
        except DuplicateKey as e:
            raise _taken(e.field, getattr(instance, e.field)) from None
        self._by_id[instance.id] = instance
        self._active[instance.name] = instance
        return instance

    def clone(self, source: Instance, name: str, port: int | None = None) -> Instance:
        """A new instance with the source's command, env, health and restart policy."""
        return self.create(
            name,
            port=port,
            command=source.command,
            env=source.env,
            health=source.health,
            restart=source.restart,
            cloned_from=source.name,
        )

    def issue_token(self, instance: Instance) -> str:
        """A new agent token for ``instance`` (stored hashed); its previous one stops working."""
        token = new_token()
        digest = hash_token(token)
        self._rows.update(instance.id, token_hash=digest)
        self._forget_token(instance)
        instance.token_hash = digest
        self._by_token[digest] = instance
        return token

    def _forget_token(self, instance: Instance) -> None:
        if instance.token_hash is not None:
            self._by_token.pop(instance.token_hash, None)
        instance.token_hash = None

    def set_status(
        self,
        instance: Instance,
        status: str,
        pid: int | None = None,
        started_at: str | None = None,
        exit: dict[str, Any] | None = None,
        spawned: bool = False,
        last_exit: dict[str, int] | None = UNCHANGED,
    ) -> None:
        """Record a status (and pid) change and publish ``status_changed`` (with the
        child's ``exit`` reason when the change is its exit).

        ``spawned``: the change is a new child's start (one more start, a restart after
        the first). ``last_exit``: the change is the child's end, ``{"code"|"signal": N}``,
        or ``None`` when how it ended is unknown (an adopted child is not ours to reap).
        """
        assert status in STATUSES, status
        if status not in LIVE:
            pid, started_at = None, None
        elif started_at is None:
            started_at = instance.started_at
        now = self._now()
        fields = {"status": status, "pid": pid, "started_at": started_at}
        if spawned:
            fields["starts"] = instance.starts + 1
        if last_exit is not UNCHANGED:
            fields["last_exit"] = None if last_exit is None else {**last_exit, "at": now}
        if all(getattr(instance, key) == value for key, value in fields.items()):
            return
        before = {key: getattr(instance, key) for key in fields}
        if status not in LIVE:
            instance.usage = None
        try:
            with self._changing(now) as record:
                self._rows.update(instance.id, **fields)
                for key, value in fields.items():
                    setattr(instance, key, value)
                record(frames.status_changed(instance, exit))
        except BaseException:
            for key, value in before.items():
                setattr(instance, key, value)
            raise

    def sampled(self, samples: list[tuple[Instance, dict[str, Any]]], timestamp: str) -> None:
        """One sample tick's usage: set on each instance, published as one ``usage_changed``
        frame for all of them (not an event: no seq, not stored, never replayed)."""
        if not samples:
            return
        for instance, usage in samples:
            instance.usage = usage
        self._hub.broadcast(frames.usage_changed((i for i, _ in samples), timestamp))

    def archive(self, instance: Instance) -> None:
        """Hide a stopped instance from the active set and publish ``instance_archived``."""
        if instance.archived:
            raise IllegalTransition(f"Instance '{instance.name}' is already archived")
        if instance.status in LIVE:
            raise IllegalTransition(f"Instance '{instance.name}' is {instance.status}")
        now = self._now()
        with self._changing() as record:
            self._rows.update(instance.id, archived_at=now, token_hash=None)
            record(frames.instance_archived(instance))
        instance.archived_at = now
        self._active.pop(instance.name, None)
        self._forget_token(instance)

    def unarchive(self, instance: Instance) -> None:
        """Bring an archived instance back; :class:`Conflict` if its name or port is taken."""
        if not instance.archived:
            raise IllegalTransition(f"Instance '{instance.name}' is not archived")
        try:
            with self._changing() as record:
                self._rows.update(instance.id, archived_at=None, status="stopped", pid=None)
                record(frames.instance_unarchived(instance, status="stopped"))
        except DuplicateKey as e:
            raise _taken(e.field, getattr(instance, e.field)) from None
        instance.archived_at, instance.status, instance.pid = None, "stopped", None
        self._active[instance.name] = instance

    def delete(self, instance: Instance) -> None:
        """Remove an archived instance for good and publish ``instance_deleted``."""
        if not instance.archived:
            raise IllegalTransition(
                f"Instance '{instance.name}' must be archived before it is deleted"
            )
        with self._changing() as record:
            self._rows.delete(instance.id)
            record(frames.instance_deleted(instance))
        del self._by_id[instance.id]
        self._forget_token(instance)

    def _free_port(self) -> int:
        taken = {i.port for i in self.active()}
        for port in AUTO_PORTS:
            if port not in taken:
                return port
        raise Conflict(f"no free port left in {AUTO_PORTS[0]}-{AUTO_PORTS[-1]}")


def _taken(field: str, value: Any) -> Conflict:
    return Conflict(f"{field} {value!r} is already taken by an active instance")
