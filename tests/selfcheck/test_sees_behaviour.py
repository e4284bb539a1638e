"""Scenarios pass only after seeing the behaviour they claim: each against the wrong servers
that used to pass it (a second wrong server beside the proof in ``CATALOGUE_PROOF``), and the
nearest conforming behaviours that must still pass."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from conformance.engine import run_scenario
from conformance.model import Verdict
from reference_server.handler import AnypostHandler
from reference_server.headers import HeaderBlock

from ..support import ServerThread, make_config
from .test_variants import COOLDOWN, THRESHOLD, catalogue, profile, start
from .test_variants import keys as keys
from .variants import VARIANTS


class ChecksLastMailboxOnly(AnypostHandler):
    """Checks only the last mailbox of From (the mirror image of the first-only parser)."""

    def authors(self, block: HeaderBlock) -> list[Any]:
        found = super().authors(block) if len(block.named("from")) == 1 else []
        return found[-1:] if found else []


def verdict(server: ServerThread, scenario_id: str) -> tuple[Verdict, str]:
    outcome = asyncio.run(
        run_scenario(catalogue()[scenario_id], profile(server), "submission", True)
    )
    return outcome.verdict, outcome.summary()


def test_block_expires_fails_without_any_block(tmp_path: Path) -> None:
    """It used to pass a server with no block: it never looked before the cooldown ended."""
    assert VARIANTS["never-blocks"]
    server = start("never-blocks", tmp_path)
    try:
        found, summary = verdict(server, "block/block-expires")
    finally:
        server.stop()
    assert found is Verdict.FAILED, summary
    assert "step 'login: AUTH PLAIN <redacted: anypost / send_only key>'" in summary


def test_every_mailbox_position_is_tried(tmp_path: Path) -> None:
    for handler in (ChecksLastMailboxOnly, VARIANTS["naive-from-parser"].handler):
        folder = tmp_path / handler.__name__  # a CA of its own (TLS contexts are cached by file)
        folder.mkdir()
        config = make_config(
            folder, auth_failure_threshold=THRESHOLD, auth_failure_cooldown=COOLDOWN
        )
        server = ServerThread(config, handler_class=handler).start()
        try:
            found, summary = verdict(server, "from/every-mailbox-checked")
        finally:
            server.stop()
        assert found is Verdict.FAILED, f"{handler.__name__}: {summary}"


@pytest.mark.parametrize(
    "scenario_id",
    [
        "sender/unverified-domain-refused",
        "sender/outside-allowed-domains-refused",
        "sender/suffix-is-not-the-domain",
    ],
)
def test_sender_refused_at_rcpt_or_data_is_still_refused(scenario_id: str, tmp_path: Path) -> None:
    """The contract says "rejected", not "at MAIL": a server that refuses at RCPT (Postfix's
    smtpd_delay_reject) conforms, and is only warned that the reference refuses at MAIL."""

    class RefusesAtRcpt(AnypostHandler):
        async def handle_MAIL(
            self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
        ) -> str:
            self._verdict = await super().handle_MAIL(server, session, envelope, address, options)
            envelope.mail_from = address
            envelope.mail_options.extend(options)
            return "250 2.1.0 OK"

        async def handle_RCPT(
            self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
        ) -> str:
            if not self._verdict.startswith("250"):
                return self._verdict
            return await super().handle_RCPT(server, session, envelope, address, options)

    config = make_config(tmp_path, auth_failure_threshold=THRESHOLD, auth_failure_cooldown=COOLDOWN)
    server = ServerThread(config, handler_class=RefusesAtRcpt).start()
    try:
        outcome = asyncio.run(
            run_scenario(catalogue()[scenario_id], profile(server), "submission", True)
        )
    finally:
        server.stop()
    assert outcome.verdict is Verdict.PASSED, outcome.summary()
    assert outcome.should_failures  # warned: the reference refuses at MAIL
