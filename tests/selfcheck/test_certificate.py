"""TLS-4: the session upgrades with a certificate that verifies for the host the client was
pointed at. A server whose certificate names another host fails the upgrade scenario; the same
server, asked for by a name its certificate carries, passes it."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from conformance.engine import run_scenario
from conformance.model import Verdict

from .test_variants import catalogue, profile, start
from .test_variants import keys as keys


@pytest.mark.parametrize(
    ("server_name", "verdict"),
    [("smtp.anypost.test", Verdict.FAILED), ("localhost", Verdict.PASSED)],
)
def test_certificate_for_another_host_fails_the_upgrade(
    tmp_path: Path, server_name: str, verdict: Verdict
) -> None:
    # The reference server's certificate names localhost and the loopback addresses only, so
    # pointing the profile at another name is a server whose certificate is for another host.
    server = start(None, tmp_path)
    try:
        base = profile(server)
        target = dataclasses.replace(
            base, tls=dataclasses.replace(base.tls, server_name=server_name)
        )
        outcome = asyncio.run(
            run_scenario(catalogue()["starttls/upgrade-succeeds"], target, "submission")
        )
    finally:
        server.stop()
    assert "TLS-4" in catalogue()["starttls/upgrade-succeeds"].requirements
    assert outcome.verdict is verdict, outcome.summary()
    if verdict is Verdict.FAILED:
        assert "certificate verify failed: Hostname mismatch" in outcome.summary()
        assert "the profile expects smtp.anypost.test" in outcome.summary()
