"""Durability under concurrency: stores into one Maildir share directory fsyncs, and none
returns before an fsync that began after its own link (so every 250 still follows its fsyncs)."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from reference_server import spool as spool_module
from reference_server.headers import ControlValues
from reference_server.spool import Spool, Submission, read_events


def test_concurrent_stores_share_dir_fsyncs_and_each_follows_its_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, str, float]] = []
    lock = threading.Lock()
    real_link, real_fsync_dir = os.link, spool_module._fsync_dir

    def link(src: object, dst: object) -> None:
        real_link(src, dst)  # type: ignore[arg-type]
        with lock:
            events.append(("link", Path(str(dst)).name, time.monotonic()))

    def fsync_dir(path: Path) -> None:
        with lock:
            events.append(("fsync-start", "", time.monotonic()))
        time.sleep(0.02)  # a slow disk, so stores pile up behind one fsync
        real_fsync_dir(path)
        with lock:
            events.append(("fsync-end", "", time.monotonic()))

    monkeypatch.setattr(spool_module.os, "link", link)
    monkeypatch.setattr(spool_module, "_fsync_dir", fsync_dir)
    store = Spool(tmp_path / "spool")
    returned: dict[str, float] = {}

    def one(i: int) -> None:
        submission = Submission(
            "probe@acme.test", ("a@sink.test",), (f"email_{i:04d}",), "t", "k", ControlValues()
        )
        paths = store.store(submission, [b"Subject: %d\r\n\r\nbody\r\n" % i])
        returned[paths[0].name] = time.monotonic()

    try:
        with ThreadPoolExecutor(max_workers=20) as pool:
            list(pool.map(one, range(60)))
    finally:
        store.close()
    fsyncs = [e for e in events if e[0] == "fsync-start"]
    assert 1 <= len(fsyncs) < 60  # shared: fewer directory fsyncs than stores
    starts = [t for kind, _, t in events if kind == "fsync-start"]
    ends = [t for kind, _, t in events if kind == "fsync-end"]
    for kind, name, linked in events:
        if kind != "link":
            continue
        # Some fsync began after this link and ended before the store returned.
        assert any(s >= linked and e <= returned[name] for s, e in zip(starts, ends, strict=True))
    assert len(read_events(tmp_path / "spool" / "events.sqlite3")) == 60
    assert len(list((tmp_path / "spool" / "maildir").glob("*/new/*"))) == 60


def _submission(i: int) -> Submission:
    return Submission(
        "probe@acme.test", ("a@sink.test",), (f"email_{i:04d}",), "t", "k", ControlValues()
    )


def test_a_failed_commit_leaves_nothing_to_deliver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Spool(tmp_path / "spool")

    def locked(rows: object) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(store, "_write_rows", locked)
    try:
        with pytest.raises(sqlite3.OperationalError):
            store.store(_submission(1), [b"Subject: x\r\n\r\nbody\r\n"])
    finally:
        store.close()
    # The client is told 451: no copy stays in a Maildir to be delivered, no temporary file.
    assert not list((tmp_path / "spool" / "maildir").glob("*/new/*"))
    assert not list((tmp_path / "spool" / "tmp").iterdir())


def test_a_failed_message_does_not_fail_the_others_of_its_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Spool(tmp_path / "spool")
    real = store._write_file

    def write_file(job: Any) -> None:
        if job.submission.ids[0] == "email_0007":
            raise OSError(28, "No space left on device")
        time.sleep(0.005)  # a slow disk, so the others pile up into batches
        real(job)

    monkeypatch.setattr(store, "_write_file", write_file)
    outcomes: dict[int, str] = {}

    def one(i: int) -> None:
        try:
            store.store(_submission(i), [b"Subject: %d\r\n\r\nbody\r\n" % i])
            outcomes[i] = "stored"
        except OSError as exc:
            outcomes[i] = f"error {exc.errno}"

    try:
        with ThreadPoolExecutor(max_workers=20) as pool:
            list(pool.map(one, range(20)))
    finally:
        store.close()
    assert outcomes[7] == "error 28"
    assert {i for i, o in outcomes.items() if o == "stored"} == set(range(20)) - {7}
    ids = {e["email_id"] for e in read_events(tmp_path / "spool" / "events.sqlite3")}
    assert ids == {f"email_{i:04d}" for i in range(20) if i != 7}
    assert len(list((tmp_path / "spool" / "maildir").glob("*/new/*"))) == 19
