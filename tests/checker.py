"""The stream-integrity checker's world: a real daemon, raw stream clients, and the oracles.

Clients apply what they are sent — snapshot, deltas, resyncs, resumes, log
lines, rotations and gaps — to models of their own. When the system is quiet
the oracles compare those models with the truth:

* an instances view equals ``GET /api/instances`` (with its ``include_archived``);
* after its last snapshot (or resume point) a hub view received exactly the rows
  of the event table its filter accepts, in order, once each, as they are stored;
* seq strictly increases on every connection, except at a snapshot;
* a ``usage_changed`` frame has no seq and names only instances the view has live
  (the sampler publishes in the same turn it checks), and the restarts and last exit
  the view shows are REST's;
* a log view received every line on disk (``daemon.log`` and ``.1`` ... ``.5``)
  from where it started, once each, in order, or an explicit ``gap``.

Every step is bounded in count and time; the daemon listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import defer

from cpstream.domain.instances import LIVE
from tests import wsraw
from tests.hardening import raw
from tests.support import (
    Daemon,
    create,
    get_json,
    instance_log,
    post_json,
    read_token,
    sleep,
    wait_for,
)

LINE = re.compile(r"^L(\d{7}) ")
SMALL_RCVBUF = 4096
ROTATED, GAP = "<rotated>", "<gap>"


class Violation(AssertionError):
    """An oracle found the live view and the truth apart."""


@dataclass
class View:
    """One raw stream connection and what its frames say."""

    kind: str  # "instances", "messages" or "logs"
    path: str
    client: raw.Raw
    filters: dict[str, str] = field(default_factory=dict)
    frames: list[dict] = field(default_factory=list)
    via: int = 0  # 0: the control plane, 1...: a gateway
    parsed: int = 0
    paused: bool = False
    closed: bool = False

    def pump(self) -> None:
        """Parse the frames that arrived since the last call."""
        data = self.client.data
        while (found := wsraw.next_frame(data, self.parsed)) is not None:
            opcode, payload, self.parsed = found
            if opcode == wsraw.OP_TEXT:
                self.frames.append(json.loads(payload))
            elif opcode == wsraw.OP_CLOSE:
                self.closed = True

    # -- hub streams -------------------------------------------------------------

    def base(self) -> tuple[int, int] | None:
        """(index of the last snapshot or resume, the seq deltas count from after it)."""
        for index in range(len(self.frames) - 1, -1, -1):
            frame = self.frames[index]
            if frame["type"] == "snapshot":
                return index, frame["seq"]
            if frame["type"] == "resumed":
                return index, frame["since"]
        return None

    def position(self) -> tuple[int, str] | None:
        """The seq and epoch a reconnect resumes from."""
        epoch, seq = None, None
        for frame in self.frames:
            if frame["type"] in ("snapshot", "resumed"):
                epoch, seq = frame.get("epoch"), frame["seq"]
            elif "seq" in frame and seq is not None:
                seq = frame["seq"]
        return None if seq is None or epoch is None else (seq, epoch)

    def last_seq(self) -> int | None:
        seq = None
        for frame in self.frames:
            if "seq" in frame:
                seq = frame["seq"]
        return seq

    # -- logs --------------------------------------------------------------------

    def cursor(self) -> str | None:
        for frame in reversed(self.frames):
            if "cursor" in frame:
                return frame["cursor"]
        return None


class Checker:
    """A daemon under test (maybe with gateways on a Redis), the views on them, and the
    checks."""

    def __init__(
        self,
        data_dir: Path,
        log_cap: int = 20_000,
        redis: Any = None,
        gateways: int = 0,
        max_connections: int = 200,
    ) -> None:
        broker = ("--broker", redis.url) if redis is not None else ()
        self.daemon = Daemon(
            data_dir,
            "--idle-timeout",
            "600",
            "--log-size-cap",
            str(log_cap),
            "--max-connections",
            str(max_connections),
            "--usage-interval",
            "0.25",
            *broker,
        )
        self.max_connections = max_connections
        self.redis = redis
        self.gateway_count = gateways
        self.gateways: list[Any] = []
        self.views: list[View] = []
        self.written = 0
        self.partial: dict[str, bytes] = {}
        self.stats = {
            "events": 0,
            "resyncs": 0,
            "resumes": 0,
            "gaps": 0,
            "lines": 0,
            "usage": 0,
        }
        if redis is not None:
            self.stats.update(kills=0, redis_restarts=0, stalls=0, moves=0)

    @property
    def url(self) -> str:
        return self.daemon.url

    @property
    def servers(self) -> list[Daemon]:
        """Where a client may connect: the control plane, then each gateway."""
        return [self.daemon, *self.gateways]

    async def start(self) -> None:
        from tests.redis import GatewayProcess

        await self.daemon.start()
        for _ in range(self.gateway_count):
            gateway = GatewayProcess(
                self.daemon.data_dir,
                self.redis.url,
                self.daemon.url,
                "--idle-timeout",
                "600",
                "--max-connections",
                str(self.max_connections),
            )
            await gateway.start()
            self.gateways.append(gateway)

    async def restart(self) -> None:
        """Stop the daemon (its children keep running) and start it again on the same port."""
        for view in self.views:
            view.pump()
        await self.daemon.stop()
        await self.daemon.start()

    async def stop(self) -> None:
        for view in self.views:
            view.client.abort()
        for gateway in self.gateways:
            await gateway.stop()
        await self.daemon.stop()

    # -- faults (with gateways) --------------------------------------------------------

    async def kill_gateway(self, index: int) -> None:
        """kill -9 a gateway, start it again on its port, and send each of its clients to
        another server, resuming where it was."""
        gateway = self.gateways[index]
        for view in self.views:
            view.pump()
        await gateway.stop(signal.SIGKILL)
        self.stats["kills"] += 1
        await gateway.start()
        for view in [v for v in self.views if v.via == index + 1]:
            await self.reconnect(view, via=(index + 2) % len(self.servers))

    async def restart_redis(self, keep_data: bool) -> None:
        """Stop Redis (saving its data or not), then start it again."""
        await self.redis.stop_async()
        if not keep_data:
            self.redis.wipe()
        await self.redis.start_async()
        self.stats["redis_restarts"] += 1

    async def stall_redis(self, seconds: float) -> None:
        """Freeze Redis (SIGSTOP) for a while: the network between it and everyone stalls."""
        self.redis.pause()
        self.stats["stalls"] += 1
        try:
            await sleep(seconds)
        finally:
            self.redis.resume()

    def db(self) -> sqlite3.Connection:
        db = sqlite3.connect(f"file:{self.daemon.data_dir / 'cp.db'}?mode=ro", uri=True)
        db.row_factory = sqlite3.Row
        return db

    # -- views ---------------------------------------------------------------------

    async def connect(
        self, kind: str, query: str = "", filters: dict | None = None, via: int = 0
    ) -> View:
        """Open a stream with a small receive buffer (so a paused client lags quickly), on
        the control plane (``via`` 0) or a gateway."""
        path = {"instances": "/ws/instances", "messages": "/ws/messages"}.get(kind, kind)
        full = f"{path}?{query}" if query else path
        via = via % len(self.servers)
        port = self.servers[via].port
        client = await raw.connect(port, rcvbuf=SMALL_RCVBUF)
        token = ("Authorization", f"Bearer {read_token(self.daemon.data_dir)}")
        client.write(wsraw.upgrade(full, f"127.0.0.1:{port}", [token]))
        await client.until(lambda c: b"\r\n\r\n" in c.data, timeout=10)
        head, _, rest = client.data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head[:200]
        client.data = rest
        view = View("logs" if "/logs" in path else kind, full, client, filters or {}, via=via)
        self.views.append(view)
        await wait_for(lambda: (view.pump(), view.frames)[1], timeout=10)
        return view

    async def reconnect(self, view: View, via: int | None = None) -> View:
        """Close ``view`` and resume it on a new connection (since/epoch, or its cursor), on
        the same server or on ``via``."""
        view.pump()
        view.client.abort()
        self.views.remove(view)
        if view.kind == "logs":
            cursor = view.cursor()
            target = view.path.split("?", 1)[0]
            query = f"cursor={cursor}" if cursor else "backlog=1000"
        else:
            target = view.kind
            parts = [f"{key}={value}" for key, value in view.filters.items()]
            position = view.position()
            if position is not None:
                parts += [f"since={position[0]}", f"epoch={position[1]}"]
            query = "&".join(parts)
        fresh = await self.connect(target, query, view.filters, view.via if via is None else via)
        fresh.frames = view.frames + fresh.frames  # one history per viewer, for the oracles
        self.stats["resumes"] += 1
        return fresh

    async def reconnect_all(self) -> None:
        for view in list(self.views):
            await self.reconnect(view)

    def pause(self, view: View) -> None:
        view.client.transport.pauseProducing()
        view.paused = True

    def unpause(self, view: View) -> None:
        view.client.transport.getHandle().setsockopt(
            raw.socket.SOL_SOCKET, raw.socket.SO_RCVBUF, 1 << 20
        )
        view.client.transport.resumeProducing()
        view.paused = False

    # -- the workload ----------------------------------------------------------------

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        if method == "GET":
            return await get_json(f"{self.url}/api{path}")
        return await post_json(f"{self.url}/api{path}", body)

    async def create(self, name: str) -> None:
        try:
            await create(self.url, name)
        except AssertionError:
            pass  # taken: a 409 is an answer too

    def pid_of(self, name: str) -> int | None:
        with self.db() as db:
            row = db.execute(
                "SELECT pid FROM instances WHERE name = ? AND archived_at IS NULL", (name,)
            ).fetchone()
        return row["pid"] if row else None

    def crash(self, name: str) -> None:
        pid = self.pid_of(name)
        if pid:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass

    def log_path(self, name: str) -> Path:
        return instance_log(self.daemon.data_dir, name, make=False)

    def write_lines(self, name: str, count: int, split_last: bool) -> None:
        """Append numbered lines to an instance's log, the last one possibly in two parts
        (its second half comes with the next write)."""
        path = self.log_path(name)
        if not path.parent.exists():
            return
        data = self.partial.pop(name, b"")
        for _ in range(count):
            self.written += 1
            data += b"L%07d %s\n" % (self.written, name.encode())
        if split_last and data:
            cut = len(data) - 5
            data, self.partial[name] = data[:cut], data[cut:]
        with open(path, "ab") as f:
            f.write(data)

    # -- quiet -----------------------------------------------------------------------

    def last_ids(self) -> tuple[int, int]:
        with self.db() as db:
            ids = dict(db.execute("SELECT name, seq FROM sqlite_sequence").fetchall())
        return ids.get("instance_events", 0), ids.get("message_events", 0)

    async def settle(self, timeout: float = 20.0) -> None:
        """Wait until no event was added for a second and every hub view has caught up."""
        for view in self.views:
            if view.paused:
                self.unpause(view)
        deadline = _now() + timeout
        last, quiet_since = self.last_ids(), _now()
        while _now() < deadline:
            await sleep(0.1)
            for view in self.views:
                view.pump()
            ids = self.last_ids()
            if ids != last:
                last, quiet_since = ids, _now()
                continue
            if _now() - quiet_since >= 1.0 and all(self._caught_up(v, ids) for v in self.views):
                await sleep(0.3)  # log batches are sent within 100 ms
                for view in self.views:
                    view.pump()
                return
        raise Violation(f"never quiet in {timeout}s: {self._describe()}")

    def _caught_up(self, view: View, ids: tuple[int, int]) -> bool:
        if view.kind == "logs" or view.closed:
            return True
        table = "instance_events" if view.kind == "instances" else "message_events"
        with self.db() as db:
            rows = db.execute(f"SELECT * FROM {table} ORDER BY id DESC LIMIT 2000")
            wanted = next((r["id"] for r in rows if accepts(view, table, dict(r))), 0)
        seq = view.last_seq()
        return seq is not None and seq >= wanted

    def _describe(self) -> str:
        return "; ".join(f"{v.kind} {v.path} last={v.last_seq()}" for v in self.views)

    # -- the oracles -------------------------------------------------------------------

    async def check(self) -> None:
        """Compare every view with the truth (call once the system is quiet)."""
        for view in self.views:
            self._seq_increases(view)
            if view.kind == "instances":
                await self._check_instances(view)
                self._check_rows(view, "instance_events")
            elif view.kind == "messages":
                self._check_rows(view, "message_events")
            else:
                self._check_log(view)

    def _seq_increases(self, view: View) -> None:
        last = None
        for frame in view.frames:
            if frame["type"] == "snapshot":
                self.stats["resyncs"] += bool(frame.get("resync"))
                last = frame["seq"]
            elif frame["type"] == "resumed":
                last = frame["since"]
            elif frame["type"] == "usage_changed":
                if "seq" in frame:
                    raise Violation(f"{view.path}: a usage_changed with a seq: {frame}")
                self.stats["usage"] += 1
            elif "seq" in frame:
                if last is not None and frame["seq"] <= last:
                    raise Violation(f"{view.path}: seq {frame['seq']} after {last}")
                last = frame["seq"]

    async def _check_instances(self, view: View) -> None:
        include = False  # the checker's views never ask for archived instances
        model: dict[str, dict] = {}
        for frame in view.frames:
            apply_instance_frame(model, frame, include)
        code, listed = await self.call("GET", f"/instances?include_archived={str(include).lower()}")
        keys = (
            "name",
            "status",
            "port",
            "pid",
            "started_at",
            "archived_at",
            "restarts",
            "last_exit",
        )
        truth = {i["id"]: {k: i[k] for k in keys} for i in listed}
        seen = {i: {k: m.get(k) for k in keys} for i, m in model.items()}
        if seen != truth:
            raise Violation(f"{view.path}: the view {seen} is not REST's {truth}")

    def _check_rows(self, view: View, table: str) -> None:
        base = view.base()
        if base is None:
            raise Violation(f"{view.path}: no snapshot")
        index, since = base
        received = [f for f in view.frames[index + 1 :] if "seq" in f]
        with self.db() as db:
            rows = db.execute(f"SELECT * FROM {table} WHERE id > ? ORDER BY id", (since,))
            expected = [dict(r) for r in rows if accepts(view, table, dict(r))]
        got = [f["seq"] for f in received]
        want = [r["id"] for r in expected]
        if got != want:
            raise Violation(f"{view.path}: after seq {since} got {got[:50]} want {want[:50]}")
        for frame, row in zip(received, expected, strict=True):
            if not matches(frame, row):
                raise Violation(f"{view.path}: frame {frame} is not its row {row}")
        self.stats["events"] += len(got)

    def _check_log(self, view: View) -> None:
        name = view.path.split("/")[3]
        on_disk = lines_on_disk(self.log_path(name))
        shown: list[int | str] = []
        for frame in view.frames:
            if frame["type"] == "backlog" and frame.get("gap"):
                shown = [GAP]  # told: the cursor's bytes are gone; a fresh tail follows
                self.stats["gaps"] += 1
            if frame["type"] in ("backlog", "lines"):
                shown += [int(m.group(1)) for line in frame["lines"] if (m := LINE.match(line))]
            elif frame["type"] == "gap":
                shown.append(GAP)
                self.stats["gaps"] += 1
            elif frame["type"] == "error":
                raise Violation(f"{view.path}: {frame}")
        numbers = [n for n in shown if isinstance(n, int)]
        if len(numbers) != len(set(numbers)):
            raise Violation(f"{view.path}: a line arrived twice")
        if numbers != sorted(numbers):
            raise Violation(f"{view.path}: lines out of order")
        self.stats["lines"] += len(numbers)
        if not numbers:
            return
        start = numbers[0]
        wanted = [n for n in on_disk if n >= start]
        missing = sorted(set(wanted) - set(numbers))
        if missing and GAP not in shown:
            raise Violation(
                f"{view.path}: {len(missing)} lines on disk never arrived: {missing[:20]}"
            )


def lines_on_disk(path: Path) -> list[int]:
    """Line numbers in the log and its older files, oldest first (complete lines only)."""
    numbers: list[int] = []
    for older in [*(path.with_name(f"{path.name}.{n}") for n in range(5, 0, -1)), path]:
        try:
            data = older.read_bytes()
        except FileNotFoundError:
            continue
        for raw_line in data.split(b"\n"):
            match = LINE.match(raw_line.decode("utf-8", "replace"))
            if match:
                numbers.append(int(match.group(1)))
    return numbers


def accepts(view: View, table: str, row: dict) -> bool:
    """Whether ``view``'s filter passes ``row`` (as the server's filter does)."""
    if table == "instance_events":
        include = any(f.get("include_archived") for f in view.frames if f["type"] == "snapshot")
        return include or row["type"] != "instance_deleted"
    instance = view.filters.get("instance")
    correlation = view.filters.get("correlation_id")
    if instance and instance not in (row["from_instance"], row["to_instance"]):
        return False
    return not correlation or row["correlation_id"] == correlation


def matches(frame: dict, row: dict) -> bool:
    """A delta is its stored row: same kind, same fields, same timestamp."""
    if frame["timestamp"] != row["timestamp"]:
        return False
    if "message_id" in row:
        return (frame["message_id"], frame["event"], frame["detail"]) == (
            row["message_id"],
            row["event"],
            row["detail"],
        )
    data = json.loads(row["data"])
    return frame["type"] == row["type"] and all(frame.get(k) == v for k, v in data.items())


def apply_instance_frame(model: dict[str, dict], frame: dict, include: bool) -> None:
    """The dashboard's model.js rules, in Python: the frames applied to a map by id."""
    kind = frame["type"]
    known = model.get(frame.get("id", ""))
    if kind == "snapshot":
        model.clear()
        for item in frame["instances"]:
            model[item["id"]] = dict(item)
    elif kind == "status_changed" and known is not None:
        known.update(pid=frame["pid"], started_at=frame["started_at"])
        known["status"] = "archived" if known.get("archived_at") else frame["status"]
        known.update({k: frame[k] for k in ("restarts", "last_exit") if k in frame})
    elif kind == "usage_changed":
        for entry in frame["instances"]:
            sampled = model.get(entry["id"])
            if sampled is None or sampled["status"] not in LIVE:
                raise Violation(f"usage of {entry['name']}, which the view has not live")
    elif kind == "instance_archived":
        if known is not None and include:
            known.update(archived_at=frame["timestamp"], status="archived")
        else:
            model.pop(frame["id"], None)
    elif kind in ("instance_created", "instance_unarchived"):
        model[frame["id"]] = {
            **(known or {}),
            "name": frame["name"],
            "status": frame["status"],
            "port": frame["port"],
            "pid": None,
            "started_at": None,
            "archived_at": None,
            "restarts": frame.get("restarts", known and known.get("restarts")),
            "last_exit": frame.get("last_exit", known and known.get("last_exit")),
        }
    elif kind == "instance_deleted":
        model.pop(frame["id"], None)


def _now() -> float:
    from twisted.internet import reactor

    return reactor.seconds()


def run(coroutine: Any) -> Any:
    """Run a coroutine on the test reactor from a synchronous Hypothesis rule."""
    import pytest_twisted

    return pytest_twisted.blockon(defer.ensureDeferred(coroutine))
