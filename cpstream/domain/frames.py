"""Every frame shape the streams send, and the timestamp format they carry.

Frames are plain dicts, ``type`` first, so that the hub encodes each event
exactly once. The registry and messaging build their events here; the stream
protocols build their own frames (``pong``, ``error``, ``backlog``...) here too,
so one module shows the whole wire vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cpstream.domain.instances import Instance

Frame = dict[str, Any]

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


# -- /ws/instances -------------------------------------------------------------


def instance_created(instance: Instance) -> Frame:
    return {
        "type": "instance_created",
        "name": instance.name,
        "id": instance.id,
        "port": instance.port,
        "status": instance.status,
    }


def status_changed(instance: Instance) -> Frame:
    return {
        "type": "status_changed",
        "name": instance.name,
        "id": instance.id,
        "status": instance.status,
        "pid": instance.pid,
        "started_at": instance.started_at,
    }


def instance_archived(instance: Instance) -> Frame:
    return {"type": "instance_archived", "name": instance.name, "id": instance.id}


def instance_unarchived(instance: Instance) -> Frame:
    return {
        "type": "instance_unarchived",
        "name": instance.name,
        "id": instance.id,
        "port": instance.port,
        "status": instance.status,
    }


def instance_deleted(instance: Instance) -> Frame:
    return {"type": "instance_deleted", "name": instance.name, "id": instance.id}


def instance_in_snapshot(instance: Instance) -> Frame:
    """The shape of one instance inside a ``/ws/instances`` snapshot."""
    return {
        "id": instance.id,
        "name": instance.name,
        "status": instance.shown_status,
        "port": instance.port,
        "pid": instance.pid,
        "started_at": instance.started_at,
        "archived_at": instance.archived_at,
    }


def instances_snapshot(instances: Iterable[Instance], include_archived: bool, seq: int) -> Frame:
    """A ``/ws/instances`` snapshot, current to ``seq``."""
    return {
        "type": "snapshot",
        "instances": [instance_in_snapshot(i) for i in instances],
        "include_archived": include_archived,
        "seq": seq,
    }


# -- /ws/messages --------------------------------------------------------------


def message_event(message: dict[str, Any], event: str, detail: str | None, timestamp: str) -> Frame:
    """One message state transition: metadata only, never the payload."""
    return {
        "type": "message_event",
        "message_id": message["id"],
        "event": event,
        "from": message["from_instance"],
        "to": message["to_instance"],
        "message_type": message["message_type"],
        "correlation_id": message["correlation_id"],
        "detail": detail,
        "timestamp": timestamp,
    }


def stored_message_event(row: dict[str, Any]) -> Frame:
    """A ``message_events`` row joined with its message, as it appears in a snapshot."""
    return {
        "message_id": row["message_id"],
        "event": row["event"],
        "from": row["from_instance"],
        "to": row["to_instance"],
        "message_type": row["message_type"],
        "correlation_id": row["correlation_id"],
        "detail": row["detail"],
        "timestamp": row["timestamp"],
    }


def messages_snapshot(rows: Iterable[dict[str, Any]], seq: int) -> Frame:
    """A ``/ws/messages`` snapshot: recent events, oldest first, current to ``seq``."""
    return {
        "type": "snapshot",
        "recent_events": [stored_message_event(row) for row in rows],
        "seq": seq,
    }


# -- every stream ----------------------------------------------------------------


def pong() -> Frame:
    return {"type": "pong"}


def error(code: str, message: str) -> Frame:
    return {"type": "error", "code": code, "message": message}


# -- /ws/instances/NAME/logs -------------------------------------------------------


def backlog(lines: list[str]) -> Frame:
    return {"type": "backlog", "lines": lines, "count": len(lines)}


def lines(batch: list[str]) -> Frame:
    return {"type": "lines", "lines": batch, "count": len(batch)}


def rotated() -> Frame:
    return {"type": "rotated"}
