"""A judge never harms its target: no key of the profile goes on a session without verified TLS.

The whole catalogue runs against plaintext servers of the test's own that record every line
they receive and accept every credential: one answers STARTTLS with ``250 2.0.0 OK`` and never
starts TLS (the measured case: 53 keys on the wire in one run), one does not offer STARTTLS at
all. Not one profile key may arrive, in clear or in base64, and nothing that needs a login may
pass.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
import trustme

from conformance.engine import Outcome, run_scenario
from conformance.model import Profile, Verdict
from conformance.steps import decoy_secret

from ..selfcheck.test_variants import catalogue
from ..selfcheck.test_variants import profile as selfcheck_profile
from ..selfcheck.test_variants import start as start_variant
from ..support import KEYS, ServerThread, make_config


class Recorder:
    """A plaintext SMTP server that accepts anything and records every line it is sent."""

    def __init__(self, starttls_reply: str | None) -> None:
        self.starttls_reply = starttls_reply  # None: STARTTLS is not offered (502)
        self.lines: list[bytes] = []
        self.loop = asyncio.new_event_loop()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def say(*lines: str) -> None:
            writer.write(b"".join(f"{line}\r\n".encode() for line in lines))

        say("220 recorder.test ESMTP")
        in_data = False
        try:
            while line := await asyncio.wait_for(reader.readline(), 30):
                self.lines.append(line)
                if in_data:
                    if line == b".\r\n":
                        in_data = False
                        say("250 2.0.0 OK ids=email_018f4f3e-7b2c-7c80-8e21-1a3a4f5b6c7d")
                    continue
                verb = line.split(b" ", 1)[0].strip().upper()
                if verb in (b"EHLO", b"HELO"):
                    offer = ["250-STARTTLS"] if self.starttls_reply else []
                    say("250-recorder.test", *offer, "250-AUTH PLAIN LOGIN", "250 SIZE 5242880")
                elif verb == b"STARTTLS":
                    say(self.starttls_reply or "502 5.5.1 Not offered")
                elif verb == b"AUTH":
                    parts = line.split()
                    say("334 " if len(parts) == 2 else "235 2.7.0 OK")
                elif verb == b"DATA":
                    in_data = True
                    say("354 go on")
                elif verb == b"QUIT":
                    say("221 2.0.0 Bye")
                    break
                elif re.fullmatch(rb"[A-Za-z0-9+/=]+\r?\n", line):
                    say("235 2.7.0 OK")  # a credential line after 334
                else:
                    say("250 2.0.0 OK")
                await writer.drain()
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    @contextmanager
    def running(self) -> Iterator[Recorder]:
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._session, "127.0.0.1", 0)
        )
        self.port = self.server.sockets[0].getsockname()[1]
        thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:

            async def shutdown() -> None:
                assert self.server is not None
                self.server.close()
                for task in asyncio.all_tasks():
                    if task is not asyncio.current_task():
                        task.cancel()

            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            thread.join(10)
            self.loop.close()

    def received(self) -> list[str]:
        """Every line received, and every base64 token of it decoded (AUTH payloads)."""
        seen = []
        for line in self.lines:
            seen.append(line.decode("latin-1"))
            for token in re.findall(rb"[A-Za-z0-9+/=]{8,}", line):
                with suppress(binascii.Error, ValueError):
                    seen.append(base64.b64decode(token, validate=True).decode("latin-1"))
        return seen


def _profile(recorder: Recorder, tmp_path: Path) -> Profile:
    """The self-check's profile (every role, a CA to verify against) aimed at the recorder."""
    ca = trustme.CA()
    ca_file = tmp_path / "recorder-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    stand_in = SimpleNamespace(port=recorder.port, ca=str(ca_file), config=make_config(tmp_path))
    return selfcheck_profile(cast(ServerThread, stand_in))


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for role in ("send_only", "full_access", "no_send", "restricted"):
        monkeypatch.setenv(f"SELFCHECK_{role.upper()}", KEYS[role])
    monkeypatch.setenv("ANYPOST_CONFORMANCE_STATE", str(tmp_path / "state"))


@pytest.mark.parametrize(
    "starttls_reply", ["250 2.0.0 OK", None], ids=["starttls-250-no-tls", "no-starttls"]
)
def test_safety_no_profile_key_reaches_a_plaintext_server(
    starttls_reply: str | None, tmp_path: Path
) -> None:
    recorder = Recorder(starttls_reply)
    with recorder.running():
        profile = _profile(recorder, tmp_path)

        async def run_all() -> dict[str, Verdict]:
            verdicts = {}
            for sid, scenario in sorted(catalogue().items()):
                outcome = await run_scenario(
                    scenario, profile, "submission", include_destructive=True
                )
                verdicts[sid] = outcome.verdict
            return verdicts

        verdicts = asyncio.run(run_all())
    received = recorder.received()
    profile_keys = [KEYS[r] for r in ("send_only", "full_access", "no_send", "restricted")]
    profile_keys.append("ap_selfcheck_invalid_key")  # the invalid role's literal is a key too
    leaked = {key for key in profile_keys for text in received if key in text}
    assert not leaked, f"profile keys sent to a plaintext server: {leaked}"
    # The probes did run (AUTH went out, with decoys), so the absence above means something.
    auth_lines = [t for t in received if t.upper().startswith("AUTH ")]
    assert auth_lines
    decoy = decoy_secret(KEYS["send_only"], "x")
    assert any(len(t) >= len(decoy) and "\0anypost\0ap_" in t for t in received)
    # Nothing that needs a login or TLS passes: the key was never sent, so nothing was seen.
    passed = {sid for sid, v in verdicts.items() if v is Verdict.PASSED}
    needs_tls = {
        sid
        for sid, s in catalogue().items()
        if any(step.kind in ("login", "starttls") for step in s.steps)
    }
    assert not passed & needs_tls, sorted(passed & needs_tls)


def test_safety_login_refuses_auth_when_starttls_answered_250_without_tls(
    tmp_path: Path,
) -> None:
    recorder = Recorder("250 2.0.0 OK")
    with recorder.running():
        outcome = asyncio.run(
            run_scenario(
                catalogue()["auth/send-only-key-plain"], _profile(recorder, tmp_path), "submission"
            )
        )
    assert outcome.verdict is Verdict.BLOCKED and outcome.blocked_by == "TLS-1"
    assert "STARTTLS answered 250 2.0.0 OK but TLS never started; the key was not sent" in (
        outcome.reason
    )
    assert not any(line.upper().startswith(b"AUTH") for line in recorder.lines)


def test_safety_starttls_454_in_login_is_inconclusive(tmp_path: Path) -> None:
    """A 454 (TLS not available now) is the target's transient trouble, not a verdict on AUTH."""
    recorder = Recorder("454 4.7.0 TLS not available due to temporary reason")
    with recorder.running():
        outcome = asyncio.run(
            run_scenario(
                catalogue()["auth/send-only-key-plain"], _profile(recorder, tmp_path), "submission"
            )
        )
    assert outcome.verdict is Verdict.INCONCLUSIVE, outcome.summary()
    assert "STARTTLS answered 454 4.7.0" in outcome.reason
    assert not any(line.upper().startswith(b"AUTH") for line in recorder.lines)


def test_safety_decoy_has_the_shape_of_the_key_and_changes_per_run() -> None:
    key = KEYS["send_only"]
    first, again, other = (
        decoy_secret(key, "run-1"),
        decoy_secret(key, "run-1"),
        decoy_secret(key, "run-2"),
    )
    assert first == again and first != other
    assert first != key and first.startswith("ap_test_send_only_")
    assert len(first) == len(key)
    hex_key = "ap_" + "0123456789abcdef" * 2
    hex_decoy = decoy_secret(hex_key, "run-1")
    assert len(hex_decoy) == len(hex_key) and re.fullmatch(r"ap_[0-9a-f]{32}", hex_decoy)


def test_safety_535_before_tls_fails_and_530_passes(tmp_path: Path) -> None:
    """A server that judges the (decoy) credential in clear fails; the reference's 530 passes."""
    scenario = catalogue()["starttls/auth-refused-before-tls"]

    def outcome_against(variant: str | None) -> Outcome:
        server = start_variant(variant, tmp_path / (variant or "reference"))
        try:
            return asyncio.run(run_scenario(scenario, selfcheck_profile(server), "submission"))
        finally:
            server.stop()

    judged = outcome_against("judges-credentials-before-tls")
    assert judged.verdict is Verdict.FAILED, judged.summary()
    assert "judged a credential on a plaintext session" in judged.summary()
    assert KEYS["send_only"] not in judged.transcript.render()
    refused = outcome_against(None)
    assert refused.verdict is Verdict.PASSED, refused.summary()
