"""The REST shapes of domain records: what ``/api/`` answers with."""

from __future__ import annotations

from typing import Any

from cpstream.domain.instances import Instance
from cpstream.web.bodies import SENT

MESSAGE_KEYS = (
    "id",
    *SENT,
    "status",
    "attempts",
    "max_retries",
    "created_at",
    "updated_at",
    "expires_at",
    "lease_id",
)


def instance_json(instance: Instance) -> dict[str, Any]:
    """The REST shape of an instance."""
    return {
        "id": instance.id,
        "name": instance.name,
        "port": instance.port,
        "status": instance.shown_status,
        "pid": instance.pid,
        "command": instance.command,
        "health": instance.health,
        "restart": instance.restart,
        "created_at": instance.created_at,
        "started_at": instance.started_at,
        "archived_at": instance.archived_at,
        "usage": instance.usage,
        "restarts": instance.restarts,
        "last_exit": instance.last_exit,
    }


def message_json(message: dict[str, Any]) -> dict[str, Any]:
    """The REST shape of a message (its payload only if the record carries one)."""
    shown = {key: message[key] for key in MESSAGE_KEYS if key in message}
    if "events" in message:
        shown["events"] = message["events"]
    return shown
