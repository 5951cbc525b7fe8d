"""Shared log followers on a task.Clock: growth, partial lines, rotation, sharing."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
from twisted.internet.task import Clock

from cpstream.domain import logfiles
from cpstream.domain.logfiles import CUT_MARKER, LogFiles
from cpstream.domain.logtail import ROTATED, BadCursor, Gap, LogTails, split_lines


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


def drain(cursor) -> list:
    """Everything the cursor can read now (a read stops at each file boundary)."""
    items: list = []
    while True:
        got = cursor.read()
        if not got:
            return items
        items += got


A = SimpleNamespace(id="instance-a", name="a")


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
    assert drain(cursor) == ["two", "three", "unfinished", ROTATED, "fresh"]
    assert tails.watcher(path).segments == [tails.watcher(path).live]


def test_truncation_restarts_from_the_top(clock, path):
    """A file that shrank (copy-then-truncate) gives ROTATED and then its new lines."""
    append(path, b"a\nb\n")
    tails = LogTails(clock)
    viewer = Viewer()
    _, cursor = tails.follow(path, viewer, viewer.changed, 0)
    os.truncate(path, 0)
    append(path, b"c\n")
    clock.advance(0.5)
    assert drain(cursor) == [ROTATED, "c"]
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
    assert cursor.read(budget=6000) == [ROTATED]
    first = cursor.read(budget=6000)
    assert len(first) == 1000
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
    assert drain(cursor) == [ROTATED, "truncated"]


def lines_of(items) -> list[str]:
    return [item for item in items if isinstance(item, str)]


def test_a_viewer_far_behind_reads_the_whole_renamed_file(clock, path):
    """A viewer more than a read budget behind at a rename gets every line of the old file,
    none cut (a short read is not the end of a renamed file)."""
    append(path, b"")
    tails = LogTails(clock)
    viewer = Viewer()
    _, cursor = tails.follow(path, viewer, viewer.changed, 0)
    old = [f"old {i:05d} " + "x" * 200 for i in range(8000)]
    append(path, "".join(line + "\n" for line in old).encode())
    os.rename(path, path.with_name("daemon.log.1"))
    append(path, b"new\n")
    clock.advance(0.5)
    items: list = []
    while True:
        got = cursor.read(budget=1000)
        if not got:
            break
        items += got
    assert items == [*old, ROTATED, "new"]


def test_the_size_cap_goes_through_the_tailer(clock, tmp_path):
    """A paused viewer behind a copy-then-truncate finishes the old bytes from the copy,
    then ROTATED, then the new ones: nothing lost, nothing twice."""
    logs = LogFiles(tmp_path, size_cap=1000)
    tails = LogTails(clock)
    logs.when_capped(tails.capped)
    fd = logs.open_for_child(A)
    path = logs.path(A)
    viewer = Viewer()
    _, cursor = tails.follow(path, viewer, viewer.changed, 0)
    before = [f"before {i:03d}" for i in range(200)]
    os.write(fd, "".join(line + "\n" for line in before).encode())
    assert logs.cap(A) is True
    os.write(fd, b"after 1\nafter 2\n")
    os.close(fd)
    clock.advance(0.5)
    assert drain(cursor) == [*before, ROTATED, "after 1", "after 2"]
    assert len(tails.watcher(path).segments) == 1


def test_a_line_split_by_the_cap_arrives_whole(clock, tmp_path):
    """The cap copies up to the end of the file, mid-line; the line is joined again."""
    logs = LogFiles(tmp_path, size_cap=10)
    tails = LogTails(clock)
    logs.when_capped(tails.capped)
    fd = logs.open_for_child(A)
    path = logs.path(A)
    viewer = Viewer()
    _, cursor = tails.follow(path, viewer, viewer.changed, 0)
    os.write(fd, b"first line\nsecond ha")
    assert cursor.read() == ["first line"]
    assert logs.cap(A) is True
    os.write(fd, b"lf\nthird\n")
    os.close(fd)
    assert drain(cursor) == [ROTATED, "second half", "third"]


def test_bytes_truncated_below_a_viewer_are_a_gap(clock, path):
    """A truncation by someone else below a paused viewer's unread bytes: Gap with the
    number of bytes lost, then ROTATED, then the new lines."""
    append(path, b"seen\n")
    tails = LogTails(clock)
    viewer = Viewer()
    _, cursor = tails.follow(path, viewer, viewer.changed, 0)
    append(path, b"never read\n")
    clock.advance(0.5)
    os.truncate(path, 0)
    append(path, b"new\n")
    clock.advance(0.5)
    assert drain(cursor) == [Gap("truncated", 11), ROTATED, "new"]


def test_a_cursor_resumes_right_after_its_token(clock, path):
    """A token resumes a new viewer right after the old one's last line, across a rename."""
    append(path, b"a\nb\n")
    tails = LogTails(clock, secret=b"k")
    first = Viewer()
    _, cursor = tails.follow(path, first, first.changed, 10)
    token = tails.token(cursor.position())
    tails.unfollow(first)
    append(path, b"c\n")
    os.rename(path, path.with_name("daemon.log.1"))
    append(path, b"d\n")
    second = Viewer()
    resumed = tails.resume(path, second, second.changed, token)
    assert resumed is not None and drain(resumed) == ["c", ROTATED, "d"]


def test_a_token_for_bytes_no_longer_on_disk_resolves_to_nothing(clock, path):
    """When the position's file is gone, resume says so (None): the caller reports a gap."""
    append(path, b"a\n")
    tails = LogTails(clock, secret=b"k")
    viewer = Viewer()
    _, cursor = tails.follow(path, viewer, viewer.changed, 10)
    token = tails.token(cursor.position())
    tails.unfollow(viewer)
    path.unlink()
    append(path, b"other\n")
    assert tails.resume(path, Viewer(), lambda: None, token) is None
    assert tails.watching == 0


@pytest.mark.parametrize("token", ["", "x", "AAAA", "!!notbase64!!", "A" * 44])
def test_a_token_that_is_not_ours_is_refused(clock, path, token):
    """Malformed or unsigned tokens raise BadCursor (the stream answers 4400)."""
    tails = LogTails(clock, secret=b"k")
    with pytest.raises(BadCursor):
        tails.resume(path, Viewer(), lambda: None, token)


def test_a_token_signed_with_another_secret_is_refused(clock, path):
    """A token from another database (another secret) is not one of ours."""
    append(path, b"a\n")
    other = LogTails(clock, secret=b"other")
    viewer = Viewer()
    _, cursor = other.follow(path, viewer, viewer.changed, 1)
    token = other.token(cursor.position())
    with pytest.raises(BadCursor):
        LogTails(clock, secret=b"k").resume(path, Viewer(), lambda: None, token)


def test_a_token_from_before_the_cap_resumes_in_the_copy(clock, tmp_path):
    """A position in the live file before a cap is found again in the cap's copy."""
    logs = LogFiles(tmp_path, size_cap=10)
    tails = LogTails(clock, secret=b"k")
    logs.when_capped(tails.capped)
    fd = logs.open_for_child(A)
    path = logs.path(A)
    os.write(fd, b"one\ntwo\n")
    viewer = Viewer()
    _, cursor = tails.follow(path, viewer, viewer.changed, 1)
    token = tails.token(cursor.position())
    tails.unfollow(viewer)
    os.write(fd, b"three\nfour\n")
    assert logs.cap(A) is True
    os.write(fd, b"five\n")
    os.close(fd)
    resumed = tails.resume(path, Viewer(), lambda: None, token)
    assert resumed is not None and drain(resumed) == ["three", "four", ROTATED, "five"]


def test_tail_of_reads_and_scans_each_byte_once(tmp_path, monkeypatch):
    """Reading a long tail copies and scans each block a bounded number of times
    (it was quadratic: every block re-joined and re-counted the whole tail)."""
    path = tmp_path / "daemon.log"
    append(path, b"".join(b"%05d " % i + b"y" * 10_000 + b"\n" for i in range(1000)))
    work = {"read": 0, "copied": 0}

    class Block(bytes):
        def __add__(self, other):
            work["copied"] += len(self) + len(other)
            return Block(bytes(self) + bytes(other))

        def count(self, *args):
            work["copied"] += len(self)
            return bytes.count(self, *args)

    real = os.pread

    def pread(fd, size, offset):
        data = real(fd, size, offset)
        work["read"] += len(data)
        return Block(data)

    monkeypatch.setattr(logfiles.os, "pread", pread)
    lines, _ = logfiles.read_tail(path, 1000)
    assert len(lines) == 1000
    assert work["copied"] <= 2 * work["read"], work
