"""Every frame shape the streams send, and the timestamp format they carry.

Frames are plain dicts, ``type`` first, so that the hub encodes each event
exactly once. The registry and messaging build their events here; the stream
protocols build their own frames (``pong``, ``error``, ``backlog``...) here too,
so one module shows the whole wire vocabulary.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from datetime import datetime
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


_second: list[Any] = [None, ""]


def isotime(seconds: float) -> str:
    """ISO 8601 UTC with microseconds, fixed width, so strings sort as times.

    The same text as ``datetime.fromtimestamp(seconds, UTC).strftime(...)`` (the same
    rounding of the microseconds), at a seventh of its cost: every change stamps a few.
    """
    fraction, whole = math.modf(seconds)
    micro, second = round(fraction * 1e6), int(whole)
    if micro >= 1_000_000:
        second, micro = second + 1, micro - 1_000_000
    elif micro < 0:
        second, micro = second - 1, micro + 1_000_000
    if _second[0] != second:
        _second[0], _second[1] = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{_second[1]}.{micro:06d}Z"


def seconds_of(stamp: str) -> float:
    """The epoch seconds of an :func:`isotime` string."""
    return datetime.fromisoformat(stamp).timestamp()


# -- /ws/instances -------------------------------------------------------------


def _about(kind: str, instance: Instance, **fields: Any) -> Frame:
    """An event about one instance: ``type``, ``name`` and ``id`` first."""
    return {"type": kind, "name": instance.name, "id": instance.id, **fields}


def _record(instance: Instance) -> dict[str, Any]:
    """What every frame that carries an instance's state says of its runs."""
    return {"restarts": instance.restarts, "last_exit": instance.last_exit}


def instance_created(instance: Instance, cloned_from: str | None = None) -> Frame:
    frame = _about(
        "instance_created",
        instance,
        port=instance.port,
        status=instance.status,
        usage=None,
        **_record(instance),
    )
    if cloned_from is not None:
        frame["cloned_from"] = cloned_from
    return frame


def status_changed(instance: Instance, exit: dict[str, Any] | None = None) -> Frame:
    """A status change; ``exit`` (``{"code": N}`` or ``{"signal": "SIGKILL"}``) when the
    change was the child's exit and its reason is known."""
    frame = _about(
        "status_changed",
        instance,
        status=instance.status,
        pid=instance.pid,
        started_at=instance.started_at,
        **_record(instance),
    )
    if exit is not None:
        frame["exit"] = exit
    return frame


def instance_archived(instance: Instance) -> Frame:
    return _about("instance_archived", instance)


def instance_unarchived(instance: Instance, status: str | None = None) -> Frame:
    """An unarchived instance, with the status it comes back with (by default, its own)."""
    return _about(
        "instance_unarchived",
        instance,
        port=instance.port,
        status=status or instance.status,
        usage=None,
        **_record(instance),
    )


def instance_deleted(instance: Instance) -> Frame:
    return _about("instance_deleted", instance)


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
        "usage": instance.usage,
        **_record(instance),
    }


def instances_snapshot(
    instances: Iterable[Instance], include_archived: bool, seq: int, epoch: str
) -> Frame:
    """A ``/ws/instances`` snapshot, current to ``seq``."""
    return {
        "type": "snapshot",
        "instances": [instance_in_snapshot(i) for i in instances],
        "include_archived": include_archived,
        "seq": seq,
        "epoch": epoch,
    }


def usage_changed(instances: Iterable[Instance], timestamp: str) -> Frame:
    """One sample tick's usage of every instance sampled: not an event (no ``seq``), never
    stored nor replayed; a client that misses one gets the next a tick later."""
    return {
        "type": "usage_changed",
        "timestamp": timestamp,
        "instances": [{"id": i.id, "name": i.name, "usage": i.usage} for i in instances],
    }


def stamped(frame: Frame, seq: int, timestamp: str) -> Frame:
    """An event as the stream sends it: its ``seq`` (its row's id) and ``timestamp`` last."""
    return {**frame, "seq": seq, "timestamp": timestamp}


def instance_event(row: dict[str, Any]) -> Frame:
    """An ``instance_events`` row as its frame (the same dict as when it was published)."""
    frame = {"type": row["type"], "name": row["name"], "id": row["instance_id"], **row["data"]}
    return stamped(frame, row["id"], row["timestamp"])


# -- /ws/messages --------------------------------------------------------------


def message_event(
    message: dict[str, Any], event: str, detail: str | None, seq: int, timestamp: str
) -> Frame:
    """One message state transition: metadata only, never the payload."""
    frame = {
        "type": "message_event",
        "message_id": message["id"],
        "event": event,
        "from": message["from_instance"],
        "to": message["to_instance"],
        "message_type": message["message_type"],
        "correlation_id": message["correlation_id"],
        "detail": detail,
    }
    return stamped(frame, seq, timestamp)


def message_event_row(row: dict[str, Any]) -> Frame:
    """A ``message_events`` row as its frame (the same dict as when it was published)."""
    message = {
        "id": row["message_id"],
        "from_instance": row["from_instance"],
        "to_instance": row["to_instance"],
        "message_type": row["message_type"],
        "correlation_id": row["correlation_id"],
    }
    return message_event(message, row["event"], row["detail"], row["id"], row["timestamp"])


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


def messages_snapshot(rows: Iterable[dict[str, Any]], seq: int, epoch: str) -> Frame:
    """A ``/ws/messages`` snapshot: recent events, oldest first, current to ``seq``."""
    return {
        "type": "snapshot",
        "recent_events": [stored_message_event(row) for row in rows],
        "seq": seq,
        "epoch": epoch,
    }


def resync(snapshot: Frame, reason: str) -> Frame:
    """A snapshot sent instead of deltas: ``lagged``, ``epoch``, ``expired`` or ``future``."""
    return {**snapshot, "resync": True, "reason": reason}


def resumed(since: int, seq: int, epoch: str) -> Frame:
    """The first frame of a resumed stream: the missed events follow, then live ones."""
    return {"type": "resumed", "since": since, "seq": seq, "epoch": epoch}


# -- every stream ----------------------------------------------------------------


def pong() -> Frame:
    return {"type": "pong"}


def error(code: str, message: str) -> Frame:
    return {"type": "error", "code": code, "message": message}


# -- /ws/instances/NAME/logs -------------------------------------------------------


def backlog(lines: list[str], cursor: str, resumed: bool | None = None) -> Frame:
    """The first frame: the last lines, or (``resumed``) none when a cursor was given.

    ``resumed`` is absent without a cursor, ``true`` when the stream goes on
    right after it, and ``false`` with ``gap`` when its bytes are no longer on
    disk (then ``lines`` is the normal tail).
    """
    frame: Frame = {"type": "backlog", "lines": lines, "count": len(lines), "cursor": cursor}
    if resumed is not None:
        frame["resumed"] = resumed
        if not resumed:
            frame["gap"] = True
    return frame


def lines(batch: list[str], cursor: str) -> Frame:
    """New complete lines; ``cursor`` is the position right after the last one."""
    return {"type": "lines", "lines": batch, "count": len(batch), "cursor": cursor}


def rotated() -> Frame:
    return {"type": "rotated"}


def gap(reason: str, lost_bytes: int) -> Frame:
    """Bytes the viewer had not read are gone (at least ``lost_bytes`` of them)."""
    return {"type": "gap", "reason": reason, "lost_bytes": lost_bytes}
