"""Shared followers of log files, for the log stream.

One :class:`LogWatcher` per followed file, however many viewers it has: it
owns the inotify watch on the file's directory (when inotify is available),
the 500 ms poll and the ``stat``, and notices growth, rotation by rename (a
new inode at the path) and truncation (the file shrank). Each viewer holds a
:class:`Cursor` — its own file generation and offset — and reads with
``pread`` only when it is ready to send, so a stuck viewer costs no memory and
loses nothing: the file is its buffer. A renamed file stays open until every
cursor has drained it, so no line written before a rotation is lost.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.filepath import FilePath

from cpstream.domain.logfiles import MAX_LINE, decode_line, tail_of

POLL_INTERVAL = 0.5
CHUNK = 256 * 1024
SEEN = 32


class Rotated:
    """Marker in a cursor's output: the file rotated; what follows is the new file."""

    def __repr__(self) -> str:
        return "ROTATED"


ROTATED = Rotated()


def split_lines(
    data: bytes, skipping: bool, max_line: int = MAX_LINE
) -> tuple[list[str], int, bool]:
    """Complete lines in ``data``, how many bytes they used, and the new ``skipping`` state.

    A trailing partial line is not consumed (it waits for its newline) unless
    it is already longer than ``max_line``: then it is sent cut, with a marker,
    and the rest of it is skipped up to its newline.
    """
    lines: list[str] = []
    position = 0
    while True:
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


class Cursor:
    """One viewer's place in a followed file.

    ``seen`` holds the last bytes before ``offset``: if they changed, the file was
    truncated and rewritten past our offset between two looks (copy-then-truncate
    racing with a fast writer), which the size alone cannot tell.
    """

    def __init__(
        self, watcher: LogWatcher, generation: int, offset: int, epoch: int, seen: bytes = b""
    ) -> None:
        self.watcher = watcher
        self.generation = generation
        self.offset = offset
        self.epoch = epoch
        self.seen = seen
        self.skipping = False

    def read(self, budget: int = CHUNK) -> list[Any]:
        """New complete lines (and ``ROTATED`` markers), reading at most ``budget`` bytes."""
        return self.watcher._read(self, budget)


class LogWatcher:
    """Follows one file for all its viewers."""

    log = Logger()

    def __init__(self, tails: LogTails, path: Path) -> None:
        self._tails = tails
        self.path = path
        self._viewers: dict[Any, Callable[[], None]] = {}
        self._files: dict[int, Any] = {}
        self._inodes: dict[int, int] = {}
        self.generation = 0
        self.epoch = 0
        self._size = 0
        self._check_scheduled = False
        self._open_current()
        self._poll = LoopingCall(self._checked)
        self._poll.clock = tails.clock
        self._poll.start(tails.poll_interval, now=False)

    # -- viewers -------------------------------------------------------------

    def add(
        self, viewer: Any, changed: Callable[[], None], backlog: int
    ) -> tuple[list[str], Cursor]:
        """Register a viewer: its backlog lines and a cursor just past them."""
        self._viewers[viewer] = changed
        current = self._files.get(self.generation)
        if current is None:
            return [], Cursor(self, self.generation, 0, self.epoch)
        lines, offset = tail_of(current, backlog)
        seen = os.pread(current.fileno(), min(SEEN, offset), max(0, offset - SEEN))
        return lines, Cursor(self, self.generation, offset, self.epoch, seen)

    def remove(self, viewer: Any, cursor: Cursor | None) -> None:
        self._viewers.pop(viewer, None)
        if cursor is not None:
            cursor.generation = -1
        self._release_old()
        if not self._viewers:
            self._stop()

    @property
    def viewers(self) -> int:
        return len(self._viewers)

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
                for changed in list(self._viewers.values()):
                    changed()
        except Exception:
            self.log.failure("checking {path} failed", path=str(self.path))

    def check(self) -> bool:
        """Stat the path; note growth, rename rotation and truncation. True if anything changed."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return False
        if self._inodes.get(self.generation) != stat.st_ino:
            self._open_current()
            return True
        if stat.st_size < self._size:
            self.epoch += 1
            self._size = stat.st_size
            return True
        if stat.st_size != self._size:
            self._size = stat.st_size
            return True
        return False

    def _open_current(self) -> None:
        try:
            f = open(self.path, "rb", buffering=0)
        except FileNotFoundError:
            return
        if self._files:
            self.generation += 1
        self._files[self.generation] = f
        self._inodes[self.generation] = os.fstat(f.fileno()).st_ino
        self._size = os.fstat(f.fileno()).st_size
        self._release_old()

    # -- reading -------------------------------------------------------------

    def _read(self, cursor: Cursor, budget: int) -> list[Any]:
        out: list[Any] = []
        while budget > 0:
            f = self._files.get(cursor.generation)
            if f is None:
                if cursor.generation < self.generation:
                    self._advance(cursor, out)
                    continue
                return out
            if cursor.generation == self.generation and self._rewritten(cursor, f.fileno()):
                cursor.epoch, cursor.offset, cursor.skipping = self.epoch, 0, False
                cursor.seen = b""
                out.append(ROTATED)
            want = min(budget, CHUNK)
            data = os.pread(f.fileno(), want, cursor.offset)
            lines, used, cursor.skipping = split_lines(data, cursor.skipping)
            out.extend(lines)
            if used:
                cursor.seen = (cursor.seen + data[max(0, used - SEEN) : used])[-SEEN:]
            cursor.offset += used
            budget -= max(used, 1)
            if used and len(data) == want:
                continue  # a full read: there may be more
            if cursor.generation < self.generation:
                tail = data[used:]
                if tail and not cursor.skipping:
                    out.append(decode_line(tail))
                self._advance(cursor, out)
                continue
            return out
        return out

    def _rewritten(self, cursor: Cursor, fd: int) -> bool:
        """Truncated since the cursor last read: smaller, or different before its offset."""
        if cursor.epoch != self.epoch or cursor.offset > os.fstat(fd).st_size:
            return True
        seen = cursor.seen
        return bool(seen) and os.pread(fd, len(seen), cursor.offset - len(seen)) != seen

    def _advance(self, cursor: Cursor, out: list[Any]) -> None:
        """The cursor finished a renamed file: go to the start of the current one."""
        cursor.generation, cursor.offset, cursor.skipping = self.generation, 0, False
        cursor.epoch, cursor.seen = self.epoch, b""
        out.append(ROTATED)
        self._release_old()

    def _release_old(self) -> None:
        """Close renamed files that no cursor still reads."""
        in_use = {c.generation for c in self._tails.cursors_of(self)}
        for generation in [g for g in self._files if g < self.generation and g not in in_use]:
            self._files.pop(generation).close()
            self._inodes.pop(generation, None)

    def _stop(self) -> None:
        if self._poll.running:
            self._poll.stop()
        for f in self._files.values():
            f.close()
        self._files.clear()
        self._tails._forget(self)


class LogTails:
    """All watchers, keyed by path; owns the inotify instance when there is one."""

    log = Logger()

    def __init__(self, clock: Any, inotify: Any = None, poll_interval: float = POLL_INTERVAL):
        self.clock = clock
        self.poll_interval = poll_interval
        self._inotify = inotify
        self._watchers: dict[Path, LogWatcher] = {}
        self._cursors: dict[Any, Cursor] = {}

    def follow(
        self, path: Path, viewer: Any, changed: Callable[[], None], backlog: int
    ) -> tuple[list[str], Cursor]:
        """Start following ``path`` for ``viewer``: its backlog and its cursor."""
        watcher = self._watchers.get(path)
        if watcher is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            watcher = self._watchers[path] = LogWatcher(self, path)
            self._watch_directory(watcher)
        lines, cursor = watcher.add(viewer, changed, backlog)
        self._cursors[viewer] = cursor
        return lines, cursor

    def unfollow(self, viewer: Any) -> None:
        cursor = self._cursors.pop(viewer, None)
        if cursor is not None:
            cursor.watcher.remove(viewer, cursor)

    def cursors_of(self, watcher: LogWatcher) -> list[Cursor]:
        return [c for c in self._cursors.values() if c.watcher is watcher]

    def watcher(self, path: Path) -> LogWatcher | None:
        return self._watchers.get(path)

    @property
    def watching(self) -> int:
        return len(self._watchers)

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
