"""The engine against real servers on loopback: the reference server, and small aiosmtpd-based
servers that misbehave. Every misbehaviour is a failed verdict, with the transcript, in time."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.smtp import SMTP

from conformance.engine import run_scenario
from conformance.loader import load_scenarios
from conformance.model import KeyRef, Profile, Scenario, Tls, Verdict

from ..support import KEYS, OUTSIDE_ALLOWED, UNVERIFIED, VERIFIED, ServerThread

CATALOGUE = Path(__file__).resolve().parents[2] / "scenarios"
TIMEOUT = 1.0


def scenario(scenario_id: str) -> Scenario:
    for file in CATALOGUE.rglob("*.scenario.yaml"):
        for s in load_scenarios(file):
            if s.id == scenario_id:
                return s
    raise LookupError(scenario_id)


def profile_for(port: int, ca: str | None, **changes: Any) -> Profile:
    fields: dict[str, Any] = {
        "file": "test-profile.yaml",
        "name": "test",
        "host": "127.0.0.1",
        "ports": {"submission": port},
        "tls": Tls(ca_file=Path(ca) if ca else None, server_name="localhost"),
        "timeout": TIMEOUT,
        "scenario_deadline": 20.0,
        "keys": {
            "send_only": KeyRef("send_only", env="TEST_KEY_SEND_ONLY"),
            "restricted": KeyRef(
                "restricted", env="TEST_KEY_RESTRICTED", allowed_domains=(VERIFIED,)
            ),
            "invalid": KeyRef("invalid", value="ap_not_a_key_at_all"),
        },
        "domains": {
            "verified": VERIFIED,
            "outside_allowed": OUTSIDE_ALLOWED,
            "unverified": UNVERIFIED,
        },
        "recipients": tuple(f"r{i}@sink.test" for i in range(30)),
        "limits": {
            "message_size": 5242880.0,
            "auth_failure_threshold": 20.0,
            "auth_failure_cooldown": 1.0,
        },
    }
    fields.update(changes)
    return Profile(**fields)


@pytest.fixture(autouse=True)
def keys_in_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TEST_KEY_SEND_ONLY", KEYS["send_only"])
    monkeypatch.setenv("TEST_KEY_RESTRICTED", KEYS["restricted"])
    monkeypatch.setenv("ANYPOST_CONFORMANCE_STATE", str(tmp_path / "state"))


def run(s: Scenario, profile: Profile, **kw: Any) -> Any:
    return asyncio.run(run_scenario(s, profile, "submission", **kw))


def test_engine_passes_against_the_reference_server(server: ServerThread) -> None:
    outcome = run(
        scenario("starttls/authenticated-submission"), profile_for(server.port, server.ca)
    )
    assert outcome.verdict is Verdict.PASSED, outcome.summary()
    text = outcome.transcript.render()
    assert "ids=email_" in text and KEYS["send_only"] not in text
    assert "AUTH PLAIN <redacted: anypost / send_only key>" in text


def test_engine_missing_role_is_not_verified(server: ServerThread) -> None:
    profile = profile_for(server.port, server.ca, keys={})
    outcome = run(scenario("starttls/authenticated-submission"), profile)
    assert outcome.verdict is Verdict.NOT_VERIFIED
    assert "no key of role send_only" in outcome.reason


def test_engine_missing_env_is_not_verified(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_KEY_SEND_ONLY")
    outcome = run(scenario("auth/send-only-key-plain"), profile_for(server.port, server.ca))
    assert outcome.verdict is Verdict.NOT_VERIFIED and "TEST_KEY_SEND_ONLY" in outcome.reason


def test_engine_destructive_needs_opt_in(server: ServerThread) -> None:
    outcome = run(scenario("block/repeated-failures-blocked"), profile_for(server.port, server.ca))
    assert outcome.verdict is Verdict.NOT_VERIFIED and "--include-destructive" in outcome.reason


def test_engine_should_failure_warns_unless_strict(server: ServerThread) -> None:
    # The reference server answers 235 2.7.0; a SHOULD asking for 2.7.9 is not met.
    import dataclasses

    s = scenario("auth/send-only-key-plain")
    step = s.steps[0]
    assert step.expect.should is not None
    should = dataclasses.replace(step.expect.should, enhanced="2.7.9")
    altered = dataclasses.replace(
        s,
        steps=(dataclasses.replace(step, expect=dataclasses.replace(step.expect, should=should)),),
    )
    relaxed = run(altered, profile_for(server.port, server.ca))
    strict = run(altered, profile_for(server.port, server.ca), strict=True)
    assert relaxed.verdict is Verdict.PASSED and relaxed.should_failures
    assert strict.verdict is Verdict.FAILED


class _Silent(SMTP):
    async def smtp_EHLO(self, hostname: str) -> None:
        await asyncio.sleep(3600)


class _Garbage(SMTP):
    async def smtp_EHLO(self, hostname: str) -> None:
        await self.push("this is not SMTP at all")


class _NoTls(SMTP):
    async def smtp_STARTTLS(self, arg: str) -> None:
        await self.push("220 2.0.0 Go ahead")
        await asyncio.sleep(3600)  # and never shake hands


class _DropsMidData(SMTP):
    async def smtp_AUTH(self, arg: str) -> None:
        await self.push("235 2.7.0 OK")

    async def smtp_DATA(self, arg: str) -> None:
        await self.push("354 go on")
        await self._reader.readline()
        assert self.transport is not None
        self.transport.close()


class _Accepting:
    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        envelope.rcpt_tos.append(address)
        return "250 OK"


@contextmanager
def misbehaving(cls: type[SMTP], tmp_path: Path) -> Iterator[tuple[int, str]]:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    ca_file = tmp_path / "mis-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    loop = asyncio.new_event_loop()
    handler = _Accepting()

    def factory() -> SMTP:
        return cls(handler, tls_context=context, hostname="localhost", loop=loop)

    # aiosmtpd's Controller cannot take port 0, so the server gets a loop of its own here.
    server = loop.run_until_complete(loop.create_server(factory, "127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield server.sockets[0].getsockname()[1], str(ca_file)
    finally:

        async def shutdown() -> None:
            server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()


@pytest.mark.parametrize(
    ("cls", "says"),
    [
        (_Silent, "no reply within 1s"),
        (_Garbage, "malformed reply"),
        (_NoTls, "TLS handshake"),
        (_DropsMidData, "the server closed the connection"),
    ],
    ids=["silent", "garbage", "no-tls", "drops-mid-data"],
)
def test_engine_misbehaving_target_is_a_failed_verdict_in_time(
    cls: type[SMTP], says: str, tmp_path: Path
) -> None:
    with misbehaving(cls, tmp_path) as (port, ca):
        started = time.monotonic()
        outcome = run(scenario("starttls/authenticated-submission"), profile_for(port, ca))
        elapsed = time.monotonic() - started
    assert outcome.verdict is Verdict.FAILED, outcome.summary()
    assert any(says in p for f in outcome.failures for p in f.problems), outcome.summary()
    assert len(outcome.transcript) > 0
    assert elapsed < 10 * TIMEOUT


def test_engine_refused_connection_blocks_the_scenario_and_fails_the_run() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        outcome = run(scenario("starttls/upgrade-succeeds"), profile_for(port, None))
    # The connection is a precondition of a STARTTLS scenario, charged to SESSION-1.
    assert outcome.verdict is Verdict.BLOCKED and outcome.blocked_by == "SESSION-1"
    assert outcome.fails_run(strict=False)
    assert "connect to 127.0.0.1" in outcome.summary()


def test_engine_refuses_to_mail_strangers(server: ServerThread) -> None:
    profile = profile_for(server.port, server.ca, recipients=("only@sink.test",))
    s = scenario("starttls/authenticated-submission")
    import dataclasses

    steps = list(s.steps)
    rcpt_index = next(i for i, st in enumerate(steps) if st.kind == "rcpt")
    steps[rcpt_index] = dataclasses.replace(steps[rcpt_index], args="stranger@elsewhere.test")
    outcome = run(dataclasses.replace(s, steps=tuple(steps)), profile)
    assert outcome.verdict is Verdict.ERROR
    assert "refusing to send DATA to stranger@elsewhere.test" in outcome.reason


def test_engine_message_budget_stops_sending(server: ServerThread) -> None:
    profile = profile_for(server.port, server.ca, budget_messages=0)
    outcome = run(scenario("starttls/authenticated-submission"), profile)
    assert outcome.verdict is Verdict.NOT_VERIFIED and "message budget" in outcome.reason


def test_engine_waits_the_budget_out_before_the_session_not_inside_it(tmp_path: Path) -> None:
    """A target that closes idle sessions sooner than its cooldown ends (RFC 5321 §4.5.3.2
    lets it): a scenario whose failed login must wait the cooldown out waits before it
    connects, so its session is never idled out and the login is judged."""
    from ..support import make_config, running

    cooldown = 2.5
    config = make_config(
        tmp_path, auth_failure_threshold=3, auth_failure_cooldown=cooldown, idle_timeout=1.0
    )
    chosen = scenario("auth/wrong-username-refused")
    with running(config) as target:
        profile = profile_for(
            target.port,
            target.ca,
            limits={"auth_failure_threshold": 3.0, "auth_failure_cooldown": cooldown},
        )

        async def four() -> list[Any]:
            # The budget admits 2 failed logins per cooldown: the third waits it out.
            return [await run_scenario(chosen, profile, "submission") for _ in range(4)]

        started = time.monotonic()
        outcomes = asyncio.run(four())
        elapsed = time.monotonic() - started
    assert elapsed >= cooldown, "no run waited on the budget: the test proves nothing"
    for outcome in outcomes:
        assert outcome.verdict is Verdict.PASSED, outcome.summary()
        assert "Idle timeout" not in outcome.transcript.render()
