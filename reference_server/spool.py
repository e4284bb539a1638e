"""Durable delivery: one Maildir per recipient and an SQLite event log, both written before 250.

The message is written once to ``spool/tmp``, fsynced, then hard-linked into each recipient's
``Maildir/new`` (a link appears whole or not at all), the directories are fsynced, and the event
rows are committed with ``synchronous=FULL``. Only then does the caller answer 250, so a crash
or SIGTERM never loses a message the client was told was accepted.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
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


class _DirSync:
    """fsync of one directory, shared by concurrent stores (a group commit for directory
    entries): a store waits for an fsync that started after its link was made; one fsync then
    makes every link made before it durable."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cond = threading.Condition()
        self._started = 0  # fsyncs started
        self._done = 0  # fsyncs finished (successfully or not)
        self._running = False
        self._errors: dict[int, BaseException] = {}

    def sync(self) -> None:
        with self._cond:
            # An fsync that starts from now on covers this caller's link.
            needed = self._started + 1
            while self._done < needed:
                if self._running:
                    self._cond.wait()
                    continue
                self._running = True
                self._started += 1
                number = self._started
                self._cond.release()
                error: BaseException | None = None
                try:
                    _fsync_dir(self.path)
                except BaseException as exc:
                    error = exc
                finally:
                    self._cond.acquire()
                    self._running = False
                    self._done = number
                    if error is not None:
                        self._errors[number] = error
                        for old in [n for n in self._errors if n < number - 1000]:
                            del self._errors[old]
                    self._cond.notify_all()
            # fsyncs run one at a time in start order, so the first to finish after this
            # call began is number ``needed``: its outcome is this caller's.
            error = self._errors.get(needed)
        if error is not None:
            raise error


class Spool:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "tmp").mkdir(parents=True, exist_ok=True)
        (root / "maildir").mkdir(parents=True, exist_ok=True)
        self.db_path = root / "events.sqlite3"
        self._lock = threading.Lock()
        # Group commit: concurrent stores share one SQLite transaction (and its fsync).
        self._batch = threading.Condition()
        self._pending: list[tuple[object, ...]] = []
        self._open_batch = 0
        self._done_batch = -1
        self._failed: dict[int, BaseException] = {}
        self._committing = False
        self._made_dirs: set[Path] = set()
        self._dir_syncs: dict[Path, _DirSync] = {}
        self._dirs_lock = threading.Lock()
        # Stores block on fsync: their own threads, enough for every concurrent session to
        # have its file written while others wait on the disk (the default pool has cpus + 4).
        self.executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="spool")
        self._db = sqlite3.connect(self.db_path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(SCHEMA)

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        with self._lock:
            self._db.close()

    def store(self, submission: Submission, parts: Sequence[bytes | memoryview]) -> list[Path]:
        """Write the message (given as parts, concatenated) durably for every recipient."""
        name = f"{time.time():.6f}.{submission.ids[0]}.{os.getpid()}"
        tmp = self.root / "tmp" / name
        size = 0
        with open(tmp, "wb") as fh:
            for part in parts:
                size += fh.write(part)
            fh.flush()
            os.fsync(fh.fileno())
        paths: list[Path] = []
        try:
            for recipient, email_id in zip(submission.recipients, submission.ids, strict=True):
                box = mailbox_dir(self.root, recipient)
                with self._dirs_lock:
                    if box not in self._made_dirs:
                        for sub in ("tmp", "new", "cur"):
                            (box / sub).mkdir(parents=True, exist_ok=True)
                        self._made_dirs.add(box)
                        self._dir_syncs[box] = _DirSync(box / "new")
                    dir_sync = self._dir_syncs[box]
                target = box / "new" / f"{name}.{email_id}"
                os.link(tmp, target)
                dir_sync.sync()  # shared with concurrent stores into the same Maildir
                paths.append(target)
        finally:
            tmp.unlink(missing_ok=True)
        now = time.time()
        rows = [
            (
                email_id,
                "accepted",
                recipient,
                submission.mail_from,
                submission.team,
                submission.key_id,
                json.dumps(list(submission.control.tags)),
                submission.control.topic,
                submission.control.campaign,
                size,
                str(path),
                now,
            )
            for recipient, email_id, path in zip(
                submission.recipients, submission.ids, paths, strict=True
            )
        ]
        self._commit(rows)
        return paths

    def _commit(self, rows: Sequence[tuple[object, ...]]) -> None:
        """Commit these rows, in one transaction with whatever other stores are waiting.

        Returns only once a transaction holding them is durable (synchronous=FULL).
        """
        with self._batch:
            mine = self._open_batch
            self._pending.extend(rows)
            while self._done_batch < mine:
                if self._committing:
                    self._batch.wait()
                    continue
                self._committing = True
                batch, self._pending = self._pending, []
                number = self._open_batch
                self._open_batch += 1
                self._batch.release()
                error: BaseException | None = None
                try:
                    self._write_rows(batch)
                except BaseException as exc:  # handed to every store of the batch
                    error = exc
                finally:
                    self._batch.acquire()
                    self._committing = False
                    self._done_batch = number
                    if error is not None:
                        self._failed[number] = error
                        # Only recent batches can still have waiters.
                        for old in [n for n in self._failed if n < number - 1000]:
                            del self._failed[old]
                    self._batch.notify_all()
            error = self._failed.get(mine)
        if error is not None:
            raise error

    def _write_rows(self, rows: list[tuple[object, ...]]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")


def read_events(db_path: Path) -> list[dict[str, object]]:
    """Every event row, for tests and tools (opens its own connection; WAL readers need one
    that may create the shared-memory file, so it is not opened read-only)."""
    db = sqlite3.connect(db_path)
    try:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM events ORDER BY rowid")]
    finally:
        db.close()
