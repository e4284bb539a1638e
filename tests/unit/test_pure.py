"""Pure parts: variables, matchers, redaction, message building."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from conformance.expect import Observation, ids_of, judge, judge_id_form
from conformance.messages import build, pad_to, size_value, unescape
from conformance.model import Profile, ReplyMatch
from conformance.reply import Reply
from conformance.transcript import REDACTED, Redactor, Transcript
from conformance.variables import MissingValue, resolve

PROFILE = Profile(
    file="p.yaml",
    name="p",
    host="127.0.0.1",
    ports={"submission": 587},
    domains={"verified": "acme.test"},
    recipients=("a@sink.test", "b@sink.test"),
    limits={"message_size": 5242880.0},
)
GOOD_ID = "email_018f4f3e-7b2c-7c80-8e21-1a3a4f5b6c7d"


def test_variables_resolve_and_only_resolve() -> None:
    value = {"from": "x@${domains.verified}", "list": ["${recipients.1}", "${limits.message_size}"]}
    assert resolve(value, PROFILE) == {"from": "x@acme.test", "list": ["b@sink.test", "5242880"]}
    with pytest.raises(MissingValue, match=r"domains\.unverified"):
        resolve("${domains.unverified}", PROFILE)
    assert resolve("$(whoami) {x} ${", PROFILE) == "$(whoami) {x} ${"


def obs(code: int, *lines: str, **kw: Any) -> Observation:
    return Observation(Reply(code, lines), **kw)


@pytest.mark.parametrize(
    ("match", "observation", "problem"),
    [
        (ReplyMatch(code=(250,)), obs(550, "5.7.1 no"), "expected reply code 250"),
        (ReplyMatch(reply_class=(5,)), obs(250, "OK"), "expected a 5xx reply"),
        (
            ReplyMatch(enhanced="5.7.0"),
            obs(530, "Must issue"),
            "expected enhanced status code 5.7.0",
        ),
        (ReplyMatch(text="ids="), obs(250, "OK"), "matching /ids=/"),
        (
            ReplyMatch(has_extensions=("STARTTLS",)),
            obs(250, "host", "AUTH PLAIN"),
            "to advertise STARTTLS",
        ),
        (
            ReplyMatch(lacks_extensions=("AUTH",)),
            obs(250, "host", "AUTH PLAIN"),
            "not to advertise AUTH",
        ),
        (
            ReplyMatch(extension_values=(("SIZE", "10"),)),
            obs(250, "host", "SIZE 20"),
            "SIZE 10, got SIZE 20",
        ),
        (ReplyMatch(ids_count=1), obs(250, "2.0.0 OK"), "an ids= field"),
        (ReplyMatch(ids_count=2), obs(250, f"2.0.0 OK ids={GOOD_ID}"), "expected 2 id(s)"),
        (ReplyMatch(ids_count=2), obs(250, f"OK ids={GOOD_ID} {GOOD_ID}"), "unique"),
        (
            ReplyMatch(ids_count=1),
            obs(250, f"OK ids={GOOD_ID}", seen_ids=frozenset({GOOD_ID})),
            "ids seen before",
        ),
        (ReplyMatch(ids_count=1), obs(250, "OK ids=" + GOOD_ID + " " * 600), "at most 512 octets"),
        (ReplyMatch(closed=True), obs(250, "OK"), "to close the connection"),
        (ReplyMatch(tls=True), obs(220, "Ready"), "TLS to be established"),
        (ReplyMatch(no_reply=True), obs(250, "OK"), "expected no reply"),
        (ReplyMatch(refused=True), obs(235, "2.7.0 ok"), "expected the server to refuse"),
        (
            ReplyMatch(enhanced_every_line=True),
            obs(250, "2.0.0 a", "b"),
            "every line to carry 2.0.0",
        ),
    ],
)
def test_expect_each_mismatch_is_named(
    match: ReplyMatch, observation: Observation, problem: str
) -> None:
    problems = judge(match, observation)
    assert any(problem in p for p in problems), problems


def test_expect_passes_matching_reply_and_gathers_ids_across_lines() -> None:
    second = GOOD_ID.replace("7d", "7e")
    reply = Reply(250, (f"2.0.0 OK ids={GOOD_ID}", f"2.0.0 ids={second}"))
    assert ids_of(reply) == [GOOD_ID, second]
    match = ReplyMatch(code=(250,), ids_count="recipients", enhanced_every_line=True)
    assert judge(match, Observation(reply, accepted_recipients=2)) == []
    assert ids_of(Reply(250, (f"OK ids={GOOD_ID}",))) == [GOOD_ID]  # the contract's literal form
    assert judge(ReplyMatch(refused=True), Observation(None, closed=True, error="closed")) == []


def test_redaction_of_secrets_and_auth_payloads() -> None:
    secret = "ap_live_abcdef123456"
    transcript = Transcript(Redactor([secret]))
    payload = base64.b64encode(f"\0anypost\0{secret}".encode()).decode()
    transcript.sent(f"AUTH PLAIN {payload}")
    transcript.sent(base64.b64encode(secret.encode()).decode())
    transcript.received(535, [f"5.7.8 bad key {secret}"])
    text = transcript.render()
    assert secret not in text and payload not in text
    assert text.count(REDACTED) == 3
    transcript.sent("MAIL FROM:<probe@acme.test>")
    assert "MAIL FROM:<probe@acme.test>" in transcript.render()


def test_messages_exact_size_and_escapes() -> None:
    data, verbatim = build({"from": "a@acme.test", "size": "limit-10"}, 100_000)
    assert len(data) == 99_990 and not verbatim and data.endswith(b"\r\n")
    assert size_value("limit+1", 10) == 11 and size_value(7, None) == 7
    for n in range(40, 300):
        assert len(pad_to(b"From: a\r\n\r\nb\r\n", n)) == n
    assert unescape(r"a\r\nb\x00\t") == b"a\r\nb\x00\t"
    raw, verbatim = build({"raw_body": r"x\n.\n"}, None)
    assert raw == b"x\n.\n" and verbatim


def test_messages_headers_repeat_and_fold() -> None:
    data, _ = build(
        {
            "from": "a@acme.test",
            "headers": [
                {"name": "X-Anypost-Tag", "value": "one"},
                {"name": "X-Anypost-Tag", "value": "two"},
                {"name": "X-Anypost-Tags", "value": '["a", "b"]', "fold": True},
            ],
        },
        None,
    )
    head = data.split(b"\r\n\r\n")[0]
    assert head.count(b"X-Anypost-Tag: ") == 2
    assert b'X-Anypost-Tags: ["a",\r\n "b"]' in head
    data, _ = build({"from_header": False}, None)
    assert b"\r\nFrom:" not in b"\r\n" + data.split(b"\r\n\r\n")[0]


def test_judge_id_form_is_apart_from_the_must_checks() -> None:
    # The contract asks for "one email_ ID per recipient"; UUIDv7 is its example's shape.
    odd = obs(250, "2.0.0 OK ids=email_123")
    assert judge(ReplyMatch(ids_count=1), odd) == []
    assert "lowercase UUIDv7" in judge_id_form(ReplyMatch(ids_count=1), odd)[0]
    assert judge_id_form(ReplyMatch(ids_count=1), obs(250, f"2.0.0 OK ids={GOOD_ID}")) == []
