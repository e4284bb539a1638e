"""Durable delivery: one Maildir per recipient and an SQLite event log, both written before 250.

The message is written once to ``spool/tmp``, fsynced, then hard-linked into each recipient's
``Maildir/new`` (a link appears whole or not at all), the directories are fsynced, and the event
rows are committed with ``synchronous=FULL``. Only then does the caller answer 250, so a crash
or SIGTERM never loses a message the client was told was accepted. Messages that arrive
together are made durable together (``Spool``): one directory fsync and one commit for all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from .headers import ControlValues

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
)
"""


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


def mailbox_dir(spool: Path, recipient: str) -> Path:
    local, _, domain = recipient.rpartition("@")
    # The local part stays case-sensitive (RFC 5321 §2.4); quoting keeps it inside the spool.
    return spool / "maildir" / quote(f"{local}@{domain.lower()}", safe="@._+-")


class _Job:
    """One message waiting for the writer, and who waits for it: a session's future on its
    event loop, or a thread's event."""

    __slots__ = ("error", "event", "future", "loop", "parts", "paths", "size", "submission", "tmp")

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
        self.tmp = ""
        self.size = 0
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
    """The store, with one writer thread that takes every message waiting and makes the lot
    durable together: each message file written and fsynced, then linked into its Maildirs,
    then one fsync per directory touched, then one SQLite transaction for every row. A message
    is settled only after all of that, so every 250 still follows its own fsyncs.

    One writer rather than a thread per session: twenty sessions storing at once spent more
    CPU handing the GIL and futexes between threads than writing, and each needed its own
    wake-up of the event loop; the writer wakes each loop once per batch.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "tmp").mkdir(parents=True, exist_ok=True)
        (root / "maildir").mkdir(parents=True, exist_ok=True)
        self.db_path = root / "events.sqlite3"
        self._tmp_dir = str(root / "tmp")
        self._made_dirs: set[Path] = set()
        self._db = sqlite3.connect(self.db_path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(SCHEMA)
        self._jobs: list[_Job] = []
        self._wake = threading.Condition()
        self._closing = False
        self._writer = threading.Thread(target=self._run, name="spool-writer", daemon=True)
        self._writer.start()

    def close(self) -> None:
        """Store what is waiting, then stop the writer and close the event log."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._writer.join()
        self._db.close()

    # --- the two ways in ---------------------------------------------------------------------
    def store(self, submission: Submission, parts: Sequence[bytes | memoryview]) -> list[Path]:
        """Write the message (given as parts, concatenated) durably for every recipient;
        blocks until it is (for tools and tests; sessions use ``store_async``)."""
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
                    self._wake.wait()
                if not self._jobs:
                    return
                batch, self._jobs = self._jobs, []
            try:
                self._write_batch(batch)
            except BaseException as exc:  # never leave a session waiting
                for job in batch:
                    job.error = job.error or exc
            _settle_all(batch)

    def _write_batch(self, batch: list[_Job]) -> None:
        for job in batch:
            try:
                self._write_file(job)
            except Exception as exc:
                job.error = exc
        # Link only what is durable: a crash now leaves whole messages or none in new/.
        dirs: dict[Path, list[_Job]] = {}
        for job in batch:
            if job.error is None:
                try:
                    self._link(job, dirs)
                except Exception as exc:
                    job.error = exc
        for directory, jobs in dirs.items():
            try:
                _fsync_dir(directory)  # after every link into it in this batch
            except Exception as exc:
                for job in jobs:
                    job.error = job.error or exc
        for job in batch:
            if job.tmp:
                with contextlib.suppress(OSError):
                    os.unlink(job.tmp)
        stored = [job for job in batch if job.error is None]
        if stored:
            try:
                self._write_rows([row for job in stored for row in _rows(job)])
            except Exception as exc:
                for job in stored:
                    job.error = exc
        for job in batch:
            if job.error is not None:
                # The client is told 451: nothing of the message stays to be delivered.
                for path in job.paths:
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                job.paths = []

    def _write_file(self, job: _Job) -> None:
        sub = job.submission
        name = f"{time.time():.6f}.{sub.ids[0]}.{os.getpid()}"
        job.tmp = os.path.join(self._tmp_dir, name)
        fd = os.open(job.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            for part in job.parts:
                view = memoryview(part)
                while view:
                    written = os.write(fd, view)
                    job.size += written
                    view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        job.parts = ()  # the session may free its buffer

    def _link(self, job: _Job, dirs: dict[Path, list[_Job]]) -> None:
        name = os.path.basename(job.tmp)
        for recipient, email_id in zip(job.submission.recipients, job.submission.ids, strict=True):
            box = mailbox_dir(self.root, recipient)
            if box not in self._made_dirs:
                for sub in ("tmp", "new", "cur"):
                    (box / sub).mkdir(parents=True, exist_ok=True)
                self._made_dirs.add(box)
            target = box / "new" / f"{name}.{email_id}"
            os.link(job.tmp, target)
            job.paths.append(target)
            dirs.setdefault(box / "new", []).append(job)

    def _write_rows(self, rows: list[tuple[object, ...]]) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")


def _rows(job: _Job) -> list[tuple[object, ...]]:
    sub = job.submission
    now = time.time()
    tags = json.dumps(list(sub.control.tags))
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
            job.size,
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
