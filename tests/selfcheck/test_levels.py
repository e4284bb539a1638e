"""No MUST (nor warning) beyond what the target owes: enhanced status codes only where
ENHANCEDSTATUSCODES is advertised (RFC 2034 §3), choices the contract leaves open only where the
profile declares them."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from pathlib import Path
from typing import Any

from conformance.engine import run_scenario
from conformance.model import Verdict
from reference_server.handler import AnypostHandler

from ..support import ServerThread, make_config
from .test_variants import COOLDOWN, THRESHOLD, catalogue, profile, start
from .test_variants import keys as keys
from .variants import NoEnhancedCodes


class PlainCodesNotAdvertised(NoEnhancedCodes):
    """Plain codes, and honest about it: EHLO does not advertise ENHANCEDSTATUSCODES."""

    async def push(self, status: Any) -> None:
        if isinstance(status, str) and "ENHANCEDSTATUSCODES" in status.upper():
            return
        await super().push(status)


def outcomes(server: ServerThread, ids: list[str], **changes: Any) -> dict[str, Any]:
    target = dataclasses.replace(profile(server), **changes)

    async def go() -> dict[str, Any]:
        return {i: await run_scenario(catalogue()[i], target, "submission", True) for i in ids}

    return asyncio.run(go())


def test_enhanced_codes_are_owed_only_where_advertised(tmp_path: Path) -> None:
    config = make_config(tmp_path, auth_failure_threshold=THRESHOLD, auth_failure_cooldown=COOLDOWN)
    server = ServerThread(config, smtp_class=PlainCodesNotAdvertised).start()
    try:
        found = outcomes(
            server,
            ["auth/send-only-key-plain", "ids/one-recipient", "session/enhanced-status-codes"],
        )
    finally:
        server.stop()
    for sid in ("auth/send-only-key-plain", "ids/one-recipient"):
        assert found[sid].verdict is Verdict.PASSED, found[sid].summary()
        assert not found[sid].should_failures, found[sid].summary()  # not even a warning
    session = found["session/enhanced-status-codes"]
    assert session.verdict is Verdict.NOT_VERIFIED
    assert "does not advertise ENHANCEDSTATUSCODES" in session.reason


def test_enhanced_codes_advertised_but_missing_still_warn(tmp_path: Path) -> None:
    server = start("no-enhanced-codes", tmp_path)
    try:
        found = outcomes(server, ["auth/send-only-key-plain"])
    finally:
        server.stop()
    outcome = found["auth/send-only-key-plain"]
    assert outcome.verdict is Verdict.PASSED and outcome.should_failures


def test_policy_scenarios_run_only_where_the_profile_declares_the_choice(tmp_path: Path) -> None:
    server = start(None, tmp_path)
    ids = ["from/missing-from-refused", "ids/duplicate-recipient-one-id"]
    try:
        undeclared = outcomes(server, ids, policy={})
        other = outcomes(server, ids, policy={"missing_from": "add"})
        declared = outcomes(server, ids)
    finally:
        server.stop()
    assert undeclared["from/missing-from-refused"].verdict is Verdict.NOT_VERIFIED
    assert "declares no policy.missing_from" in undeclared["from/missing-from-refused"].reason
    assert other["from/missing-from-refused"].verdict is Verdict.NOT_VERIFIED
    assert "the profile declares add" in other["from/missing-from-refused"].reason
    assert all(o.verdict is Verdict.PASSED for o in declared.values())


class Uuid4Ids(AnypostHandler):
    """One email_ id per recipient, as the contract asks, but random UUIDs (version 4) rather
    than the reference server's UUIDv7: the shape of the contract's example, not a rule of it."""

    def accepted_reply(self, ids: tuple[str, ...]) -> str:
        return super().accepted_reply(tuple(f"email_{uuid.uuid4()}" for _ in ids))


def test_ids_of_another_shape_warn_but_do_not_fail(tmp_path: Path) -> None:
    config = make_config(tmp_path, auth_failure_threshold=THRESHOLD, auth_failure_cooldown=COOLDOWN)
    server = ServerThread(config, handler_class=Uuid4Ids).start()
    try:
        found = outcomes(server, ["ids/one-recipient", "ids/several-recipients"])
    finally:
        server.stop()
    for sid, outcome in found.items():
        assert outcome.verdict is Verdict.PASSED, outcome.summary()
        warned = [p for f in outcome.should_failures for p in f.problems]
        assert any("UUIDv7" in p for p in warned), (sid, warned)
