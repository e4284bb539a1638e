"""The store's durability: every store returns only after the commit that holds its message,
failures leave nothing to deliver, and the journal repairs what a crash lost."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from reference_server import spool as spool_module
from reference_server.headers import ControlValues
from reference_server.spool import Spool, Submission, read_events

from ..support import delivered


def _submission(i: int, recipients: tuple[str, ...] = ("a@sink.test",)) -> Submission:
    ids = tuple(f"email_{i:04d}_{n}" for n in range(len(recipients)))
    return Submission("probe@acme.test", recipients, ids, "t", "k", ControlValues())


def _body(i: int) -> bytes:
    return b"Subject: %d\r\n\r\nbody %d\r\n" % (i, i)


def _journal(root: Path) -> dict[str, bytes]:
    """The journal's bodies by their first target's file name, read as another process would."""
    db = sqlite3.connect(root / "events.sqlite3")
    try:
        rows = db.execute("SELECT targets, body FROM journal").fetchall()
    finally:
        db.close()
    return {Path(__import__("json").loads(t)[0]).name: bytes(b) for t, b in rows}


def _eventually(condition: Callable[[], bool], timeout: float = 10) -> None:
    """Polls for what a spool thread does a moment later; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.02)


def _copies(root: Path) -> list[Path]:
    return sorted((root / "maildir").glob("*/new/*"))


def test_every_store_returns_after_the_commit_that_holds_its_message(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    store = Spool(root, sync_interval=3600)  # no sync round: the journal keeps every body
    commits: list[tuple[float, float, set[str]]] = []
    real_commit = store._commit

    def commit(jobs: list[Any]) -> None:
        started = time.monotonic()
        time.sleep(0.02)  # a slow disk, so stores pile up behind one commit
        real_commit(jobs)
        ids = {job.submission.ids[0] for job in jobs}
        commits.append((started, time.monotonic(), ids))

    store._commit = commit  # type: ignore[method-assign]
    returned: dict[str, tuple[float, Path]] = {}

    def one(i: int) -> None:
        paths = store.store(_submission(i), [_body(i)])
        returned[f"email_{i:04d}_0"] = (time.monotonic(), paths[0])
        # Durable at return: the journal, read by another connection, holds the exact bytes.
        assert _journal(root)[paths[0].name] == _body(i)
        assert delivered(paths[0]).read_bytes() == _body(i)

    try:
        with ThreadPoolExecutor(max_workers=20) as pool:
            list(pool.map(one, range(60)))
    finally:
        store._commit = real_commit  # type: ignore[method-assign]
        store.close()
    assert 1 <= len(commits) < 60  # shared: fewer commits (syncs) than stores
    for email_id, (at, _) in returned.items():
        holding = [end for _, end, ids in commits if email_id in ids]
        assert len(holding) == 1 and holding[0] <= at
    assert len(read_events(root / "events.sqlite3")) == 60
    assert len(_copies(root)) == 60
    assert _journal(root) == {}  # close() synced the copies and let the journal go


def test_a_failed_commit_leaves_nothing_to_deliver(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    store = Spool(root)

    def locked(jobs: object) -> None:
        raise sqlite3.OperationalError("database is locked")

    store._commit = locked  # type: ignore[method-assign]
    try:
        with pytest.raises(sqlite3.OperationalError):
            store.store(_submission(1), [_body(1)])
    finally:
        store.close()
    # The client is told 451: no copy to be delivered, now or by the journal at the next start.
    assert _copies(root) == []
    assert list(root.glob("maildir/*/tmp/*")) == []
    assert read_events(root / "events.sqlite3") == []
    assert _journal(root) == {}


def test_a_copy_that_cannot_be_written_is_tried_again_until_it_can(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "spool"
    store = Spool(root, sync_interval=0.05)
    real = store._write_file
    full = threading.Event()
    full.set()

    def write_file(job: Any, *args: Any) -> None:
        if job.submission.ids[0] == "email_0007_0" and full.is_set():
            raise OSError(28, "No space left on device")
        real(job, *args)

    store._write_file = write_file  # type: ignore[method-assign]
    try:
        with ThreadPoolExecutor(max_workers=20) as pool:
            # Each is committed, so each is answered 250, the one whose copy fails too.
            list(pool.map(lambda i: store.store(_submission(i), [_body(i)]), range(20)))
        # Several 0.05 s rounds fail with the disk full: the log below must hold one error,
        # not one per round.
        time.sleep(0.3)
        assert len(_copies(root)) == 19
        assert [n for n in _journal(root) if n.endswith(".email_0007_0")]
        full.clear()  # space again
        _eventually(lambda: len(_copies(root)) == 20)
    finally:
        store.close()
    assert caplog.text.count("could not write the Maildir copies of email_0007_0") == 1
    assert _journal(root) == {}
    assert sorted(p.read_bytes() for p in _copies(root)) == sorted(_body(i) for i in range(20))


def test_a_copy_never_written_while_running_is_written_at_the_next_start(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    store = Spool(root, sync_interval=0.05)

    def never(job: Any, *args: Any) -> None:
        raise OSError(28, "No space left on device")

    store._write_file = never  # type: ignore[method-assign]
    try:
        store.store(_submission(1), [_body(1)])
    finally:
        store.close()
    assert _copies(root) == [] and len(_journal(root)) == 1
    store = Spool(root)
    store.close()
    assert store.recovered == 1 and _journal(root) == {}
    assert [p.read_bytes() for p in _copies(root)] == [_body(1)]


def test_a_maildir_removed_while_running_is_made_again(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    store = Spool(root)
    try:
        [first] = store.store(_submission(1), [_body(1)])
        shutil.rmtree(delivered(first).parent.parent)  # a cleaner took the whole Maildir
        [second] = store.store(_submission(2), [_body(2)])
        assert delivered(second).read_bytes() == _body(2)
    finally:
        store.close()


def test_past_the_backlog_limit_copies_are_read_back_from_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "BACKLOG_LIMIT", 0)  # hold no session buffer at all
    root = tmp_path / "spool"
    store = Spool(root)
    real = store._write_file
    go = threading.Event()

    def write_file(job: Any, *args: Any) -> None:
        assert go.wait(10)  # a stalled disk: nothing written until the buffers changed
        real(job, *args)

    store._write_file = write_file  # type: ignore[method-assign]
    try:
        buffers = [bytearray(_body(i)) for i in range(5)]
        paths = [store.store(_submission(i), [b"", memoryview(buffers[i])])[0] for i in range(5)]
        for buffer in buffers:
            buffer[:] = b"X" * len(buffer)  # the deliverer held none of them
        go.set()
        assert [delivered(p).read_bytes() for p in paths] == [_body(i) for i in range(5)]
        assert store._backlog == 0
    finally:
        store.close()


CRASHING_WRITER = """
import os, sys, time
from pathlib import Path
from reference_server.headers import ControlValues
from reference_server.spool import Spool, Submission
store = Spool(Path(sys.argv[1]), sync_interval=3600)
paths = []
for i, recipients in enumerate([("a@sink.test",), ("b@sink.test", "c@sink.test"), ("d@sink.test",)]):
    ids = tuple(f"email_{i}_{n}" for n in range(len(recipients)))
    sub = Submission("probe@acme.test", recipients, ids, "t", "k", ControlValues())
    paths += store.store(sub, [b"Subject: %d\\r\\n\\r\\n" % i, b"body %d\\r\\n" % i])
while sys.argv[2] == "written" and not all(p.exists() for p in paths):
    time.sleep(0.005)  # the copies written, not yet synced
os._exit(0)  # the power goes: no close, no sync round
"""


def _crash(root: Path, copies: str, writer: str = CRASHING_WRITER) -> None:
    """Three messages stored, then the process gone with no close; ``copies`` "written" waits
    for the Maildir copies first (written, not synced)."""
    subprocess.run(
        [sys.executable, "-c", textwrap.dedent(writer), str(root), copies], check=True, timeout=60
    )


def test_a_crash_before_the_sync_round_is_repaired_from_the_journal(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    _crash(root, "written")
    assert len(_journal(root)) == 3  # the crash left every body in the journal
    copies = {p.name.rsplit(".", 1)[1]: p for p in _copies(root)}
    # What the lost page cache did to the copies: one gone, one short, and one a reader had
    # already moved to cur/ whole.
    copies["email_0_0"].unlink()
    copies["email_1_1"].write_bytes(b"")  # and its other link with it: one inode
    taken = copies["email_2_0"]
    os.rename(taken, taken.parent.parent / "cur" / f"{taken.name}:2,S")
    store = Spool(root)
    try:
        assert store.recovered == 4  # every journalled copy written anew
    finally:
        store.close()
    assert copies["email_0_0"].read_bytes() == b"Subject: 0\r\n\r\nbody 0\r\n"
    assert copies["email_1_1"].read_bytes() == b"Subject: 1\r\n\r\nbody 1\r\n"
    assert copies["email_1_0"].read_bytes() == b"Subject: 1\r\n\r\nbody 1\r\n"
    assert not taken.exists()  # not delivered twice
    assert len(list(root.glob("maildir/d@sink.test/cur/*"))) == 1
    assert _journal(root) == {}
    assert len(read_events(root / "events.sqlite3")) == 4  # one row per copy, none added


def test_synced_copies_leave_the_journal_and_a_consumed_copy_stays_consumed(
    tmp_path: Path,
) -> None:
    root = tmp_path / "spool"
    store = Spool(root, sync_interval=0.05)
    try:
        [path] = store.store(_submission(1), [_body(1)])
        _eventually(lambda: _journal(root) == {})  # no other message comes to carry it
        path.unlink()  # a reader took the message
    finally:
        store.close()
    store = Spool(root)
    store.close()
    assert store.recovered == 0 and _copies(root) == []


def test_a_failed_sync_round_keeps_its_messages_for_the_next_start(tmp_path: Path) -> None:
    """A later round's success is not trusted for them: Linux reports a failed writeback once,
    so a second sync can succeed with their data still not on disk."""
    root = tmp_path / "spool"
    store = Spool(root, sync_interval=0.05)
    real = store._sync
    failed = threading.Event()
    synced: set[int] = set()

    def sync(jobs: Any) -> None:
        if not failed.is_set():
            failed.set()
            raise OSError(5, "Input/output error")
        real(jobs)
        synced.update(job.seq for job in jobs)

    store._sync = sync  # type: ignore[method-assign]
    try:
        [first] = store.store(_submission(1), [_body(1)])
        assert failed.wait(10)
        [second] = store.store(_submission(2), [_body(2)])
        _eventually(lambda: second.name not in _journal(root))
        assert list(_journal(root)) == [first.name]  # the second synced and went
    finally:
        store.close()
    assert synced == {2} and list(_journal(root)) == [first.name]
    store = Spool(root)  # the next start writes it anew and syncs it
    store.close()
    assert store.recovered == 1 and _journal(root) == {}


def test_a_lost_begin_gives_synced_rows_back(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    store = Spool(root, sync_interval=3600)
    try:
        store.store(_submission(1), [_body(1)])
        with store._wake:  # as the deliverer hands back a synced message
            store._synced.append(1)
        other = sqlite3.connect(root / "events.sqlite3", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another writer holds the log past the busy timeout
        try:
            with pytest.raises(sqlite3.OperationalError):
                store.store(_submission(2), [_body(2)])
        finally:
            other.execute("ROLLBACK")
            other.close()
        [third] = store.store(_submission(3), [_body(3)])  # no transaction left open
        assert list(_journal(root)) == [third.name]
    finally:
        store.close()


def test_recovery_keeps_a_bad_row_and_rewrites_a_zeroed_copy(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    _crash(root, "written")
    copies = {p.name.rsplit(".", 1)[1]: p for p in _copies(root)}
    size = copies["email_0_0"].stat().st_size
    copies["email_0_0"].write_bytes(b"\0" * size)  # right size, zeros: a lost page
    db = sqlite3.connect(root / "events.sqlite3")
    db.execute("UPDATE journal SET targets = 'not json' WHERE seq = 3")
    db.execute("INSERT INTO journal (targets, body) VALUES (?, x'00')", ('["../../etc/x"]',))
    db.commit()
    db.close()
    store = Spool(root)  # starts all the same
    store.close()
    assert copies["email_0_0"].read_bytes() == b"Subject: 0\r\n\r\nbody 0\r\n"
    left = sqlite3.connect(root / "events.sqlite3")
    try:
        kept = sorted(seq for (seq,) in left.execute("SELECT seq FROM journal"))
    finally:
        left.close()
    assert kept == [3, 4]  # the bad rows stay, for a person to look at
    assert not (tmp_path / "etc").exists()


def test_without_syncfs_every_copy_and_its_folder_is_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "_SYNCFS", None)  # not Linux, or no syncfs(2)
    files: list[Path] = []
    dirs: list[Path] = []
    real_file, real_dir = spool_module._fsync_file, spool_module._fsync_dir
    monkeypatch.setattr(spool_module, "_fsync_file", lambda p: (files.append(p), real_file(p)))
    monkeypatch.setattr(spool_module, "_fsync_dir", lambda p: (dirs.append(p), real_dir(p)))
    root = tmp_path / "spool"
    store = Spool(root, sync_interval=3600)
    try:
        paths = store.store(_submission(1, ("a@sink.test", "b@sink.test")), [_body(1)])
        other = store.store(_submission(2), [_body(2)])
        delivered(paths[1]).unlink()  # a reader took one link: the other reaches the inode
    finally:
        store.close()  # the last sync round
    assert {os.stat(p).st_ino for p in files} == {
        os.stat(paths[0]).st_ino,
        os.stat(other[0]).st_ino,
    }
    assert set(dirs) == {paths[0].parent, paths[1].parent}


@pytest.mark.parametrize("size", [1_000, spool_module.JOIN_LIMIT + 1])
def test_a_message_is_journalled_and_delivered_byte_for_byte_from_its_parts(
    tmp_path: Path, size: int
) -> None:
    """Small bodies are joined, big ones written into the journal part by part: same bytes."""
    root = tmp_path / "spool"
    head = b"Subject: big\r\n\r\n"
    body = bytearray(os.urandom(size))
    store = Spool(root, sync_interval=3600)
    try:
        [path] = store.store(_submission(1), [head, memoryview(body)[1:]])
        assert _journal(root)[path.name] == head + body[1:]
        assert delivered(path).read_bytes() == head + body[1:]
    finally:
        store.close()
    [event] = read_events(root / "events.sqlite3")
    assert event["size"] == len(head) + size - 1


def test_a_crash_before_the_copies_are_written_loses_nothing(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    writer = textwrap.dedent(CRASHING_WRITER).replace(
        "store = Spool(",
        "Spool._write_file = lambda self, *args: None  # never written\nstore = Spool(",
    )
    _crash(root, "unwritten", writer)
    assert _copies(root) == [] and len(_journal(root)) == 3
    store = Spool(root)
    store.close()
    assert store.recovered == 4
    bodies = sorted(p.read_bytes() for p in _copies(root))
    assert bodies == sorted(b"Subject: %d\r\n\r\nbody %d\r\n" % (i, i) for i in (0, 1, 1, 2))


def test_synced_rows_whose_deletion_rolled_back_go_with_a_later_commit(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    store = Spool(root, sync_interval=3600)
    try:
        store.store(_submission(1), [_body(1)])
        [first] = _journal(root)
        with store._wake:  # as the deliverer hands back a synced message
            store._synced.append(1)
        # The next commit carries that deletion and fails (an id already taken): rolled back.
        with pytest.raises(sqlite3.IntegrityError):
            store.store(_submission(1), [_body(1)])
        assert first in _journal(root)
        [second] = store.store(_submission(2), [_body(2)])
        assert list(_journal(root)) == [second.name]  # the deletion came with this commit
    finally:
        store.close()
