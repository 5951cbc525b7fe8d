"""What the command line prints: tables, one-line events, colors, the output streams.

Colors only when stdout is a terminal and ``NO_COLOR`` is not set.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

LIVE = frozenset({"starting", "running", "unhealthy", "stopping"})
COLORS = {
    "running": "32",
    "acknowledged": "32",
    "starting": "33",
    "stopping": "33",
    "unhealthy": "33",
    "queued": "36",
    "delivered": "36",
    "retry_scheduled": "33",
    "crashed": "31",
    "crash_loop": "31",
    "dead_letter": "31",
    "stopped": "2",
    "archived": "2",
}
NONE = "-"


def wants_color(stream: TextIO) -> bool:
    """Colors for ``stream``: a terminal, and ``NO_COLOR`` not set (to anything)."""
    if "NO_COLOR" in os.environ:
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Output:
    """stdout and stderr, flushed as written; a closed pipe ends quietly."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.color = wants_color(self.out)
        self.closed = False

    def write(self, text: str) -> None:
        """Print ``text`` (a newline added) on stdout."""
        self._write(self.out, text + "\n")

    def json(self, value: Any, indent: int | None = 2) -> None:
        self.write(json.dumps(value, indent=indent, ensure_ascii=False))

    def note(self, text: str) -> None:
        """One line on stderr."""
        self._write(self.err, text + "\n")

    def _write(self, stream: TextIO, text: str) -> None:
        if self.closed:
            return
        try:
            stream.write(text)
            stream.flush()
        except BrokenPipeError:
            # The reader is gone (``| head``): say nothing more, and let the
            # interpreter's last flush find nothing to write.
            self.closed = True
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, stream.fileno())
            except (OSError, ValueError):
                pass

    def paint(self, text: str, key: str | None) -> str:
        code = COLORS.get(key or "")
        if not self.color or code is None:
            return text
        return f"\x1b[{code}m{text}\x1b[0m"

    def bold(self, text: str) -> str:
        return f"\x1b[1m{text}\x1b[0m" if self.color else text


def text(value: Any) -> str:
    return NONE if value is None or value == "" else str(value)


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    paint: Callable[[int, str, str], str] | None = None,
) -> str:
    """Columns padded to their widest cell; ``paint(column, cell, padded)`` colors a cell
    after padding (so escape codes do not count as width)."""
    cells = [[text(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip()]
    for row in cells:
        padded = []
        for i, cell in enumerate(row):
            shown = cell.ljust(widths[i]) if i < len(row) - 1 else cell
            padded.append(paint(i, cell, shown) if paint else shown)
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def parse_time(stamp: str | None) -> float | None:
    """Seconds since the epoch of an ISO 8601 UTC timestamp (``...Z``), or ``None``."""
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def duration(seconds: float) -> str:
    """``45s``, ``12m03s``, ``3h04m``, ``2d05h``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def uptime(instance: dict[str, Any], now: float) -> str:
    """How long a live instance has been up (since ``started_at``); ``-`` otherwise."""
    started = parse_time(instance.get("started_at"))
    if instance.get("status") not in LIVE or started is None:
        return NONE
    return duration(now - started)


INSTANCE_HEADERS = ("NAME", "STATUS", "PID", "PORT", "UPTIME", "RESTARTS")


def instance_table(instances: Sequence[dict[str, Any]], out: Output, now: float) -> str:
    """name, status, pid, port, uptime, restarts (``-`` where the API has none)."""
    rows = [
        (
            i.get("name"),
            i.get("status"),
            i.get("pid"),
            i.get("port"),
            uptime(i, now),
            i.get("restarts"),
        )
        for i in sorted(instances, key=lambda i: str(i.get("name")))
    ]
    return table(INSTANCE_HEADERS, rows, _status_painter(out, 1))


def _status_painter(out: Output, column: int) -> Callable[[int, str, str], str]:
    def paint(i: int, cell: str, padded: str) -> str:
        return out.paint(padded, cell) if i == column else padded

    return paint


MESSAGE_HEADERS = ("ID", "STATUS", "TYPE", "FROM", "TO", "ATTEMPTS", "CORRELATION", "CREATED")


def message_table(messages: Sequence[dict[str, Any]], out: Output) -> str:
    rows = [
        (
            m.get("id"),
            m.get("status"),
            m.get("message_type"),
            m.get("from_instance"),
            m.get("to_instance"),
            _attempts(m),
            m.get("correlation_id"),
            m.get("created_at"),
        )
        for m in messages
    ]
    return table(MESSAGE_HEADERS, rows, _status_painter(out, 1))


def _attempts(message: dict[str, Any]) -> str:
    attempts, limit = message.get("attempts"), message.get("max_retries")
    if attempts is None:
        return NONE
    return f"{attempts}/{limit}" if limit is not None else str(attempts)


def message_detail(message: dict[str, Any], out: Output) -> str:
    """One message as ``field  value`` lines, its payload, then its event timeline."""
    fields = [
        ("id", message.get("id")),
        ("status", out.paint(text(message.get("status")), message.get("status"))),
        ("from", message.get("from_instance")),
        ("to", message.get("to_instance")),
        ("type", message.get("message_type")),
        ("correlation", message.get("correlation_id")),
        ("key", message.get("idempotency_key")),
        ("hops", message.get("hop_count")),
        ("attempts", _attempts(message)),
        ("created", message.get("created_at")),
        ("updated", message.get("updated_at")),
        ("expires", message.get("expires_at")),
    ]
    lines = [f"{name:<12} {text(value)}" for name, value in fields]
    if "payload" in message:
        payload = json.dumps(message["payload"], indent=2, ensure_ascii=False)
        lines.append("payload")
        lines += ["  " + line for line in payload.splitlines()]
    events = message.get("events") or []
    lines.append("events")
    if events:
        rows = [(e.get("timestamp"), e.get("event"), e.get("detail")) for e in events]
        lines += ["  " + line for line in table(("TIME", "EVENT", "DETAIL"), rows).splitlines()]
    return "\n".join(lines)


RULE_HEADERS = ("ID", "FROM", "TO", "PATTERN", "MAX_RETRIES", "TTL")


def rule_table(rules: Sequence[dict[str, Any]]) -> str:
    rows = [
        (
            r.get("id"),
            r.get("from_instance"),
            r.get("to_instance"),
            r.get("type_pattern"),
            r.get("max_retries"),
            f"{r['ttl_secs']}s" if r.get("ttl_secs") is not None else None,
        )
        for r in rules
    ]
    return table(RULE_HEADERS, rows)


def _exit(frame: dict[str, Any]) -> str:
    gone = frame.get("exit")
    if not isinstance(gone, dict):
        return ""
    if "code" in gone:
        return f" (exit code {gone['code']})"
    if "signal" in gone:
        return f" ({gone['signal']})"
    return ""


def instance_event(frame: dict[str, Any], out: Output) -> str | None:
    """One ``/ws/instances`` delta as a line: time, name, what happened; ``None`` for
    frames that are not events."""
    kind = frame.get("type")
    status = frame.get("status")
    painted = out.paint(text(status), status)
    if kind == "status_changed":
        pid = f" pid {frame['pid']}" if frame.get("pid") else ""
        what = f"{painted}{pid}{_exit(frame)}"
    elif kind == "instance_created":
        clone = f", clone of {frame['cloned_from']}" if frame.get("cloned_from") else ""
        what = f"created (port {text(frame.get('port'))}{clone})"
    elif kind == "instance_archived":
        what = out.paint("archived", "archived")
    elif kind == "instance_unarchived":
        what = f"unarchived ({painted})"
    elif kind == "instance_deleted":
        what = "deleted"
    else:
        return None
    return f"{text(frame.get('timestamp'))}  {text(frame.get('name'))}  {what}"


def message_event(frame: dict[str, Any], out: Output) -> str:
    """One ``/ws/messages`` event (or a snapshot's recent event) as a line."""
    event = text(frame.get("event"))
    sender = frame.get("from", frame.get("from_instance"))
    recipient = frame.get("to", frame.get("to_instance"))
    parts = [
        text(frame.get("timestamp")),
        text(frame.get("message_id")),
        out.paint(event, {"dead_lettered": "dead_letter", "failed": "crashed"}.get(event, event)),
        f"{text(sender)} -> {text(recipient)}",
        text(frame.get("message_type")),
    ]
    if frame.get("correlation_id"):
        parts.append(f"correlation={frame['correlation_id']}")
    if frame.get("detail"):
        parts.append(f"({frame['detail']})")
    return "  ".join(parts)


def isotime(seconds: float) -> str:
    """The streams' timestamp format: ISO 8601 UTC with microseconds."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def resync_line(frame: dict[str, Any], now: float) -> str:
    """The line ``events`` prints when the server resynced the stream with a snapshot."""
    reason = frame.get("reason") or "unknown"
    return (
        f"{isotime(now)}  --- resync ({reason}): events may have been missed;"
        f" the state is the server's new snapshot (seq {text(frame.get('seq'))}) ---"
    )
