"""Event types of the two streams, and the timestamp format they carry.

Instance events describe lifecycle changes; message events describe message
state transitions. They are plain dicts (``type`` first) so that the hub can
encode each one exactly once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

INSTANCE_EVENT_TYPES = frozenset(
    {
        "status_changed",
        "instance_created",
        "instance_archived",
        "instance_unarchived",
        "instance_deleted",
    }
)

MESSAGE_EVENTS = frozenset(
    {
        "queued",
        "delivered",
        "acknowledged",
        "failed",
        "retry_scheduled",
        "dead_lettered",
        "expired",
        "replayed",
    }
)


def isotime(seconds: float) -> str:
    """ISO 8601 UTC with microseconds, fixed width, so strings sort as times."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def instance_event(kind: str, name: str, **fields: Any) -> dict[str, Any]:
    """One instance event, ``type`` first."""
    assert kind in INSTANCE_EVENT_TYPES, kind
    return {"type": kind, "name": name, **fields}
