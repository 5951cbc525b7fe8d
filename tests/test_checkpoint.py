"""The WAL checkpoint runs in a pool thread, never inside a COMMIT on the reactor."""

from __future__ import annotations

from pathlib import Path

import pytest_twisted
from twisted.internet import reactor

from cpstream.domain.checkpoint import Checkpointer
from cpstream.domain.store import Store
from tests.support import wait_for

PAGE = 4096


def _write(store: Store, commits: int) -> None:
    for n in range(commits):
        with store.transaction():
            store.meta.set("filler", str(n))


def _wal_pages(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size // PAGE if wal.exists() else 0


def test_commits_never_checkpoint(tmp_path: Path) -> None:
    """3,000 commits leave the WAL past SQLite's 1,000-page automatic checkpoint untouched."""
    store = Store.open(tmp_path / "cp.db", autocheckpoint=False)
    _write(store, 3000)
    assert _wal_pages(store.path) > 2000
    store.close()


def test_commits_checkpoint_by_default(tmp_path: Path) -> None:
    """The control: SQLite's default checkpoints inside a COMMIT and keeps the WAL short."""
    store = Store.open(tmp_path / "cp.db")
    _write(store, 3000)
    assert _wal_pages(store.path) < 1100
    store.close()


@pytest_twisted.inlineCallbacks
def test_checkpointer_catches_up_in_a_thread(tmp_path: Path):
    """One pass from the thread pool copies every WAL frame into the database."""
    store = Store.open(tmp_path / "cp.db", autocheckpoint=False)
    _write(store, 1500)
    checkpointer = Checkpointer(store.path, reactor)
    busy, log, done = yield checkpointer._tick()
    assert (busy, done) == (0, log) and log > 1000
    assert checkpointer.truncated == 0
    yield checkpointer.stopService()
    store.close()


@pytest_twisted.inlineCallbacks
def test_checkpointer_truncates_past_its_cap(tmp_path: Path):
    """A WAL past the cap is truncated, so continuous writes cannot grow it without bound."""
    store = Store.open(tmp_path / "cp.db", autocheckpoint=False)
    _write(store, 500)
    checkpointer = Checkpointer(store.path, reactor, cap=100)
    yield checkpointer._tick()
    assert checkpointer.truncated == 1
    assert _wal_pages(store.path) == 0
    assert store.meta.get("filler") == "499"
    store.close()


@pytest_twisted.ensureDeferred
async def test_service_ticks_and_stops(tmp_path: Path) -> None:
    """Started, it checkpoints on its interval; stopped, it closes its connection."""
    store = Store.open(tmp_path / "cp.db", autocheckpoint=False)
    _write(store, 200)
    checkpointer = Checkpointer(store.path, reactor, interval=0.05)
    checkpointer.startService()
    await wait_for(lambda: checkpointer.checkpoints >= 2)
    await checkpointer.stopService()
    assert checkpointer._db is None
    store.close()


def test_the_daemon_checkpoints_off_the_reactor(cp) -> None:
    """The composed daemon runs a Checkpointer and its store's COMMITs never checkpoint."""
    service = cp.service
    assert [w for w in service.workers if isinstance(w, Checkpointer) and w.running]
    assert service.store._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
