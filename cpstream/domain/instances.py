"""What an instance is: its record, its statuses, and the rules its fields follow."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from cpstream.domain.errors import Conflict, Invalid, NotFound

NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9-]{0,63}")  # matched in full (fullmatch)
PORT_RANGE = range(1024, 65536)
AUTO_PORTS = range(18801, 19000)
STATUSES = ("stopped", "starting", "running", "unhealthy", "stopping", "crashed", "crash_loop")
LIVE = frozenset({"starting", "running", "unhealthy", "stopping"})
HEALTH_CHECKS = ("http", "process")
RESTART_POLICIES = ("on-failure", "never")


class InvalidInstance(Invalid):
    """A create or clone request that cannot be satisfied as given."""


class UnknownInstance(NotFound):
    """No instance by that name."""


class IllegalTransition(Conflict):
    """The instance is not in a state that allows the operation."""


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
    token_hash: str | None = None
    starts: int = 0
    last_exit: dict[str, Any] | None = None
    # The latest resource sample while the child runs (cpstream.domain.usage); not stored.
    usage: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def archived(self) -> bool:
        return self.archived_at is not None

    @property
    def restarts(self) -> int:
        """Starts after the first, automatic or by an operator."""
        return max(0, self.starts - 1)

    @property
    def shown_status(self) -> str:
        return "archived" if self.archived else self.status

    def to_record(self) -> dict[str, Any]:
        """The store's row of this instance."""
        record = asdict(self)
        del record["usage"]
        return record


def check_spec(port: Any, command: Any, env: Any, health: Any, restart: Any) -> None:
    """Raise :class:`InvalidInstance` unless the fields (all but the name) are valid."""
    if not isinstance(port, int) or isinstance(port, bool) or port not in PORT_RANGE:
        raise InvalidInstance(f"port must be an integer from {PORT_RANGE[0]} to 65535")
    if (
        not isinstance(command, list)
        or not command
        or not all(isinstance(a, str) and a for a in command)
    ):
        raise InvalidInstance("command must be a non-empty list of non-empty strings")
    if any("\0" in a for a in command):
        raise InvalidInstance("command must not contain NUL characters")
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise InvalidInstance("env must map strings to strings")
    if any(not k or "=" in k or "\0" in k or "\0" in v for k, v in env.items()):
        raise InvalidInstance(
            "env names must be non-empty, without '=' or NUL, and values without NUL"
        )
    if health not in HEALTH_CHECKS:
        raise InvalidInstance("health must be 'http' or 'process'")
    if restart not in RESTART_POLICIES:
        raise InvalidInstance("restart must be 'on-failure' or 'never'")


def check_name(name: Any) -> None:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidInstance(
            "name must be 1-64 letters, digits or '-', starting with a letter or digit"
        )
