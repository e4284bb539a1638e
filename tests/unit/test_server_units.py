"""Pure parts of the reference server: ids, replies, header parsing, the limiter."""

from __future__ import annotations

import re

import pytest

from reference_server import replies
from reference_server.headers import (
    HeaderError,
    control_values,
    parse_header_block,
    sender_mailboxes,
)
from reference_server.limits import AuthFailureLimiter
from reference_server.message_ids import IdGenerator


def test_ids_are_uuidv7_monotonic_with_injected_clock() -> None:
    clock = iter([1000, 1000, 1000, 999, 2000])
    gen = IdGenerator(clock_ms=lambda: next(clock), random_bytes=lambda n: b"\x00" * n)
    ids = [gen.new_id() for _ in range(5)]
    assert ids[0] == "email_00000000-03e8-7000-8000-000000000000"
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert all(re.fullmatch(r"email_[0-9a-f-]{36}", i) for i in ids)


def test_replies_enhance_and_accepted_lines() -> None:
    assert replies.enhance("503 Error: need MAIL command") == "503 5.5.1 Error: need MAIL command"
    assert replies.enhance("250 2.1.0 Sender OK") == "250 2.1.0 Sender OK"
    assert replies.enhance("334 VXNlcm5hbWU6") == "334 VXNlcm5hbWU6"
    ids = [f"email_{i:08x}-0000-7000-8000-000000000000" for i in range(30)]
    text = replies.accepted(ids)
    lines = text.split("\r\n")
    assert all(len(line) + 2 <= 512 for line in lines)
    assert lines[-1].startswith("250 ") and all(line.startswith("250-") for line in lines[:-1])
    assert re.findall(r"email_[0-9a-f-]+", text) == ids


def test_headers_parse_unfold_and_top_level_only() -> None:
    data = b"From: a@x.test\r\nX-Anypost-Topic: one\r\n two\r\nSubject: s\r\n\r\nX-Anypost-Topic: body\r\n"
    block = parse_header_block(data)
    assert [f.name for f in block.fields] == ["from", "x-anypost-topic", "subject"]
    assert control_values(block).topic == "one two"
    assert data[block.body_offset :] == b"\r\nX-Anypost-Topic: body\r\n"


@pytest.mark.parametrize(
    "head",
    [
        b"Subject: none\r\n",
        b"From: a@x.test\r\nFrom: b@x.test\r\n",
        b"From: a@x.test, b@x.test\r\n",
        b"From: list:;\r\n",
    ],
)
def test_headers_bad_from(head: bytes) -> None:
    with pytest.raises(HeaderError):
        sender_mailboxes(parse_header_block(head + b"\r\nbody\r\n"))


def test_limiter_trips_and_expires_with_injected_clock() -> None:
    now = [0.0]
    limiter = AuthFailureLimiter(3, 10.0, clock=lambda: now[0])
    assert [limiter.record_failure("a") for _ in range(3)] == [False, False, True]
    assert limiter.is_blocked("a") and not limiter.is_blocked("b")
    now[0] = 10.0
    assert not limiter.is_blocked("a")
    limiter.record_failure("a")
    now[0] = 25.0
    limiter.forget_expired()
    assert not limiter.record_failure("a")  # the old failure aged out
