"""What each command does: REST calls through :class:`~cpstream.cli.client.Client`, streams
through :class:`~cpstream.cli.follow.Follower`, printing through
:class:`~cpstream.cli.output.Output`. Each returns the exit code; a refusal
(:class:`ApiError`) or no daemon (:class:`Unreachable`) is raised to the caller.
"""

from __future__ import annotations

import argparse
import json
from collections import deque
from dataclasses import dataclass
from typing import Any

from twisted.internet import task

from cpstream.cli import output
from cpstream.cli.client import ApiError, Client, segment
from cpstream.cli.follow import Follower, Resume, send_frame
from cpstream.cli.output import Output

MAX_LOG_BACKLOG = 1000  # what the log stream sends at most (``?backlog=N``)
REDRAW_AFTER = 0.05  # coalesce the frames of one burst into one redraw
SEEN_EVENTS = 10_000  # message events remembered, not to print twice after a resync


@dataclass
class Context:
    """What a command works with."""

    reactor: Any
    client: Client
    out: Output
    args: argparse.Namespace

    @property
    def json(self) -> bool:
        return bool(getattr(self.args, "json", False))


def _instance(name: str, *rest: str) -> str:
    return "/".join([f"/api/instances/{segment(name)}", *rest])


# -- instances ---------------------------------------------------------------------


async def ls(ctx: Context) -> int:
    if ctx.args.watch:
        return await watch(ctx)
    params = {"include_archived": "true"} if ctx.args.archived else {}
    instances = await ctx.client.get("/api/instances", **params)
    if ctx.json:
        ctx.out.json(instances)
    else:
        ctx.out.write(output.instance_table(instances, ctx.out, ctx.reactor.seconds()))
    return 0


async def create(ctx: Context) -> int:
    args = ctx.args
    body: dict[str, Any] = {"name": args.name}
    for key, value in (("port", args.port), ("health", args.health), ("restart", args.restart)):
        if value is not None:
            body[key] = value
    if args.argv:
        body["command"] = args.argv
    if args.env:
        body["env"] = dict(args.env)
    _show_instance(ctx, await ctx.client.post("/api/instances", body))
    return 0


async def clone(ctx: Context) -> int:
    body: dict[str, Any] = {"name": ctx.args.new}
    if ctx.args.port is not None:
        body["port"] = ctx.args.port
    _show_instance(ctx, await ctx.client.post(_instance(ctx.args.name, "clone"), body))
    return 0


def _show_instance(ctx: Context, instance: dict[str, Any]) -> None:
    if ctx.json:
        ctx.out.json(instance)
        return
    status = instance.get("status")
    ctx.out.write(
        f"{instance.get('name')}  {ctx.out.paint(output.text(status), status)}"
        f"  port {output.text(instance.get('port'))}"
    )


async def lifecycle(ctx: Context) -> int:
    """start, stop, restart, archive, unarchive or delete each name in turn; a refusal
    is reported and the others still go (exit 1 if any was refused)."""
    verb = ctx.args.command
    code = 0
    for name in ctx.args.names:
        try:
            if verb == "delete":
                answer = await ctx.client.delete(_instance(name))
            else:
                answer = await ctx.client.post(_instance(name, verb))
        except ApiError as e:
            ctx.out.note(f"cpstream: {e.code} {e.message}")
            code = 1
            continue
        if ctx.json:
            ctx.out.json(answer, indent=None)
        else:
            status = answer.get("status")
            shown = ctx.out.paint(output.text(status), status)
            ctx.out.write(f"{answer.get('name', name)}  {shown}")
    return code


# -- logs --------------------------------------------------------------------------


async def logs(ctx: Context) -> int:
    args = ctx.args
    if args.follow:
        return await follow_logs(ctx)
    if args.lines == 0:
        await ctx.client.get(_instance(args.name))
        return 0
    answer = await ctx.client.get(_instance(args.name, "logs"), lines=args.lines)
    if ctx.json:
        ctx.out.json(answer)
    elif answer.get("lines"):
        ctx.out.write("\n".join(answer["lines"]))
    return 0


class LogPrinter:
    """Log frames to lines on stdout; rotations and gaps as ``---`` lines on stderr."""

    def __init__(self, out: Output, raw: bool) -> None:
        self.out = out
        self.raw = raw

    def __call__(self, frame: dict[str, Any]) -> None:
        if self.raw:
            self.out.json(frame, indent=None)
            return
        kind = frame.get("type")
        if kind == "backlog" and frame.get("gap"):
            self.out.note("--- gap: lines after the last one shown are no longer on disk ---")
        if kind in ("backlog", "lines"):
            lines = frame.get("lines") or []
            if lines:
                self.out.write("\n".join(lines))
        elif kind == "rotated":
            self.out.note("--- log rotated ---")
        elif kind == "gap":
            lost = frame.get("lost_bytes")
            self.out.note(f"--- gap: {lost} bytes lost ({frame.get('reason')}) ---")


async def follow_logs(ctx: Context) -> int:
    """The last N lines, then every new line once, in order, across reconnects."""
    name = ctx.args.name
    await ctx.client.get(_instance(name))  # the name and the credentials, before any stream
    follower = Follower(
        ctx.reactor,
        ctx.client,
        f"/ws/instances/{segment(name)}/logs",
        {"backlog": min(ctx.args.lines, MAX_LOG_BACKLOG)},
        Resume("cursor"),
        LogPrinter(ctx.out, ctx.json),
        _notice(ctx.out),
        compress=True,
    )
    await follower.run()
    return 0


def _notice(out: Output) -> Any:
    return lambda text: out.note(f"cpstream: {text}")


# -- event streams -----------------------------------------------------------------


class EventPrinter:
    """``/ws/instances`` or ``/ws/messages`` frames as one line per event.

    The first ``/ws/messages`` snapshot's recent events are printed as a
    backlog; a resync snapshot prints a ``--- resync`` line, then those of its
    recent events not printed yet.
    """

    def __init__(self, ctx: Context, messages: bool, instance: str | None) -> None:
        self.ctx = ctx
        self.out = ctx.out
        self.messages = messages
        self.instance = instance
        self._seen: set[tuple[Any, ...]] = set()
        self._order: deque[tuple[Any, ...]] = deque()

    def __call__(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "usage_changed":
            return  # resource samples, every few seconds: not events (no seq, no history)
        if not self.messages and self.instance is not None and kind != "snapshot":
            if "name" in frame and frame["name"] != self.instance:
                return
        if self.ctx.json:
            self.out.json(frame, indent=None)
            return
        if kind == "snapshot":
            if frame.get("resync"):
                self.out.write(output.resync_line(frame, self.ctx.reactor.seconds()))
            for event in frame.get("recent_events") or []:
                self._message(event)
        elif kind == "message_event":
            self._message(event=frame)
        elif not self.messages:
            line = output.instance_event(frame, self.out)
            if line is not None:
                self.out.write(line)

    def _message(self, event: dict[str, Any]) -> None:
        key = (event.get("message_id"), event.get("event"), event.get("timestamp"))
        if key in self._seen:
            return
        self._seen.add(key)
        self._order.append(key)
        if len(self._order) > SEEN_EVENTS:
            self._seen.discard(self._order.popleft())
        self.out.write(output.message_event(event, self.out))


async def events(ctx: Context) -> int:
    args = ctx.args
    await ctx.client.get("/api/session")  # reachability and credentials, before any stream
    if args.messages:
        path = "/ws/messages"
        params = {"instance": args.instance, "correlation_id": args.correlation}
    else:
        path, params = "/ws/instances", {}
    follower = Follower(
        ctx.reactor,
        ctx.client,
        path,
        params,
        Resume("seq"),
        EventPrinter(ctx, args.messages, args.instance),
        _notice(ctx.out),
    )
    await follower.run()
    return 0


class InstancesView:
    """``ls -w``: the table kept from ``/ws/instances`` frames, redrawn on each change.

    On a terminal the screen is cleared and redrawn (and the uptimes every
    second), the connection's state in the last line; otherwise the table is
    printed again after a blank line whenever it changed.
    """

    def __init__(self, ctx: Context, archived: bool) -> None:
        self.ctx = ctx
        self.out = ctx.out
        self.archived = archived
        self.tty = _isatty(ctx.out)
        self.state: dict[str, dict[str, Any]] = {}
        self.status = "connecting"
        self._pending: Any = None
        self._last = ""

    def opened(self, protocol: Any) -> None:
        if self.archived:
            send_frame(protocol, {"type": "set_include_archived", "value": True})

    def notice(self, text: str) -> None:
        if self.tty and not self.ctx.json:
            self.status = text
            self._schedule()
        else:
            self.out.note(f"cpstream: {text}")

    def __call__(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        key = frame.get("id")
        current = self.state.get(key) if isinstance(key, str) else None
        if kind == "snapshot":
            self.state = {i["id"]: dict(i) for i in frame.get("instances") or []}
        elif kind == "status_changed" and current is not None:
            if current.get("status") != "archived":
                current["status"] = frame.get("status")
            current["pid"] = frame.get("pid")
            current["started_at"] = frame.get("started_at")
            if "restarts" in frame:
                current["restarts"] = frame["restarts"]
        elif kind in ("instance_created", "instance_unarchived"):
            record = current if current is not None else {"id": key, "pid": None}
            record.update(
                name=frame.get("name"),
                port=frame.get("port"),
                status=frame.get("status"),
                archived_at=None,
            )
            record.setdefault("started_at", None)
            self.state[key] = record
        elif kind == "instance_archived" and current is not None:
            if self.archived:
                current.update(status="archived", pid=None, archived_at=frame.get("timestamp"))
            else:
                del self.state[key]
        elif kind == "instance_deleted":
            self.state.pop(key, None)
        elif kind != "resumed":
            return
        if self.status != "live":
            self.status = "live"
        self._schedule()

    def _schedule(self) -> None:
        if self._pending is None or not self._pending.active():
            self._pending = self.ctx.reactor.callLater(REDRAW_AFTER, self.redraw)

    def redraw(self) -> None:
        instances = sorted(self.state.values(), key=lambda i: str(i.get("name")))
        if self.ctx.json:
            shown = json.dumps(instances, ensure_ascii=False)
        else:
            shown = output.instance_table(instances, self.out, self.ctx.reactor.seconds())
        if self.tty and not self.ctx.json:
            footer = f"{len(instances)} instance(s) - {self.status} - Ctrl-C to quit"
            self.out.write(f"\x1b[H\x1b[2J{shown}\n\n{footer}")
        elif shown != self._last:
            self.out.write(shown if self.ctx.json or not self._last else f"\n{shown}")
        self._last = shown


def _isatty(out: Output) -> bool:
    try:
        return out.out.isatty()
    except (AttributeError, ValueError):
        return False


async def watch(ctx: Context) -> int:
    await ctx.client.get("/api/session")  # reachability and credentials, before any stream
    view = InstancesView(ctx, ctx.args.archived)
    follower = Follower(
        ctx.reactor,
        ctx.client,
        "/ws/instances",
        {},
        Resume("seq"),
        view,
        view.notice,
        on_open=view.opened,
    )
    ticker = None
    if view.tty and not ctx.json:
        ticker = task.LoopingCall(view.redraw)
        ticker.clock = ctx.reactor
        ticker.start(1.0, now=False)
    try:
        await follower.run()
    finally:
        if ticker is not None and ticker.running:
            ticker.stop()
    return 0


# -- messaging ---------------------------------------------------------------------


async def send(ctx: Context) -> int:
    args = ctx.args
    body: dict[str, Any] = {
        "from_instance": args.sender,
        "to_instance": args.recipient,
        "message_type": args.type,
        "payload": args.payload,
    }
    if args.correlation is not None:
        body["correlation_id"] = args.correlation
    if args.key is not None:
        body["idempotency_key"] = args.key
    answer = await ctx.client.post("/api/messages", body)
    if ctx.json:
        ctx.out.json(answer)
    elif answer.get("deduplicated"):
        ctx.out.write(f"{answer.get('id')}  deduplicated")
    else:
        status = answer.get("status")
        expires = f"  expires {answer['expires_at']}" if answer.get("expires_at") else ""
        ctx.out.write(f"{answer.get('id')}  {ctx.out.paint(output.text(status), status)}{expires}")
    return 0


async def messages(ctx: Context) -> int:
    args = ctx.args
    found = await ctx.client.get(
        "/api/messages",
        instance=args.instance,
        status=args.status,
        type=args.type,
        correlation_id=args.correlation,
        limit=args.limit,
    )
    _show_messages(ctx, found)
    return 0


async def dlq(ctx: Context) -> int:
    _show_messages(ctx, await ctx.client.get("/api/messages/dead_letter", limit=ctx.args.limit))
    return 0


def _show_messages(ctx: Context, found: list[dict[str, Any]]) -> None:
    if ctx.json:
        ctx.out.json(found)
    else:
        ctx.out.write(output.message_table(found, ctx.out))


async def message(ctx: Context) -> int:
    found = await ctx.client.get(f"/api/messages/{segment(ctx.args.id)}")
    if ctx.json:
        ctx.out.json(found)
    else:
        ctx.out.write(output.message_detail(found, ctx.out))
    return 0


async def replay(ctx: Context) -> int:
    answer = await ctx.client.post(f"/api/messages/{segment(ctx.args.id)}/replay")
    if ctx.json:
        ctx.out.json(answer)
    else:
        status = answer.get("status")
        ctx.out.write(f"{answer.get('id')}  {ctx.out.paint(output.text(status), status)}")
    return 0


async def rules(ctx: Context) -> int:
    args = ctx.args
    if args.action == "add":
        body: dict[str, Any] = {
            "from_instance": args.sender,
            "to_instance": args.recipient,
            "type_pattern": args.pattern,
        }
        if args.max_retries is not None:
            body["max_retries"] = args.max_retries
        if args.ttl is not None:
            body["ttl_secs"] = args.ttl
        rule = await ctx.client.post("/api/routing-rules", body)
        if ctx.json:
            ctx.out.json(rule)
        else:
            ctx.out.write(output.rule_table([rule]))
        return 0
    if args.action == "rm":
        answer = await ctx.client.delete(f"/api/routing-rules/{segment(args.id)}")
        if ctx.json:
            ctx.out.json(answer)
        else:
            ctx.out.write(f"{answer.get('id', args.id)}  deleted")
        return 0
    found = await ctx.client.get("/api/routing-rules")
    if ctx.json:
        ctx.out.json(found)
    else:
        ctx.out.write(output.rule_table(found))
    return 0
