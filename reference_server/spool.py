"""Durable delivery: one Maildir per recipient and an SQLite event log; durable before 250.

The message and its event rows are committed in one SQLite transaction (write-ahead log,
``synchronous=FULL``), the message into the ``journal`` table, where it stays until its
Maildir copies are on disk. The caller is told right after that commit, so the 250 follows
exactly one sync, and a crash or power loss never loses a message the client was told was
accepted.

A second thread, the deliverer, then writes the Maildir copies (one file, hard-linked into
each recipient's ``new/``; a copy appears whole or not at all), normally within a millisecond
of the 250, makes them durable with one sync round every ``sync_interval`` seconds, and only
then lets their journal rows go. At the next start after a crash, every journalled copy is
written anew (``Spool._recover``); a reader that consumed a copy in the short window before
its sync round may see it again: delivery is at least once, never zero times.

Why the journal and not an fsync of each file before 250: a new file needs its data, its
inode and its directory entry synced, three syncs in a row (file, directory, then the event
log's commit); one commit that overwrites an already allocated write-ahead log is one sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from .headers import ControlValues

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    email_id TEXT PRIMARY KEY,
    event TEXT NOT NULL,
    recipient TEXT NOT NULL,
    mail_from TEXT NOT NULL,
    team TEXT NOT NULL,
    key_id TEXT NOT NULL,
    tags TEXT NOT NULL,
    topic TEXT,
    campaign TEXT,
    size INTEGER NOT NULL,
    path TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    targets TEXT NOT NULL,
    body BLOB NOT NULL
);
"""

# Keep the write-ahead log's file allocated between checkpoints: a commit that overwrites
# allocated blocks syncs data only, one that grows the file syncs its size too.
WAL_SIZE_LIMIT = 64 * 1024 * 1024
SYNC_INTERVAL = 0.2  # seconds a Maildir copy may wait for its fsync (it is in the journal)
# Up to this size a body is bound as one string (cheaper); above it, it is written into the
# journal from the session's buffers, so a big message is never copied whole once more.
JOIN_LIMIT = 256 * 1024
SYNC_BATCH = 512  # copies that start a sync before the interval is up
# Session buffers the deliverer may hold; past this, it reads bodies back from the journal,
# so a stalled disk cannot make 250s pile up memory.
BACKLOG_LIMIT = 64 * 1024 * 1024


@dataclass(frozen=True)
class Submission:
    mail_from: str
    recipients: tuple[str, ...]
    ids: tuple[str, ...]
    team: str
    key_id: str
    control: ControlValues


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load_syncfs() -> Callable[[int], int] | None:
    try:
        found: Callable[[int], int] | None = getattr(
            ctypes.CDLL(None, use_errno=True), "syncfs", None
        )
        return found
    except OSError:
        return None


# Linux's syncfs(2): the whole file system's dirty data and metadata in one call, one journal
# commit for every copy and directory entry of a sync round instead of one per fsync.
_SYNCFS = _load_syncfs()


def _syncfs(fd: int) -> None:
    """syncfs(2) through a descriptor opened once, at start: Linux reports a writeback error
    once per open file, so a descriptor opened afresh for each round would miss an error
    from the kernel's own writeback in between."""
    assert _SYNCFS is not None
    if _SYNCFS(fd) != 0:
        code = ctypes.get_errno() or errno.EIO
        raise OSError(code, f"syncfs: {os.strerror(code)}")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _link_copies(parts: Sequence[bytes | memoryview], tmp: str, paths: list[Path]) -> None:
    first, *others = paths
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    linked: list[Path] = []
    try:
        try:
            for part in parts:
                view = memoryview(part)
                while view:
                    view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        for target in others:
            os.link(tmp, target)
            linked.append(target)
        os.rename(tmp, first)
    except BaseException:
        leftovers: list[str | Path] = [*linked, tmp]
        for path in leftovers:
            with contextlib.suppress(OSError):
                os.unlink(path)
        raise


def mailbox_dir(spool: Path, recipient: str) -> Path:
    local, _, domain = recipient.rpartition("@")
    # The local part stays case-sensitive (RFC 5321 §2.4); quoting keeps it inside the spool.
    return spool / "maildir" / quote(f"{local}@{domain.lower()}", safe="@._+-")


def _make_maildir(box: Path) -> None:
    for part in ("tmp", "new", "cur"):
        (box / part).mkdir(parents=True, exist_ok=True)


def _find_copy(target: Path) -> Path | None:
    """Where a Maildir copy is now: still in ``new/``, or moved by a reader into ``cur/``
    under the same name with its flags appended (``name:2,S``)."""
    if target.exists():
        return target
    cur = target.parent.parent / "cur"
    with contextlib.suppress(OSError), os.scandir(cur) as entries:
        for entry in entries:
            if entry.name.startswith(target.name + ":"):
                return Path(entry.path)
    return None


class _Job:
    """One message waiting for the writer, and who waits for it: a session's future on its
    event loop, or a thread's event."""

    __slots__ = (
        "error",
        "event",
        "failed",
        "future",
        "held",
        "loop",
        "parts",
        "paths",
        "seq",
        "size",
        "submission",
        "targets",
        "tmp",
    )

    def __init__(
        self,
        submission: Submission,
        parts: Sequence[bytes | memoryview],
        loop: asyncio.AbstractEventLoop | None = None,
        future: asyncio.Future[list[Path]] | None = None,
    ) -> None:
        self.submission = submission
        self.parts = parts
        self.loop = loop
        self.future = future
        # A thread waits on an event; a session's future needs none (nor its lock).
        self.event = threading.Event() if future is None else None
        self.size = 0
        self.seq = 0
        self.held = 0  # bytes of session buffers the deliverer holds for it
        self.failed = False  # its copies could not be written once already
        self.targets = ""
        self.tmp = ""
        self.paths: list[Path] = []
        self.error: BaseException | None = None

    def settle(self) -> None:
        """Tell the waiter: called in the session's own event loop, or in the writer for a
        waiting thread."""
        if self.event is not None:
            self.event.set()
        if self.future is None or self.future.done():  # done: the session went away
            return
        if self.error is not None:
            self.future.set_exception(self.error)
        else:
            self.future.set_result(self.paths)


class Spool:
    """The store, with two threads.

    The writer takes every message waiting and commits the lot in one transaction (message
    bodies into the journal, event rows into the log), then settles each message: every 250
    follows the commit that holds its message. The deliverer writes the Maildir copies of
    what was committed (at once, beside the next commit), makes them durable with one sync
    round every ``sync_interval`` seconds, and then hands their journal rows back for
    deletion, which the writer folds into its next commit.

    One writer rather than a thread per session: twenty sessions storing at once spent more
    CPU handing the GIL and futexes between threads than writing, and each needed its own
    wake-up of the event loop; the writer wakes each loop once per batch. The copies are
    written by another thread so that no 250 waits for them: the journal already holds them.
    """

    def __init__(self, root: Path, sync_interval: float = SYNC_INTERVAL) -> None:
        self.root = root
        self.sync_interval = sync_interval
        (root / "maildir").mkdir(parents=True, exist_ok=True)
        self.db_path = root / "events.sqlite3"
        self._boxes: dict[str, tuple[str, str, str]] = {}
        self._pid = os.getpid()
        self._db = sqlite3.connect(self.db_path, check_same_thread=False, isolation_level=None)
        mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            # Still durable (a rollback journal, synchronous=FULL), but readers block commits.
            log.warning("the event log's file system gives no write-ahead log (%s)", mode)
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        self._db.executescript(SCHEMA)
        self._cursor = self._db.cursor()  # the writer's: one, not a new one per statement
        self._root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        self.recovered = self._recover()
        # The writer's side: messages to commit, and journal rows the deliverer has synced.
        self._jobs: list[_Job] = []
        self._synced: list[int] = []
        self._wake = threading.Condition()
        self._closing = False
        # The deliverer's side: committed messages whose copies are still to be written.
        self._deliveries: list[_Job] = []
        self._backlog = 0  # bytes held in self._deliveries' session buffers
        self._sync_error_logged = float("-inf")
        self._deliver_wake = threading.Condition()
        self._deliver_closing = False
        self._writer = threading.Thread(target=self._run, name="spool-writer", daemon=True)
        self._deliverer = threading.Thread(
            target=self._deliver_run, name="spool-deliverer", daemon=True
        )
        self._writer.start()
        self._deliverer.start()

    def close(self) -> None:
        """Store what is waiting, write and sync every Maildir copy, empty the journal, then
        stop both threads and close the event log."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._writer.join()
        with self._deliver_wake:
            self._deliver_closing = True
            self._deliver_wake.notify()
        self._deliverer.join()
        with contextlib.suppress(sqlite3.Error):  # the journal stays; the next start replays
            self._forget_synced()
        self._db.close()
        os.close(self._root_fd)

    # --- the two ways in ---------------------------------------------------------------------
    def store(self, submission: Submission, parts: Sequence[bytes | memoryview]) -> list[Path]:
        """Store the message (given as parts, concatenated) durably for every recipient;
        blocks until it is, as a session waits before its 250 (for tools and tests; sessions
        use ``store_async``). The Maildir copies at the paths returned follow at once."""
        job = _Job(submission, parts)
        self._enqueue(job)
        assert job.event is not None
        job.event.wait()
        if job.error is not None:
            raise job.error
        return job.paths

    async def store_async(
        self, submission: Submission, parts: Sequence[bytes | memoryview]
    ) -> list[Path]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Path]] = loop.create_future()
        job = _Job(submission, parts, loop, future)
        self._enqueue(job)
        return await future

    def _enqueue(self, job: _Job) -> None:
        with self._wake:
            if self._closing:
                raise RuntimeError("the spool is closed")
            self._jobs.append(job)
            self._wake.notify()

    # --- the writer --------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._jobs and not self._closing:
                    if self._synced:
                        # Synced rows wait for the next commit; with no message coming, go
                        # without one rather than keep bodies in the journal.
                        if not self._wake.wait(timeout=self.sync_interval) and not self._jobs:
                            break
                    else:
                        self._wake.wait()
                if not self._jobs and self._closing:
                    return
                batch, self._jobs = self._jobs, []
            if not batch:
                with contextlib.suppress(sqlite3.Error):  # tried again with the next commit
                    self._forget_synced()
                continue
            try:
                committed = self._write_batch(batch)
            except BaseException as exc:  # never leave a session waiting
                committed = []
                for job in batch:
                    job.error = job.error or exc
            _settle_all(batch)
            if committed:
                with self._deliver_wake:
                    for job in committed:
                        if self._backlog + job.size > BACKLOG_LIMIT:
                            job.parts = ()  # the deliverer reads it back from the journal
                        else:
                            job.held = job.size
                            self._backlog += job.size
                    self._deliveries.extend(committed)
                    self._deliver_wake.notify()

    def _write_batch(self, batch: list[_Job]) -> list[_Job]:
        """Commit what can be; returns the messages committed (now durable)."""
        for job in batch:
            try:
                self._prepare(job)
            except Exception as exc:
                job.error = exc
        ready = [job for job in batch if job.error is None]
        if not ready:
            return []
        try:
            self._commit(ready)
        except Exception as exc:
            for job in ready:
                job.error = exc
            return []
        return ready

    def _box(self, recipient: str) -> tuple[str, str, str]:
        """A recipient's Maildir, made on first use: its ``tmp/`` and ``new/`` folders, and
        ``new/`` relative to the spool (for the journal); strings, as the hot path joins them."""
        box = self._boxes.get(recipient)
        if box is None:
            path = mailbox_dir(self.root, recipient)
            _make_maildir(path)
            box = (str(path / "tmp"), str(path / "new"), str((path / "new").relative_to(self.root)))
            self._boxes[recipient] = box
        return box

    def _prepare(self, job: _Job) -> None:
        sub = job.submission
        name = f"{time.time():.6f}.{sub.ids[0]}.{self._pid}"
        job.size = sum(memoryview(part).nbytes for part in job.parts)
        targets = []
        for recipient, email_id in zip(sub.recipients, sub.ids, strict=True):
            tmp, new, relative = self._box(recipient)
            if not job.tmp:
                job.tmp = f"{tmp}/{name}.{email_id}"
            job.paths.append(Path(f"{new}/{name}.{email_id}"))
            targets.append(f"{relative}/{name}.{email_id}")
        job.targets = json.dumps(targets)

    def _commit(self, jobs: list[_Job]) -> None:
        """One transaction for the batch: each body into the journal, each copy's event row,
        and the journal rows the deliverer has synced since the last commit."""
        db, cursor = self._db, self._cursor
        with self._wake:
            forget, self._synced = self._synced, []
        try:
            cursor.execute("BEGIN IMMEDIATE")
            for job in jobs:
                if job.size <= JOIN_LIMIT:
                    cursor.execute(
                        "INSERT INTO journal (targets, body) VALUES (?, ?)",
                        (job.targets, b"".join(job.parts)),
                    )
                    job.seq = cursor.lastrowid or 0
                    continue
                # Written in place from the session's buffers: a 5 MB message is not copied
                # into one more 5 MB string on its way in.
                cursor.execute(
                    "INSERT INTO journal (targets, body) VALUES (?, zeroblob(?))",
                    (job.targets, job.size),
                )
                job.seq = cursor.lastrowid or 0
                with db.blobopen("journal", "body", job.seq) as blob:
                    for part in job.parts:
                        blob.write(part)
            cursor.executemany(
                "INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [row for job in jobs for row in _rows(job)],
            )
            cursor.executemany("DELETE FROM journal WHERE seq = ?", [(seq,) for seq in forget])
            cursor.execute("COMMIT")
        except BaseException:
            self._abandon()
            self._give_back(forget)
            raise

    def _abandon(self) -> None:
        """Roll back whatever is open, keeping the error that got here: SQLite may have rolled
        back already (an I/O error), and a COMMIT that failed leaves the transaction open,
        which would refuse every later BEGIN."""
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._cursor.execute("ROLLBACK")

    def _give_back(self, seqs: list[int]) -> None:
        """Synced rows whose deletion did not commit: deleted with a later commit instead."""
        if seqs:
            with self._wake:
                self._synced[:0] = seqs

    def _forget_synced(self) -> None:
        """Synced rows with no message coming to carry their deletion: a commit of their own."""
        if self._synced:
            self._commit([])

    # --- the deliverer -----------------------------------------------------------------------
    def _deliver_run(self) -> None:
        reader = sqlite3.connect(self.db_path)  # the deliverer's own, to read bodies back
        try:
            self._deliver_loop(reader)
        finally:
            reader.close()

    def _deliver_loop(self, reader: sqlite3.Connection) -> None:
        unsynced: list[_Job] = []  # written, not yet synced
        retry: list[_Job] = []  # could not be written: tried again each round
        next_round = time.monotonic() + self.sync_interval
        while True:
            with self._deliver_wake:
                if not self._deliveries and not self._deliver_closing:
                    if unsynced or retry:
                        wait = next_round - time.monotonic()
                        if wait > 0:
                            self._deliver_wake.wait(timeout=wait)
                    else:
                        self._deliver_wake.wait()
                jobs, self._deliveries = self._deliveries, []
                closing = self._deliver_closing
            now = time.monotonic()
            due = closing or now >= next_round
            if due:
                next_round = now + self.sync_interval
                jobs, retry = retry + jobs, []
            for job in jobs:
                try:
                    self._write_file(job, reader)
                except Exception:
                    if not job.failed:  # once, not every round
                        log.exception(
                            "could not write the Maildir copies of %s (answered 250: the "
                            "journal holds it); trying again every %s s",
                            job.submission.ids[0],
                            self.sync_interval,
                        )
                    job.failed = True
                    retry.append(job)
                else:
                    if job.failed:
                        log.warning("Maildir copies of %s written", job.submission.ids[0])
                    unsynced.append(job)
                finally:
                    self._release(job)
            if unsynced and (due or len(unsynced) >= SYNC_BATCH):
                try:
                    self._sync(unsynced)
                except Exception:
                    # Never trusted to a later round: a failed writeback is reported once, so
                    # a retry could succeed with the data still not on disk. These stay in
                    # the journal, which the next start writes back from.
                    self._log_sync_error(len(unsynced))
                else:
                    with self._wake:
                        self._synced.extend(job.seq for job in unsynced)
                        self._wake.notify()
                unsynced = []
            if closing:
                with self._deliver_wake:
                    if not self._deliveries:
                        if retry:
                            log.error(
                                "%d message(s) without Maildir copies at close; the journal "
                                "keeps them for the next start",
                                len(retry),
                            )
                        return

    def _release(self, job: _Job) -> None:
        if job.held:
            with self._deliver_wake:
                self._backlog -= job.held
            job.held = 0

    def _log_sync_error(self, count: int) -> None:
        now = time.monotonic()
        if now - self._sync_error_logged >= 10:  # a failing disk fails every round
            self._sync_error_logged = now
            log.exception(
                "could not sync %d message(s)' Maildir copies; the journal keeps them for the "
                "next start",
                count,
            )

    def _write_file(self, job: _Job, reader: sqlite3.Connection | None = None) -> None:
        """The Maildir copies: one file written in the first recipient's ``tmp/``, linked into
        every other recipient's ``new/`` and renamed into the first's (a copy appears whole or
        not at all); not synced here (``_sync`` does it; the journal covers the meantime).
        Without the session's buffers (a retry, or a backlog past its limit), the body is read
        back from the journal."""
        parts = job.parts
        if not parts:
            if reader is None:
                raise RuntimeError("no body to write and no journal to read it from")
            row = reader.execute("SELECT body FROM journal WHERE seq = ?", (job.seq,)).fetchone()
            if row is None:
                raise RuntimeError(f"journal row {job.seq} is gone")
            parts = (row[0],)
        try:
            _link_copies(parts, job.tmp, job.paths)
        except FileNotFoundError:
            # A Maildir folder went away under us (removed by hand, or by a cleaner): made
            # again, and tried once more.
            for path in (Path(job.tmp), *job.paths):
                _make_maildir(path.parent.parent)
            _link_copies(parts, job.tmp, job.paths)
        finally:
            job.parts = ()  # the session may free its buffer

    def _sync(self, jobs: list[_Job]) -> None:
        if _SYNCFS is not None:
            _syncfs(self._root_fd)
            return
        dirs: set[Path] = set()
        for paths in (job.paths for job in jobs):
            # One inode for all of a message's links: one fsync, through whichever link a
            # reader has not taken yet (a reader may have moved it to cur/ or deleted it).
            for target in paths:
                found = _find_copy(target)
                if found is not None:
                    _fsync_file(found)
                    break
            dirs.update(target.parent for target in paths)
        for directory in dirs:
            _fsync_dir(directory)

    # --- the next start ----------------------------------------------------------------------
    def _recover(self) -> int:
        """Write every journalled copy anew (a crash came before its sync round), make them
        durable, then let their journal rows go. Returns how many copies were written.

        Anew, not only the missing or short ones: a copy of the right size may hold zeros
        after a power loss, or a page whose writeback failed. Each is written to a fresh file
        and renamed over the copy, wherever it is (``new/``, or ``cur/`` once a reader took
        it, so it is not delivered twice). A row that cannot be replayed is logged and kept,
        and does not stop the start.
        """
        done: list[int] = []
        written = kept = 0
        dirs: set[Path] = set()
        maildir = (self.root / "maildir").resolve()
        # One message in memory at a time: a journal left by a busy server can be large.
        for (seq,) in self._db.execute("SELECT seq FROM journal ORDER BY seq").fetchall():
            targets, body = self._db.execute(
                "SELECT targets, body FROM journal WHERE seq = ?", (seq,)
            ).fetchone()
            try:
                paths = [self.root / relative for relative in json.loads(targets)]
                if not paths or any(
                    not isinstance(relative, str)
                    or not (self.root / relative).resolve().is_relative_to(maildir)
                    for relative in json.loads(targets)
                ):
                    raise ValueError(f"targets outside the spool's Maildirs: {targets!r}")
                for target in paths:
                    dirs.add(_rewrite(target, bytes(body)))
                    written += 1
            except (OSError, ValueError) as exc:
                kept += 1
                log.error("journal row %d not replayed, kept for the next start: %s", seq, exc)
                continue
            done.append(seq)
        if not done and not kept:
            return 0
        for directory in dirs:
            _fsync_dir(directory)
        self._db.execute("BEGIN IMMEDIATE")
        self._db.executemany("DELETE FROM journal WHERE seq = ?", [(seq,) for seq in done])
        self._db.execute("COMMIT")
        log.warning(
            "journal: %d message(s) replayed after an unclean stop, %d Maildir copies written",
            len(done),
            written,
        )
        return written


def _rewrite(target: Path, body: bytes) -> Path:
    """One copy written to a fresh file, synced, and renamed over the copy where it is now;
    returns the folder to sync. A fresh file: a leftover temporary file of the crashed writer
    may be a hard link that other recipients' copies share."""
    box = target.parent.parent
    _make_maildir(box)
    destination = _find_copy(target) or target
    tmp = box / "tmp" / f"{target.name}.replay"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(body)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, destination)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(box / "tmp" / target.name)  # the crashed writer's own temporary file
    return destination.parent


def _rows(job: _Job) -> list[tuple[object, ...]]:
    sub = job.submission
    now = time.time()
    tags = json.dumps(list(sub.control.tags))
    size = job.size
    return [
        (
            email_id,
            "accepted",
            recipient,
            sub.mail_from,
            sub.team,
            sub.key_id,
            tags,
            sub.control.topic,
            sub.control.campaign,
            size,
            str(path),
            now,
        )
        for recipient, email_id, path in zip(sub.recipients, sub.ids, job.paths, strict=True)
    ]


def _settle_all(batch: list[_Job]) -> None:
    """Tell every waiter; one wake-up per event loop for the whole batch, not one each."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
    for job in batch:
        if job.loop is None:
            job.settle()
        else:
            by_loop.setdefault(job.loop, []).append(job)
    for loop, jobs in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a loop already closed has nobody waiting
            loop.call_soon_threadsafe(_settle_jobs, jobs)


def _settle_jobs(jobs: list[_Job]) -> None:
    for job in jobs:
        job.settle()


def read_events(db_path: Path) -> list[dict[str, object]]:
    """Every event row, for tests and tools (opens its own connection; WAL readers need one
    that may create the shared-memory file, so it is not opened read-only)."""
    db = sqlite3.connect(db_path)
    try:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM events ORDER BY rowid")]
    finally:
        db.close()
