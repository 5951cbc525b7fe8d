"""Shared followers of log files, for the log stream: every byte once, in order, or a gap.

One :class:`LogWatcher` per followed file, however many viewers it has: it
owns the inotify watch on the file's directory (when inotify is available),
the 500 ms poll and the ``stat``. A log is a chain of :class:`Segment` s,
oldest first: files renamed by a rotation (kept open until every viewer has
read them), copies made by the size cap (which the viewers behind the cap
finish before going on), and the live file. Each viewer holds a
:class:`Cursor` — a segment and an offset — and reads with ``pread`` only
when it is ready to send, so a stuck viewer costs no memory and loses
nothing: the file is its buffer.

What a cursor reads: complete lines (``str``), :data:`ROTATED` between two
segments, and a :class:`Gap` when bytes it had not read are gone (the live
file truncated or rewritten by someone else below its offset). A line is never
cut except by the long-line cap: a line the size cap split between the copy
and the live file is joined again.

A cursor's position is an opaque token (:meth:`LogTails.token`) naming the
file by inode and the bytes before the offset by a hash, signed, so that a
viewer can resume across rotations and restarts (:meth:`LogTails.resume`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.filepath import FilePath

from cpstream.domain.errors import Invalid
from cpstream.domain.logfiles import KEEP, MAX_LINE, decode_line, numbered, tail_of
from cpstream.domain.meter import Meter

POLL_INTERVAL = 0.5
CHUNK = 256 * 1024
SEEN = 64
TOKEN = struct.Struct("!BQQ8s")
TOKEN_VERSION = 1
MAC_SIZE = 8


class Rotated:
    """Marker in a cursor's output: one file ended; what follows is the next one."""

    def __repr__(self) -> str:
        return "ROTATED"


ROTATED = Rotated()


class Gap:
    """Marker in a cursor's output: at least ``lost_bytes`` it had not read are gone."""

    def __init__(self, reason: str, lost_bytes: int) -> None:
        self.reason = reason
        self.lost_bytes = lost_bytes

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Gap) and (self.reason, self.lost_bytes) == (
            other.reason,
            other.lost_bytes,
        )

    def __repr__(self) -> str:
        return f"Gap({self.reason!r}, {self.lost_bytes})"


class BadCursor(Invalid):
    """A cursor token that is not one of ours."""


def split_lines(
    data: bytes, skipping: bool, max_line: int = MAX_LINE, max_lines: int | None = None
) -> tuple[list[str], int, bool]:
    """Complete lines in ``data`` (at most ``max_lines``), how many bytes they used, and
    the new ``skipping`` state.

    A trailing partial line is not consumed (it waits for its newline) unless
    it is already longer than ``max_line``: then it is sent cut, with a marker,
    and the rest of it is skipped up to its newline.
    """
    lines: list[str] = []
    position = 0
    while max_lines is None or len(lines) < max_lines:
        newline = data.find(b"\n", position)
        if newline == -1:
            rest = len(data) - position
            if skipping:
                return lines, len(data), True
            if rest > max_line:
                lines.append(decode_line(data[position:], max_line))
                return lines, len(data), True
            return lines, position, False
        if skipping:
            skipping = False
        else:
            lines.append(decode_line(data[position:newline], max_line))
        position = newline + 1
    return lines, position, skipping


def fingerprint(before: bytes) -> bytes:
    """What a token remembers of the bytes before a position."""
    return hashlib.blake2b(before, digest_size=8).digest()


class Segment:
    """One file's bytes in a log's chain: the live file, a renamed file, or a cap's copy.

    ``end`` is the known size of a cap's copy (``None``: read to the end of the
    file); ``joins`` says the next segment continues this one's last line.
    ``truncations`` counts shrinks of the live file by someone else, and
    ``lost_to`` is the size it had before the last one.
    """

    def __init__(self, file: Any, inode: int) -> None:
        self.file = file
        self.inode = inode
        self.end: int | None = None
        self.joins = False
        self.next: Segment | None = None
        self.truncations = 0
        self.lost_to = 0

    def size(self) -> int:
        return self.end if self.end is not None else os.fstat(self.file.fileno()).st_size

    def before(self, offset: int) -> bytes:
        """The (at most ``SEEN``) bytes before ``offset``."""
        start = max(0, offset - SEEN)
        return os.pread(self.file.fileno(), offset - start, start)


class Cursor:
    """One viewer's place in a followed log: a segment, an offset, and what it has seen.

    ``seen`` holds the last bytes before ``offset``: if they changed, the file was
    truncated and rewritten past our offset between two looks, which the size
    alone cannot tell. ``carry`` holds the start of a line the cap split, until
    the rest of it arrives in the next segment.
    """

    def __init__(
        self, watcher: LogWatcher, segment: Segment | None, offset: int, seen: bytes = b""
    ) -> None:
        self.watcher = watcher
        self.segment = segment
        self.offset = offset
        self.seen = seen
        self.skipping = False
        self.carry = b""
        self.truncations = segment.truncations if segment is not None else 0

    def read(self, budget: int = CHUNK, max_lines: int | None = None) -> list[Any]:
        """New complete lines (at most ``max_lines``), ``ROTATED`` and ``Gap`` markers,
        reading about ``budget`` bytes."""
        return self.watcher._read(self, budget, max_lines)

    def position(self) -> tuple[int, int, bytes]:
        """Where the cursor is: the file's inode, the offset, the bytes seen before it."""
        inode = self.segment.inode if self.segment is not None else 0
        return inode, self.offset, self.seen

    def _moved(self, segment: Segment | None, offset: int = 0) -> None:
        self.segment, self.offset, self.seen = segment, offset, b""
        self.skipping = False
        self.truncations = segment.truncations if segment is not None else 0


class LogWatcher:
    """Follows one file for all its viewers."""

    log = Logger()

    def __init__(self, tails: LogTails, path: Path) -> None:
        self._tails = tails
        self.path = path
        self._viewers: dict[Any, Callable[[], None]] = {}
        self.live: Segment | None = None
        self.segments: list[Segment] = []
        self._size = 0
        self._tail = b""
        self._check_scheduled = False
        self._open_live()
        self._poll = LoopingCall(self._checked)
        self._poll.clock = tails.clock
        self._poll.start(tails.poll_interval, now=False)

    # -- viewers -------------------------------------------------------------

    def add(
        self, viewer: Any, changed: Callable[[], None], backlog: int
    ) -> tuple[list[str], Cursor]:
        """Register a viewer: its backlog lines and a cursor just past them."""
        self._viewers[viewer] = changed
        live = self.live
        if live is None:
            return [], Cursor(self, None, 0)
        lines, offset = tail_of(live.file, backlog)
        return lines, Cursor(self, live, offset, live.before(offset))

    def attach(self, viewer: Any, changed: Callable[[], None], cursor: Cursor) -> None:
        """Register a viewer that resumes at ``cursor``."""
        self._viewers[viewer] = changed

    def remove(self, viewer: Any, cursor: Cursor | None) -> None:
        self._viewers.pop(viewer, None)
        if cursor is not None:
            cursor.segment = None
        self._release_old()
        if not self._viewers:
            self._stop()

    @property
    def viewers(self) -> int:
        return len(self._viewers)

    def viewer_list(self) -> list[Any]:
        return list(self._viewers)

    # -- noticing changes ----------------------------------------------------

    def notified(self, ignored: Any, filepath: FilePath, mask: int) -> None:
        """An inotify event in the directory: check once this reactor turn."""
        if filepath.basename() != self.path.name.encode() and filepath.basename() != self.path.name:
            return
        if not self._check_scheduled:
            self._check_scheduled = True
            self._tails.clock.callLater(0, self._checked)

    def _checked(self) -> None:
        self._check_scheduled = False
        try:
            if self.check():
                self.changed()
        except Exception:
            self.log.failure("checking {path} failed", path=str(self.path))

    def changed(self) -> None:
        """Tell every viewer there may be something to read."""
        for changed in list(self._viewers.values()):
            changed()

    def check(self) -> bool:
        """Stat the path; note growth, rename rotation and truncation. True if anything changed."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return False
        if self.live is None or self.live.inode != stat.st_ino:
            self._open_live()
            return True
        if stat.st_size < self._size or self.live.before(self._size) != self._tail:
            self.live.truncations += 1
            self.live.lost_to = self._size
            self._sized(stat.st_size)
            return True
        if stat.st_size != self._size:
            self._sized(stat.st_size)
            return True
        return False

    def _sized(self, size: int) -> None:
        """Remember the live file's size and the bytes before it, to notice a rewrite."""
        self._size = size
        self._tail = self.live.before(size) if self.live is not None else b""

    def _open_live(self) -> None:
        try:
            f = open(self.path, "rb", buffering=0)
        except FileNotFoundError:
            return
        stat = os.fstat(f.fileno())
        segment = Segment(f, stat.st_ino)
        previous, self.live = self.live, segment
        self._sized(stat.st_size)
        self.segments.append(segment)
        if previous is not None:
            previous.next = segment
        for cursor in self._tails.cursors_of(self):
            if cursor.segment is None:
                cursor._moved(segment)
        self._release_old()

    def capped(self, copy: Path, size: int) -> None:
        """The size cap copied the live file's first ``size`` bytes to ``copy`` and truncated it.

        The live segment becomes that copy, so every cursor finishes the bytes it
        had not read from there; a new live segment continues on the same file.
        """
        live = self.live
        if live is None:
            return
        f = open(copy, "rb", buffering=0)
        segment = Segment(live.file, live.inode)
        live.file, live.inode = f, os.fstat(f.fileno()).st_ino
        live.end, live.joins, live.next = size, True, segment
        self.live = segment
        self.segments.append(segment)
        self._sized(os.fstat(segment.file.fileno()).st_size)
        self._release_old()
        self.changed()

    # -- reading -------------------------------------------------------------

    def _read(self, cursor: Cursor, budget: int, max_lines: int | None = None) -> list[Any]:
        """Lines of one segment, or the markers that end it, never both across a boundary:
        a read stops before a boundary it reaches with lines in hand, and right after
        the markers it emits, so the cursor's position always follows the last item."""
        out: list[Any] = []
        while budget > 0:
            segment = cursor.segment
            if segment is None:
                return out
            live = segment is self.live
            if live and self._rewritten(cursor, segment):
                if not out:
                    self._restart(cursor, segment, out)
                return out
            end = segment.size()
            if cursor.offset >= end and not live:
                if not out:
                    self._advance(cursor, segment, out)
                return out
            room = None if max_lines is None else max_lines - len(out)
            if room == 0:
                return out
            data = self._pread(segment, cursor.offset, min(budget, CHUNK, end - cursor.offset))
            carried = cursor.carry
            lines, used, skipping = split_lines(carried + data, cursor.skipping, MAX_LINE, room)
            whole = min(MAX_LINE + 1, end - cursor.offset)
            if used == 0 and len(data) < whole:
                # No newline within the budget: read one whole line's worth, so that a
                # small budget still makes progress (a longer line is cut).
                data = self._pread(segment, cursor.offset, whole)
                lines, used, skipping = split_lines(carried + data, cursor.skipping, MAX_LINE, room)
            if used == 0:
                if not live and not out:
                    self._advance(cursor, segment, out)  # an old segment ends mid-line
                return out  # on the live file, a partial line waits for its newline
            cursor.skipping = skipping
            out.extend(lines)
            consumed = used - len(carried)
            cursor.carry = b""
            cursor.seen = (cursor.seen + data[max(0, consumed - SEEN) : consumed])[-SEEN:]
            cursor.offset += consumed
            self._tails.meter.count("log_bytes", consumed)
            budget -= used
        return out

    @staticmethod
    def _pread(segment: Segment, offset: int, size: int) -> bytes:
        return os.pread(segment.file.fileno(), size, offset) if size > 0 else b""

    @staticmethod
    def _rewritten(cursor: Cursor, segment: Segment) -> bool:
        """Truncated since the cursor last read: smaller, or different before its offset."""
        fd = segment.file.fileno()
        if cursor.truncations != segment.truncations or cursor.offset > os.fstat(fd).st_size:
            return True
        seen = cursor.seen
        return bool(seen) and os.pread(fd, len(seen), cursor.offset - len(seen)) != seen

    @staticmethod
    def _restart(cursor: Cursor, segment: Segment, out: list[Any]) -> None:
        """The live file was truncated under the cursor: a gap for the bytes it had not
        read (when there were any), ROTATED, then the file from its start."""
        if cursor.truncations != segment.truncations:
            lost = max(0, segment.lost_to - cursor.offset)
            if lost:
                out.append(Gap("truncated", lost))
        out.append(ROTATED)
        cursor._moved(segment)
        cursor.carry = b""

    def _advance(self, cursor: Cursor, segment: Segment, out: list[Any]) -> None:
        """The cursor finished an old segment: on to the next one."""
        rest = max(0, segment.size() - cursor.offset)
        tail = os.pread(segment.file.fileno(), rest, cursor.offset)
        if segment.joins:
            skipping = cursor.skipping
            carry = b"" if skipping else cursor.carry + tail
        else:
            if (cursor.carry or tail) and not cursor.skipping:
                out.append(decode_line(cursor.carry + tail))
            carry, skipping = b"", False
        cursor._moved(segment.next)
        cursor.carry, cursor.skipping = carry, skipping
        out.append(ROTATED)
        self._release_old()

    def _release_old(self) -> None:
        """Close old segments that no cursor still reads."""
        in_use = {id(c.segment) for c in self._tails.cursors_of(self)}
        for segment in [s for s in self.segments if s is not self.live and id(s) not in in_use]:
            segment.file.close()
            self.segments.remove(segment)

    def _stop(self) -> None:
        if self._poll.running:
            self._poll.stop()
        for segment in self.segments:
            segment.file.close()
        self.segments.clear()
        self.live = None
        self._tails._forget(self)

    # -- resuming ------------------------------------------------------------

    def locate(self, inode: int, offset: int, print_: bytes) -> Cursor | None:
        """A cursor at a position in this log's files still on disk, or ``None``."""
        self.check()
        files = [p for p in reversed(self._tails.history(self.path)) if p.exists()]
        found = self._find(files, inode, offset, print_)
        if found is None:
            return None
        index, f = found
        segment = self._chain(files[index:], f)
        cursor = Cursor(self, segment, offset, segment.before(offset))
        return cursor

    def _find(
        self, files: list[Path], inode: int, offset: int, print_: bytes
    ) -> tuple[int, Any] | None:
        """The file (oldest first) holding the position: by inode, else (a cap's copy)
        by the bytes before it."""
        for by_inode in (True, False):
            for index, path in enumerate(files):
                try:
                    f = open(path, "rb", buffering=0)
                except FileNotFoundError:
                    continue
                stat = os.fstat(f.fileno())
                if (
                    (stat.st_ino == inode) == by_inode
                    and stat.st_size >= offset
                    and fingerprint(os.pread(f.fileno(), min(SEEN, offset), max(0, offset - SEEN)))
                    == print_
                ):
                    return index, f
                f.close()
        return None

    def _chain(self, files: list[Path], first: Any) -> Segment:
        """Segments from ``first`` (the oldest file, open) to the live one, sharing the
        watcher's segments where it already has them."""
        known = {s.inode: s for s in self.segments}
        head: Segment | None = None
        previous: Segment | None = None
        for index, path in enumerate(files):
            f = first if index == 0 else open(path, "rb", buffering=0)
            inode = os.fstat(f.fileno()).st_ino
            existing = known.get(inode)
            if existing is not None:
                if f is not existing.file:
                    f.close()
                segment = existing
            else:
                segment = Segment(f, inode)
                self.segments.insert(0, segment)
            if previous is not None and previous is not segment:
                previous.next = segment
            head = head or segment
            if existing is not None:
                break
            previous = segment
        assert head is not None
        if previous is not None and previous.next is None and previous is not self.live:
            previous.next = self.live
        return head


class LogTails:
    """All watchers, keyed by path; owns the inotify instance when there is one."""

    log = Logger()

    def __init__(
        self,
        clock: Any,
        inotify: Any = None,
        poll_interval: float = POLL_INTERVAL,
        secret: bytes = b"",
        keep: int = KEEP,
        meter: Meter | None = None,
    ):
        self.clock = clock
        self.meter = meter if meter is not None else Meter()  # counts the bytes viewers read
        self.poll_interval = poll_interval
        self._inotify = inotify
        self._secret = secret
        self._keep = keep
        self._watchers: dict[Path, LogWatcher] = {}
        self._cursors: dict[Any, Cursor] = {}

    def follow(
        self, path: Path, viewer: Any, changed: Callable[[], None], backlog: int
    ) -> tuple[list[str], Cursor]:
        """Start following ``path`` for ``viewer``: its backlog and its cursor."""
        lines, cursor = self._watcher(path).add(viewer, changed, backlog)
        self._cursors[viewer] = cursor
        return lines, cursor

    def resume(
        self, path: Path, viewer: Any, changed: Callable[[], None], token: str
    ) -> Cursor | None:
        """Follow ``path`` from the position of ``token``; ``None`` if that position is
        no longer on disk. :class:`BadCursor` if the token is not one of ours."""
        inode, offset, print_ = self._decode(token)
        watcher = self._watcher(path)
        cursor = watcher.locate(inode, offset, print_)
        if cursor is None:
            if not watcher.viewers:
                watcher._stop()
            return None
        watcher.attach(viewer, changed, cursor)
        self._cursors[viewer] = cursor
        return cursor

    def unfollow(self, viewer: Any) -> None:
        cursor = self._cursors.pop(viewer, None)
        if cursor is not None:
            cursor.watcher.remove(viewer, cursor)

    def capped(self, path: Path, copy: Path, size: int) -> None:
        """The size cap copied ``path`` to ``copy`` (``size`` bytes) and truncated it."""
        watcher = self._watchers.get(path)
        if watcher is not None:
            watcher.capped(copy, size)

    def removed(self, path: Path) -> None:
        """The log at ``path`` was deleted with its instance: tell each of its viewers
        (``log_removed()``)."""
        watcher = self._watchers.get(path)
        if watcher is None:
            return
        for viewer in watcher.viewer_list():
            gone = getattr(viewer, "log_removed", None)
            if gone is not None:
                gone()

    def history(self, path: Path) -> list[Path]:
        """``path`` and its older files, newest first."""
        return [path, *(numbered(path, n) for n in range(1, self._keep + 1))]

    def cursors_of(self, watcher: LogWatcher) -> list[Cursor]:
        return [c for c in self._cursors.values() if c.watcher is watcher]

    def watcher(self, path: Path) -> LogWatcher | None:
        return self._watchers.get(path)

    @property
    def watching(self) -> int:
        return len(self._watchers)

    # -- tokens ----------------------------------------------------------------

    def token(self, position: tuple[int, int, bytes]) -> str:
        """The opaque, signed form of a cursor's :meth:`~Cursor.position`."""
        inode, offset, seen = position
        payload = TOKEN.pack(TOKEN_VERSION, inode, offset, fingerprint(seen))
        raw = payload + self._mac(payload)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def _decode(self, token: str) -> tuple[int, int, bytes]:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, TypeError):
            raise BadCursor("cursor is not one of ours") from None
        payload, mac = raw[: TOKEN.size], raw[TOKEN.size :]
        if len(raw) != TOKEN.size + MAC_SIZE or not hmac.compare_digest(mac, self._mac(payload)):
            raise BadCursor("cursor is not one of ours")
        version, inode, offset, print_ = TOKEN.unpack(payload)
        if version != TOKEN_VERSION:
            raise BadCursor("cursor is not one of ours")
        return inode, offset, print_

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()[:MAC_SIZE]

    # -- watchers ----------------------------------------------------------------

    def _watcher(self, path: Path) -> LogWatcher:
        watcher = self._watchers.get(path)
        if watcher is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            watcher = self._watchers[path] = LogWatcher(self, path)
            self._watch_directory(watcher)
        return watcher

    def _watch_directory(self, watcher: LogWatcher) -> None:
        if self._inotify is None:
            return
        from twisted.internet import inotify

        mask = (
            inotify.IN_MODIFY
            | inotify.IN_CREATE
            | inotify.IN_MOVED_FROM
            | inotify.IN_MOVED_TO
            | inotify.IN_DELETE
            | inotify.IN_CLOSE_WRITE
        )
        try:
            self._inotify.watch(
                FilePath(str(watcher.path.parent)), mask, callbacks=[watcher.notified]
            )
        except Exception:
            self.log.failure("inotify watch failed; polling {path}", path=str(watcher.path))

    def _forget(self, watcher: LogWatcher) -> None:
        self._watchers.pop(watcher.path, None)
        if self._inotify is not None:
            try:
                self._inotify.ignore(FilePath(str(watcher.path.parent)))
            except KeyError:
                pass
