"""Shared log followers on a task.Clock: growth, partial lines, rotation, sharing."""

from __future__ import annotations

import os

import pytest
from twisted.internet.task import Clock

from cpstream.domain.logfiles import CUT_MARKER
from cpstream.domain.logtail import ROTATED, LogTails, split_lines


class Viewer:
    """Stands for one stream connection: counts change notifications."""

    def __init__(self) -> None:
        self.changes = 0

    def changed(self) -> None:
        self.changes += 1


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def path(tmp_path):
    p = tmp_path / "instances" / "a" / "logs" / "daemon.log"
    p.parent.mkdir(parents=True)
    return p


def append(path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def test_split_lines_keeps_partial_lines_back():
    """Only complete lines are taken; the partial rest is not consumed."""
    assert split_lines(b"a\nb\npart", False) == (["a", "b"], 4, False)
    assert split_lines(b"", False) == ([], 0, False)


def test_split_lines_cuts_overlong_and_skips_their_rest():
    """A line longer than the cap is sent cut with a marker; its rest is skipped."""
    lines, used, skipping = split_lines(b"x" * 20, False, max_line=8)
    assert lines == ["x" * 8 + CUT_MARKER] and used == 20 and skipping
    lines, used, skipping = split_lines(b"xxx\nnext\n", True, max_line=8)
    assert lines == ["next"] and used == 9 and not skipping


def test_follow_gives_backlog_then_new_lines(clock, path):
    """A viewer gets the backlog, then only lines appended after it."""
    append(path, b"".join(b"old %d\n" % i for i in range(10)))
    tails = LogTails(clock)
    viewer = Viewer()
    backlog, cursor = tails.follow(path, viewer, viewer.changed, 3)
    assert backlog == ["old 7", "old 8", "old 9"]
    assert cursor.read() == []
    append(path, b"new 1\nnew")
    clock.advance(0.5)
    assert viewer.changes == 1
    assert cursor.read() == ["new 1"]
    append(path, b" 2\n")
    assert cursor.read() == ["new 2"]


def test_invalid_utf8_is_replaced(clock, path):
    """Bytes that are not UTF-8 are replaced, never an error."""
    tails = LogTails(clock)
    viewer = Viewer()
    _, cursor = tails.follow(path, viewer, viewer.changed, 0)
    append(path, b"bad \xc3\x28 bytes\n")
    clock.advance(0.5)
    assert cursor.read() == ["bad \ufffd( bytes"]


def test_rename_rotation_drains_the_old_file_first(clock, path):
    """Lines written just before a rename are read, then ROTATED, then the new file."""
    append(path, b"one\n")
    tails = LogTails(clock)
    viewer = Viewer()
    _, cursor = tails.follow(path, viewer, viewer.changed, 0)
    append(path, b"two\nthree\nunfinished")
    os.rename(path, path.with_name("daemon.log.1"))
    append(path, b"fresh\n")
    clock.advance(0.5)
    assert cursor.read() == ["two", "three", "unfinished", ROTATED, "fresh"]
    assert tails.watcher(path)._files.keys() == {1}


def test_truncation_restarts_from_the_top(clock, path):
    """A file that shrank (copy-then-truncate) gives ROTATED and then its new lines."""
    append(path, b"a\nb\n")
    tails = LogTails(clock)
    viewer = Viewer()
    _, cursor = tails.follow(path, viewer, viewer.changed, 0)
    os.truncate(path, 0)
    append(path, b"c\n")
    clock.advance(0.5)
    assert cursor.read() == [ROTATED, "c"]
    assert cursor.read() == []


def test_many_viewers_share_one_watcher(clock, path):
    """Viewers of one file share one watcher, each with its own offset."""
    append(path, b"x\n")
    tails = LogTails(clock)
    viewers = [Viewer() for _ in range(50)]
    cursors = [tails.follow(path, v, v.changed, 0)[1] for v in viewers]
    assert tails.watching == 1 and tails.watcher(path).viewers == 50
    assert len(clock.getDelayedCalls()) == 1
    append(path, b"y\n")
    clock.advance(0.5)
    assert all(v.changes == 1 for v in viewers)
    assert cursors[0].read() == ["y"]
    append(path, b"z\n")
    assert cursors[0].read() == ["z"] and cursors[1].read() == ["y", "z"]


def test_watcher_stops_with_its_last_viewer(clock, path):
    """When the last viewer leaves, the poll and the file handles go."""
    tails = LogTails(clock)
    a, b = Viewer(), Viewer()
    tails.follow(path, a, a.changed, 0)
    tails.follow(path, b, b.changed, 0)
    tails.unfollow(a)
    assert tails.watching == 1
    tails.unfollow(b)
    assert tails.watching == 0 and clock.getDelayedCalls() == []


def test_a_file_that_appears_later_is_followed_from_its_start(clock, path):
    """Following a log that does not exist yet waits for it and reads it whole."""
    tails = LogTails(clock)
    viewer = Viewer()
    backlog, cursor = tails.follow(path, viewer, viewer.changed, 100)
    assert backlog == []
    append(path, b"first\n")
    clock.advance(0.5)
    assert viewer.changes == 1 and cursor.read() == ["first"]


def test_reading_is_bounded_by_the_budget(clock, path):
    """One read returns at most about its budget; the rest waits for the next read."""
    append(path, b"".join(b"%05d\n" % i for i in range(10_000)))
    tails = LogTails(clock)
    viewer = Viewer()
    _, cursor = tails.follow(path, viewer, viewer.changed, 0)
    os.truncate(path, 0)
    clock.advance(0.5)
    append(path, b"".join(b"%05d\n" % i for i in range(10_000)))
    first = cursor.read(budget=6000)
    assert first[0] is ROTATED and len(first) == 1001
    rest = cursor.read(budget=10**9)
    assert rest[0] == "01000" and rest[-1] == "09999" and len(rest) == 9000


def test_truncation_hidden_by_fast_regrowth_is_still_noticed(clock, path):
    """Truncated and rewritten past the old size between two looks: still ROTATED."""
    append(path, b"after\n")
    tails = LogTails(clock)
    viewer = Viewer()
    _, cursor = tails.follow(path, viewer, viewer.changed, 0)
    os.truncate(path, 0)
    append(path, b"truncated\n")
    clock.advance(0.5)
    assert cursor.read() == [ROTATED, "truncated"]
