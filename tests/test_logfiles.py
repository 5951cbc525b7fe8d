"""Log files: reading tails and pages, rotation by rename and by copy-then-truncate."""

from __future__ import annotations

import os
from types import SimpleNamespace

from cpstream.domain.logfiles import CUT_MARKER, LogFiles, read_page, read_tail

A = SimpleNamespace(id="3f6e0c1e-0000-4000-8000-00000000000a", name="a")


def write(path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as f:
        f.write(data)


def test_tail_returns_last_complete_lines(tmp_path):
    """The tail is the last N complete lines; a partial last line is left out."""
    path = tmp_path / "daemon.log"
    write(path, b"".join(b"line %d\n" % i for i in range(10)) + b"partial")
    lines, offset = read_tail(path, 3)
    assert lines == ["line 7", "line 8", "line 9"]
    assert offset == os.path.getsize(path) - len(b"partial")


def test_tail_of_a_large_file_spans_blocks(tmp_path):
    """Tails across many 64 KiB blocks come back whole and in order."""
    path = tmp_path / "daemon.log"
    write(path, b"".join(b"%06d %s\n" % (i, b"x" * 100) for i in range(20_000)))
    lines, offset = read_tail(path, 1000)
    assert len(lines) == 1000
    assert lines[0].startswith("019000 ") and lines[-1].startswith("019999 ")
    assert offset == os.path.getsize(path)


def test_tail_with_fewer_lines_than_asked(tmp_path):
    """Asking for more lines than exist returns them all."""
    path = tmp_path / "daemon.log"
    write(path, b"a\nb\n")
    assert read_tail(path, 100) == (["a", "b"], 4)
    assert read_tail(path, 0) == ([], 4)
    assert read_tail(tmp_path / "missing.log", 5) == ([], 0)


def test_invalid_utf8_is_replaced_and_long_lines_cut(tmp_path):
    """Bytes that are not UTF-8 are replaced; a line over 64 KiB is cut with a marker."""
    path = tmp_path / "daemon.log"
    write(path, b"ok \xff\xfe end\n" + b"y" * 70_000 + b"\n")
    lines, _ = read_tail(path, 2)
    assert lines[0] == "ok \ufffd\ufffd end"
    assert lines[1] == "y" * 65536 + CUT_MARKER


def test_page_reads_from_the_start(tmp_path):
    """Page mode returns lines offset .. offset+N-1 and stops at a partial line."""
    path = tmp_path / "daemon.log"
    write(path, b"".join(b"line %d\n" % i for i in range(5)) + b"partial")
    assert read_page(path, 1, 2) == ["line 1", "line 2"]
    assert read_page(path, 3, 10) == ["line 3", "line 4"]
    assert read_page(path, 9, 10) == []


def test_rotation_on_start_keeps_five(tmp_path):
    """Each start renames the old log to .1 and keeps at most five old logs."""
    logs = LogFiles(tmp_path)
    for generation in range(8):
        fd = logs.open_for_child(A)
        os.write(fd, b"generation %d\n" % generation)
        os.close(fd)
    folder = logs.path(A).parent
    assert sorted(p.name for p in folder.iterdir()) == [
        "daemon.log",
        *(f"daemon.log.{n}" for n in range(1, 6)),
    ]
    assert logs.path(A).read_bytes() == b"generation 7\n"
    assert (folder / "daemon.log.1").read_bytes() == b"generation 6\n"
    assert (folder / "daemon.log.5").read_bytes() == b"generation 2\n"


def test_size_cap_copies_then_truncates_in_place(tmp_path):
    """Past the cap the log is copied to .1 and truncated; the writer's fd keeps working."""
    logs = LogFiles(tmp_path, size_cap=100)
    fd = logs.open_for_child(A)
    os.write(fd, b"x" * 99 + b"\n")
    assert logs.cap(A) is False
    os.write(fd, b"more\n")
    inode = logs.path(A).stat().st_ino
    assert logs.cap(A) is True
    os.write(fd, b"after\n")
    os.close(fd)
    assert logs.path(A).stat().st_ino == inode
    assert logs.path(A).read_bytes() == b"after\n"
    assert logs.path(A).with_name("daemon.log.1").read_bytes() == b"x" * 99 + b"\nmore\n"


def test_logs_are_kept_by_instance_id_and_removed_with_it(tmp_path):
    """Two instances that share a name never share a log; removing one leaves the other."""
    logs = LogFiles(tmp_path)
    old = SimpleNamespace(id="old-id", name="twin")
    new = SimpleNamespace(id="new-id", name="twin")
    for instance, text in ((old, b"old secret\n"), (new, b"new\n")):
        fd = logs.open_for_child(instance)
        os.write(fd, text)
        os.close(fd)
    assert logs.path(new).read_bytes() == b"new\n"
    removed = []
    logs.when_removed(removed.append)
    logs.remove(old)
    assert not logs.path(old).parent.parent.exists() and logs.path(new).exists()
    assert removed == [logs.path(old)]


def test_logs_kept_by_name_move_to_the_newest_instance_of_that_name(tmp_path):
    """A data dir from before logs were kept by id: each name's logs go to its newest
    instance."""
    folder = tmp_path / "instances" / "a" / "logs"
    folder.mkdir(parents=True)
    (folder / "daemon.log").write_bytes(b"history\n")
    older, newer = SimpleNamespace(id="id-1", name="a"), SimpleNamespace(id="id-2", name="a")
    logs = LogFiles(tmp_path)
    logs.adopt_named([older, newer])
    assert logs.path(newer).read_bytes() == b"history\n" and not logs.path(older).exists()
