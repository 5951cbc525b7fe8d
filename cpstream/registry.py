"""The instance table: the one place an instance changes.

Every change writes the store first and then publishes exactly one instance
event to the hub, so REST, the supervisor and the demo all produce the same
frames and nothing changes without being published. Lookups and snapshots are
served from memory.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IReactorTime

from cpstream.events import instance_event, isotime
from cpstream.hub import Hub
from cpstream.store import Conflict, Store

NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9-]{0,63}$")
PORT_RANGE = range(1024, 65536)
AUTO_PORTS = range(18801, 19000)
STATUSES = ("stopped", "starting", "running", "unhealthy", "stopping", "crashed", "crash_loop")
LIVE = frozenset({"starting", "running", "unhealthy", "stopping"})


class InvalidInstance(ValueError):
    """A create or clone request that cannot be satisfied as given."""


class UnknownInstance(LookupError):
    """No instance by that name."""


class IllegalTransition(Exception):
    """The instance is not in a state that allows the operation (HTTP 409)."""


@dataclass
class Instance:
    """One agent instance as the control plane sees it."""

    id: str
    name: str
    port: int
    command: list[str]
    env: dict[str, str]
    health: str
    restart: str
    status: str
    pid: int | None
    created_at: str
    started_at: str | None = None
    archived_at: str | None = None

    @property
    def archived(self) -> bool:
        return self.archived_at is not None

    @property
    def shown_status(self) -> str:
        return "archived" if self.archived else self.status

    def to_api(self) -> dict[str, Any]:
        """The REST shape of an instance."""
        return {
            "id": self.id,
            "name": self.name,
            "port": self.port,
            "status": self.shown_status,
            "pid": self.pid,
            "command": self.command,
            "health": self.health,
            "restart": self.restart,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "archived_at": self.archived_at,
        }

    def to_stream(self) -> dict[str, Any]:
        """The shape of an instance inside a ``/ws/instances`` snapshot."""
        return {
            "id": self.id,
            "name": self.name,
            "status": self.shown_status,
            "port": self.port,
            "pid": self.pid,
            "started_at": self.started_at,
            "archived_at": self.archived_at,
        }

    def to_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "port": self.port,
            "command": self.command,
            "env": self.env,
            "health": self.health,
            "restart": self.restart,
            "status": self.status,
            "pid": self.pid,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "archived_at": self.archived_at,
        }


class Registry:
    """In-memory instance table backed by the store; publishes every change."""

    def __init__(
        self, store: Store, hub: Hub, clock: IReactorTime, default_command: list[str]
    ) -> None:
        self._store = store
        self._hub = hub
        self._clock = clock
        self._default_command = default_command
        self._by_id: dict[str, Instance] = {
            row["id"]: Instance(**row) for row in store.load_instances()
        }

    def _now(self) -> str:
        return isotime(self._clock.seconds())

    # -- lookups -----------------------------------------------------------

    def active(self) -> list[Instance]:
        """Instances that are not archived, oldest first."""
        return [i for i in self._by_id.values() if not i.archived]

    def all(self, include_archived: bool = False) -> list[Instance]:
        """Instances in creation order, archived ones only when asked."""
        return [i for i in self._by_id.values() if include_archived or not i.archived]

    def find(self, name: str) -> Instance | None:
        """The active instance of that name, or ``None``."""
        for instance in self._by_id.values():
            if instance.name == name and not instance.archived:
                return instance
        return None

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

    def snapshot(self, include_archived: bool) -> dict[str, Any]:
        """A ``/ws/instances`` snapshot frame, current to the hub's ``seq``."""
        return {
            "type": "snapshot",
            "instances": [i.to_stream() for i in self.all(include_archived)],
            "include_archived": include_archived,
            "seq": self._hub.seq,
        }

    # -- changes -----------------------------------------------------------

    def create(
        self,
        name: str,
        port: int | None = None,
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
        health: str = "http",
        restart: str = "on-failure",
    ) -> Instance:
        """Create a stopped instance and publish ``instance_created``."""
        _check_name(name)
        if self.find(name) is not None:
            raise Conflict("name")
        if port is None:
            port = self._free_port()
        elif not isinstance(port, int) or isinstance(port, bool) or port not in PORT_RANGE:
            raise InvalidInstance(f"port must be an integer from {PORT_RANGE[0]} to 65535")
        command = self._default_command if command is None else command
        if (
            not isinstance(command, list)
            or not command
            or not all(isinstance(a, str) and a for a in command)
        ):
            raise InvalidInstance("command must be a non-empty list of non-empty strings")
        env = {} if env is None else env
        if not isinstance(env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items()
        ):
            raise InvalidInstance("env must map strings to strings")
        if health not in ("http", "process"):
            raise InvalidInstance("health must be 'http' or 'process'")
        if restart not in ("on-failure", "never"):
            raise InvalidInstance("restart must be 'on-failure' or 'never'")
        instance = Instance(
            id=str(uuid.uuid4()),
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
        self._store.insert_instance(instance.to_record())
        self._by_id[instance.id] = instance
        self._hub.publish(
            instance_event(
                "instance_created", name, id=instance.id, port=port, status=instance.status
            )
        )
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
        )

    def set_status(
        self,
        instance: Instance,
        status: str,
        pid: int | None = None,
        started_at: str | None = None,
    ) -> None:
        """Record a status (and pid) change and publish ``status_changed``."""
        assert status in STATUSES, status
        if status not in LIVE:
            pid, started_at = None, None
        elif started_at is None:
            started_at = instance.started_at
        if (status, pid, started_at) == (instance.status, instance.pid, instance.started_at):
            return
        self._store.update_instance(instance.id, status=status, pid=pid, started_at=started_at)
        instance.status, instance.pid, instance.started_at = status, pid, started_at
        self._hub.publish(
            instance_event(
                "status_changed",
                instance.name,
                id=instance.id,
                status=status,
                pid=pid,
                started_at=started_at,
            )
        )

    def archive(self, instance: Instance) -> None:
        """Hide a stopped instance from the active set and publish ``instance_archived``."""
        if instance.archived:
            raise IllegalTransition(f"Instance '{instance.name}' is already archived")
        if instance.status in LIVE:
            raise IllegalTransition(f"Instance '{instance.name}' is {instance.status}")
        now = self._now()
        self._store.update_instance(instance.id, archived_at=now)
        instance.archived_at = now
        self._hub.publish(instance_event("instance_archived", instance.name, id=instance.id))

    def unarchive(self, instance: Instance) -> None:
        """Bring an archived instance back; :class:`Conflict` if its name or port is taken."""
        if not instance.archived:
            raise IllegalTransition(f"Instance '{instance.name}' is not archived")
        self._store.update_instance(instance.id, archived_at=None, status="stopped", pid=None)
        instance.archived_at, instance.status, instance.pid = None, "stopped", None
        self._hub.publish(
            instance_event(
                "instance_unarchived",
                instance.name,
                id=instance.id,
                port=instance.port,
                status=instance.status,
            )
        )

    def delete(self, instance: Instance) -> None:
        """Remove an archived instance for good and publish ``instance_deleted``."""
        if not instance.archived:
            raise IllegalTransition(
                f"Instance '{instance.name}' must be archived before it is deleted"
            )
        self._store.delete_instance(instance.id)
        del self._by_id[instance.id]
        self._hub.publish(instance_event("instance_deleted", instance.name, id=instance.id))

    def _free_port(self) -> int:
        taken = {i.port for i in self.active()}
        for port in AUTO_PORTS:
            if port not in taken:
                return port
        raise Conflict("port")


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidInstance(
            "name must be 1-64 letters, digits or '-', starting with a letter or digit"
        )
