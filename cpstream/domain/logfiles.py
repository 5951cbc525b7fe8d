"""Where each instance's log lives, how it rotates, and how it is read.

Children append to ``DATA/instances/ID/logs/daemon.log`` directly (by instance
id, so a new instance that takes an old one's name never sees its logs). The file
rotates by rename on every start (``daemon.log.1`` .. ``.5``) and by
copy-then-truncate when it outgrows its cap while the child holds it open.
The cap tells its listeners (the log tailers) what it copied, so that a
viewer behind the cap finishes the old bytes from the copy. Reading never
loads a whole file: tails are read backwards in blocks.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO, Protocol

KEEP = 5
SIZE_CAP = 16 * 1024 * 1024
MAX_LINE = 64 * 1024
CUT_MARKER = " [... line cut at 64 KiB]"
_BLOCK = 64 * 1024
# Copy-then-truncate copies what the child wrote meanwhile too, up to this many times.
_CATCH_UP = 4

Capped = Callable[[Path, Path, int], None]
Removed = Callable[[Path], None]


class HasLog(Protocol):
    """Anything with an instance's ``id`` and ``name``."""

    id: str
    name: str


def decode_line(raw: bytes, max_line: int = MAX_LINE) -> str:
    """One log line as text: invalid UTF-8 replaced, over-long lines cut with a marker."""
    if len(raw) > max_line:
        return raw[:max_line].decode("utf-8", "replace") + CUT_MARKER
    return raw.decode("utf-8", "replace")


def read_tail(path: Path, count: int, max_line: int = MAX_LINE) -> tuple[list[str], int]:
    """The last ``count`` complete lines of the file at ``path``; see :func:`tail_of`."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return [], 0
    with f:
        return tail_of(f, count, max_line)


def tail_of(f: BinaryIO, count: int, max_line: int = MAX_LINE) -> tuple[list[str], int]:
    """The last ``count`` complete lines of an open file and the offset just past them.

    Reads backwards from the end in blocks, never the whole file, counting the
    newlines of each block once (linear in what it reads); a partial last line
    (no newline yet) is left for later, so the offset points at its start.
    """
    fd = f.fileno()
    end = os.fstat(fd).st_size
    blocks: list[bytes] = []
    newlines, read, position = 0, 0, end
    limit = max(count, 1) * (max_line + 1)
    while position > 0 and newlines <= count and read <= limit:
        step = min(_BLOCK, position)
        position -= step
        block = os.pread(fd, step, position)
        blocks.append(block)
        newlines += block.count(b"\n")
        read += len(block)
    tail = b"".join(reversed(blocks))
    complete_end = tail.rfind(b"\n") + 1
    offset = end - len(tail) + complete_end
    raw_lines = tail[:complete_end].split(b"\n")[:-1]
    if position > 0:
        raw_lines = raw_lines[1:]  # may start mid-line
    kept = raw_lines[-count:] if count > 0 else []
    return [decode_line(line, max_line) for line in kept], offset


def read_page(path: Path, first: int, count: int, max_line: int = MAX_LINE) -> list[str]:
    """Complete lines ``first`` .. ``first + count - 1`` (0-based) from the start of the file."""
    lines: list[str] = []
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return lines
    with f:
        for number, raw in enumerate(f):
            if not raw.endswith(b"\n"):
                break
            if number >= first:
                lines.append(decode_line(raw[:-1], max_line))
                if len(lines) == count:
                    break
    return lines


def numbered(path: Path, number: int) -> Path:
    """``daemon.log.N``: the N-th older log beside ``path``."""
    return path.with_name(f"{path.name}.{number}")


class LogFiles:
    """The log directory layout and rotation for every instance."""

    def __init__(self, root: Path, keep: int = KEEP, size_cap: int = SIZE_CAP) -> None:
        self._root = root
        self.keep = keep
        self.size_cap = size_cap
        self._capped: list[Capped] = []
        self._removed: list[Removed] = []

    def path(self, instance: HasLog) -> Path:
        """The current log file of ``instance``."""
        return self._root / "instances" / instance.id / "logs" / "daemon.log"

    def adopt_named(self, instances: Iterable[HasLog]) -> None:
        """Move logs kept by name (before logs were kept by id) to their instance's id; of
        instances sharing a name, the newest (last given) takes them."""
        for instance in reversed(list(instances)):
            old = self._root / "instances" / instance.name
            new = self._root / "instances" / instance.id
            if old.is_dir() and not new.exists() and (old / "logs").is_dir():
                old.rename(new)

    def remove(self, instance: HasLog) -> None:
        """Delete every log of ``instance`` (it was deleted); tell the listeners."""
        path = self.path(instance)
        shutil.rmtree(path.parent.parent, ignore_errors=True)
        for listener in self._removed:
            listener(path)

    def when_removed(self, listener: Removed) -> None:
        """Call ``listener(path)`` after an instance's logs were removed."""
        self._removed.append(listener)

    def history(self, path: Path) -> list[Path]:
        """The log at ``path`` and its older files, newest first."""
        return [path, *(numbered(path, n) for n in range(1, self.keep + 1))]

    def when_capped(self, listener: Capped) -> None:
        """Call ``listener(path, copy, size)`` after each copy-then-truncate."""
        self._capped.append(listener)

    def open_for_child(self, instance: HasLog) -> int:
        """Rotate by rename, then open a fresh ``daemon.log`` for appending."""
        path = self.path(instance)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size > 0:
            self._shift(path)
            path.rename(numbered(path, 1))
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def cap(self, instance: HasLog) -> bool:
        """Copy-then-truncate the log if it passed the size cap; ``True`` if it did.

        The copy takes what the child appends while it is made, so only bytes
        written in the instant between the last look and the truncation can be
        lost (the child holds the file open, so a rename cannot rotate it).
        """
        path = self.path(instance)
        try:
            if path.stat().st_size <= self.size_cap:
                return False
        except FileNotFoundError:
            return False
        self._shift(path)
        copy = numbered(path, 1)
        spare = copy.with_name(copy.name + ".tmp")
        with open(path, "rb") as source, open(spare, "wb") as target:
            copied = 0
            for _ in range(_CATCH_UP):
                size = os.fstat(source.fileno()).st_size
                if size <= copied:
                    break
                copied += _copy_range(source.fileno(), target.fileno(), copied, size - copied)
            os.truncate(path, 0)
        spare.rename(copy)
        for listener in self._capped:
            listener(path, copy, copied)
        return True

    def _shift(self, path: Path) -> None:
        """Make room for a new ``.1``: ``.4`` -> ``.5`` and so on; the oldest goes."""
        numbered(path, self.keep).unlink(missing_ok=True)
        for number in range(self.keep - 1, 0, -1):
            older = numbered(path, number)
            if older.exists():
                older.rename(numbered(path, number + 1))


def _copy_range(source: int, target: int, offset: int, count: int) -> int:
    """Append ``count`` bytes of ``source`` from ``offset`` to ``target``; how many it did."""
    done = 0
    while done < count:
        sent = os.sendfile(target, source, offset + done, count - done)
        if sent == 0:
            break
        done += sent
    return done
