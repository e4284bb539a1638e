"""The harness sees the wire as it is: misbehaving servers made here, on loopback, against the
catalogue's scenarios and raw steps. Each misbehaviour is reported as a failure of its own
rule with the bytes; the well-behaved twin of each server passes the same scenario."""

from __future__ import annotations

import dataclasses
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.smtp import SMTP, AuthResult

from conformance.errors import Location
from conformance.loader import DEFAULT_EXPECT, find_scenario_files, load_scenarios
from conformance.model import Expectation, ReplyMatch, Scenario, Step, Verdict

from ..support import KEYS, OUTSIDE_ALLOWED, UNVERIFIED, VERIFIED
from .test_engine import CATALOGUE, keys_in_env, misbehaving, profile_for, run, scenario  # noqa: F401 (autouse)
from .wire_servers import wire_server

HERE = Location("test_wire.py", 1, 1)


def _rules(outcome: Any) -> set[str]:
    return {f.requirement for f in outcome.failures + outcome.should_failures if f.requirement}


def test_wire_well_behaved_test_server_passes(tmp_path: Path) -> None:
    with wire_server(tmp_path) as (port, ca):
        for sid in ("wire/replies-end-with-crlf", "starttls/authenticated-submission"):
            outcome = run(scenario(sid), profile_for(port, ca))
            assert outcome.verdict is Verdict.PASSED, outcome.summary()


def test_wire_bare_lf_replies_fail_rfc_9_and_the_scenario_goes_on(tmp_path: Path) -> None:
    with wire_server(tmp_path, eol=b"\n") as (port, ca):
        outcome = run(scenario("starttls/authenticated-submission"), profile_for(port, ca))
    assert outcome.verdict is Verdict.FAILED
    assert _rules(outcome) == {"RFC-9"}, outcome.summary()
    # Every step still ran and was judged: the message went through and its ids were checked.
    assert {r.verdict for r in outcome.steps_run} == {"ok"}
    assert "ids=email_" in outcome.transcript.render()
    problems = [p for f in outcome.failures for p in f.problems]
    assert any("bare LF ends line 1 of the reply, 220 localhost" in p for p in problems)
    assert "220 localhost wire test server\\n" in outcome.transcript.render()


def _raw(send: str, replies: int, expect: ReplyMatch | None = None) -> Step:
    return Step(
        "raw",
        {"send": send, "replies": replies},
        Expectation(expect or ReplyMatch(), None, explicit=expect is not None),
        HERE,
    )


def _session(*steps: Step) -> Scenario:
    hello = Step("ehlo", "client.test", Expectation(DEFAULT_EXPECT["ehlo"] or ReplyMatch()), HERE)
    return Scenario(
        "test/raw",
        "raw",
        ("RFC-12",),
        scenario("wire/space-after-code").level,
        (hello, *steps),
        HERE,
    )


def test_wire_three_replies_in_one_segment_are_each_read(tmp_path: Path) -> None:
    writes: list[int] = []
    with wire_server(tmp_path, group=True, writes=writes) as (port, ca):
        outcome = run(
            _session(_raw("NOOP\\r\\nNOOP\\r\\nNOOP\\r\\n", 3, ReplyMatch(code=(250,)))),
            profile_for(port, ca),
        )
    assert outcome.verdict is Verdict.PASSED, outcome.summary()
    assert outcome.transcript.render().count("< 250 2.0.0 OK") == 3
    assert 3 in writes, writes  # the three replies went out in one write, as Postfix does


def test_wire_fewer_replies_read_than_owed_is_the_scenario_not_the_server(tmp_path: Path) -> None:
    # The nearest case on the other side: a raw step that says it owes 3 replies gets 3; one
    # that says 1 for three commands leaves two the server did owe, and they are extras only
    # by the scenario's count. The count is the scenario author's promise.
    with wire_server(tmp_path) as (port, ca):
        outcome = run(_session(_raw("NOOP\\r\\nNOOP\\r\\nNOOP\\r\\n", 1)), profile_for(port, ca))
    assert "RFC-12" in _rules(outcome)


def test_wire_every_reply_twice_is_reported_as_extra_with_its_bytes(tmp_path: Path) -> None:
    with wire_server(tmp_path, times=2) as (port, ca):
        outcome = run(scenario("wire/one-reply-per-command"), profile_for(port, ca))
    assert outcome.verdict is Verdict.FAILED
    assert "RFC-12" in _rules(outcome), outcome.summary()
    text = outcome.summary()
    assert "a reply no command was waiting for" in text and "220 localhost" in text
    assert "Unexpected EOF" not in text


@pytest.mark.parametrize("delay", [0.0, 0.002, 0.03])
def test_wire_smuggling_verdict_does_not_depend_on_timing(delay: float, tmp_path: Path) -> None:
    s = scenario("security/bare-lf-dot-does-not-end-data")
    with wire_server(tmp_path, lenient_end_of_data=True, delay=delay) as (port, ca):
        outcomes = [run(s, profile_for(port, ca)) for _ in range(10)]
    assert {o.verdict for o in outcomes} == {Verdict.FAILED}, [o.summary() for o in outcomes]
    for outcome in outcomes:
        # The smuggled MAIL's 250 2.1.0 never passes for the NOOP's reply unnoticed.
        assert "RFC-12" in _rules(outcome) or any(
            f.requirement is None for f in outcome.failures
        ), outcome.summary()
    (tmp_path / "sound").mkdir()
    with wire_server(tmp_path / "sound", delay=delay) as (port, ca):
        sound = [run(s, profile_for(port, ca)) for _ in range(3)]
    assert {o.verdict for o in sound} == {Verdict.PASSED}, [o.summary() for o in sound]


def test_wire_close_during_tls_handshake_says_so(tmp_path: Path) -> None:
    with wire_server(tmp_path, close_in_handshake=True) as (port, ca):
        outcome = run(scenario("starttls/upgrade-succeeds"), profile_for(port, ca))
    assert outcome.verdict is Verdict.FAILED
    assert "the server closed the connection during the TLS handshake" in outcome.summary()


@pytest.mark.parametrize(
    ("name", "detail", "expected"),
    [
        ("not-hostile.invalid", "Hostname mismatch", "not-hostile.invalid"),
        (None, "IP address mismatch", "127.0.0.1"),  # no server_name: the host is checked
    ],
)
def test_wire_certificate_for_another_name_says_which(
    name: str | None, detail: str, expected: str, tmp_path: Path
) -> None:
    with wire_server(tmp_path) as (port, ca):
        profile = profile_for(port, ca)
        profile = dataclasses.replace(
            profile, tls=dataclasses.replace(profile.tls, server_name=name)
        )
        outcome = run(scenario("starttls/upgrade-succeeds"), profile)
    assert outcome.verdict is Verdict.FAILED
    text = outcome.summary()
    assert f"TLS handshake: certificate verify failed: {detail}" in text, text
    assert f"(certificate names localhost; the profile expects {expected})" in text, text


def _garbage_profile(folder: Path, port: int, ca: str) -> Path:
    profile = {
        "schema_version": 1,
        "name": "garbage",
        "target": {
            "host": "127.0.0.1",
            "ports": {"submission": port},
            "tls": {"ca_file": ca, "server_name": "localhost"},
            "timeout": 1,
        },
        "keys": {
            "send_only": {"env": "WIRE_KEY_SEND_ONLY"},
            "full_access": {"env": "WIRE_KEY_SEND_ONLY"},
            "no_send": {"env": "WIRE_KEY_SEND_ONLY"},
            "restricted": {"env": "WIRE_KEY_SEND_ONLY", "allowed_domains": [VERIFIED]},
            "invalid": {"value": "ap_wire_invalid_key"},
        },
        "domains": {
            "verified": VERIFIED,
            "outside_allowed": OUTSIDE_ALLOWED,
            "unverified": UNVERIFIED,
        },
        "recipients": [f"r{i}@sink.test" for i in range(25)],
        "limits": {
            "message_size": 5242880,
            "auth_failure_threshold": 3,
            "auth_failure_cooldown": 1,
        },
    }
    path = folder / "profile.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


def test_wire_binary_greeting_cannot_bloat_the_reports(tmp_path: Path) -> None:
    greeting = random.Random(7).randbytes(4096)
    with wire_server(tmp_path, greeting=greeting) as (port, ca):
        reports = tmp_path / "reports"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "conformance",
                "run",
                "--target",
                str(_garbage_profile(tmp_path, port, ca)),
                "--report-dir",
                str(reports),
                str(CATALOGUE),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            env={
                **os.environ,
                "WIRE_KEY_SEND_ONLY": KEYS["send_only"],
                "ANYPOST_CONFORMANCE_STATE": str(tmp_path / "state"),
            },
        )
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    size = sum(p.stat().st_size for p in reports.rglob("*") if p.is_file())
    parts = {
        p.name: sum(f.stat().st_size for f in ([p] if p.is_file() else p.rglob("*")))
        for p in reports.iterdir()
    }
    # Most of it is what every failing scenario costs whatever the server sent (about 12 KB a
    # run over the five reports); the garbage itself is about 3 KB a scenario. The bound grows
    # with the catalogue: an uncapped 4 KB greeting (16 KB escaped in each report) breaks it.
    runs = sum(len(load_scenarios(f)) for f in find_scenario_files([CATALOGUE]))
    assert size < 16 * 1024 * runs, f"reports take {size} octets for {runs} runs: {parts}"
    longest = max(len(line) for line in done.stdout.splitlines())
    assert longest < 2500, f"a console line of {longest} characters"
    report = (reports / "conformance.json").read_text()
    assert "RFC-10" in report and "[binary, " in report
    for name in ("conformance.md", "conformance.html", "junit.xml"):
        text = (reports / name).read_bytes()
        assert b"\x00" not in text and b"\x1b" not in text, name
        text.decode("utf-8")


def test_wire_step_labels_read_like_the_exchange(server: Any) -> None:
    s = scenario("starttls/authenticated-submission")
    steps = list(s.steps)
    mail = next(i for i, st in enumerate(steps) if st.kind == "mail")
    refused = Expectation(ReplyMatch(reply_class=(5,)))
    steps[mail] = dataclasses.replace(steps[mail], expect=refused)
    outcome = run(dataclasses.replace(s, steps=tuple(steps)), profile_for(server.port, server.ca))
    [failure] = outcome.failures
    assert failure.step == f"MAIL FROM:<probe@{VERIFIED}>", outcome.summary()
    line = steps[mail].location.line
    assert failure.location.endswith(
        f"enforcement.scenario.yaml:{line}:{steps[mail].location.column}"
    )
    titles = [r.title for r in outcome.steps_run]
    assert titles[-1] == f"MAIL FROM:<probe@{VERIFIED}>" and "{" not in " ".join(titles)


def test_wire_every_step_kind_label_reads_like_the_exchange(server: Any) -> None:
    # connect, wait, and the commands: labels say what went on the wire or what was done,
    # never a dict of the step's arguments.
    def step(kind: str, args: Any) -> Step:
        return Step(kind, args, Expectation(DEFAULT_EXPECT[kind] or ReplyMatch()), HERE)

    s = _session(
        step("starttls", None),
        step("ehlo", "client.test"),
        step("wait", {"for": 0.05}),
        step("wait", {"for": "cooldown"}),
        step("rset", None),
        step("raw", {"send": "NOOP\\r\\nNOOP\\r\\n", "replies": 2}),
        step("raw", {"send": "", "replies": 0}),
        step("quit", None),
    )
    limits = {"auth_failure_cooldown": 0.1, "auth_failure_threshold": 20.0}
    outcome = run(s, profile_for(server.port, server.ca, limits=limits))
    assert outcome.verdict is Verdict.PASSED, outcome.summary()
    assert [r.title for r in outcome.steps_run] == [
        f"connect 127.0.0.1:{server.port}",
        "EHLO client.test",
        "STARTTLS",
        "EHLO client.test",
        "wait 0.05s",
        "wait out the auth-failure cooldown (0.6s)",
        "RSET",
        "NOOP (+1 more lines)",
        "raw: nothing sent, listening for a reply no command asked for",
        "QUIT",
    ]


def test_wire_composite_step_names_its_failing_command(server: Any) -> None:
    s = scenario("auth/send-only-key-plain")
    login = s.steps[0]
    assert login.kind in ("login", "auth")
    wrong = Expectation(ReplyMatch(code=(535,)))
    altered = dataclasses.replace(s, steps=(dataclasses.replace(login, expect=wrong),))
    outcome = run(altered, profile_for(server.port, server.ca))
    [failure] = outcome.failures
    assert failure.step.startswith(f"{login.kind}: AUTH PLAIN <redacted"), outcome.summary()


def test_wire_pipeline_needs_pipelining_advertised(tmp_path: Path) -> None:
    with wire_server(tmp_path, pipelining=False) as (port, ca):
        outcome = run(scenario("wire/pipelined-transaction"), profile_for(port, ca))
    assert outcome.verdict is Verdict.NOT_VERIFIED and "PIPELINING" in outcome.reason


def test_wire_pipelined_replies_judged_each_against_its_command(tmp_path: Path) -> None:
    writes: list[int] = []
    with wire_server(tmp_path, group=True, writes=writes) as (port, ca):
        outcome = run(scenario("wire/pipelined-transaction"), profile_for(port, ca))
    assert outcome.verdict is Verdict.PASSED, outcome.summary()
    assert 4 in writes, writes  # MAIL, RCPT, RCPT and DATA answered in one write
    titles = [r.title for r in outcome.steps_run]
    assert titles[-5:-1] == [
        f"MAIL FROM:<probe@{VERIFIED}> (pipelined)",
        "RCPT TO:<r0@sink.test> (pipelined)",
        "RCPT TO:<r1@sink.test> (pipelined)",
        "DATA (pipelined)",
    ]
    assert [r.reply.split()[0] for r in outcome.steps_run[-5:-1]] == ["250", "250", "250", "250"]


class _PlainAiosmtpd(SMTP):
    """aiosmtpd as it ships, with TLS and an authenticator that takes any credential: a second
    real implementation whose replies the strict reader must accept as they are."""

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, authenticator=lambda *_: AuthResult(success=True), **kwargs)


def test_wire_plain_aiosmtpd_replies_are_well_formed(tmp_path: Path) -> None:
    with misbehaving(_PlainAiosmtpd, tmp_path) as (port, ca):
        profile = profile_for(port, ca)
        outcomes = {
            sid: run(scenario(sid), profile)
            for sid in (
                "wire/replies-end-with-crlf",
                "wire/reply-lines-well-formed",
                "wire/multiline-codes-agree",
                "wire/one-reply-per-command",
                "wire/space-after-code",
                "wire/pipelined-transaction",
            )
        }
    for sid, outcome in outcomes.items():
        if sid == "wire/pipelined-transaction":
            # aiosmtpd does not advertise PIPELINING: the group is not sent at all.
            assert outcome.verdict is Verdict.NOT_VERIFIED, outcome.summary()
        else:
            assert outcome.verdict is Verdict.PASSED, outcome.summary()
