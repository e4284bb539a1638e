"""The catalogue against a server that conforms to nothing: plain aiosmtpd, no TLS, no auth.

It must fail loudly and cleanly: every STARTTLS, AUTH and block requirement failed (or blocked
by the missing TLS, never passed or inconclusive), no harness error, no hang, no key of the
profile on the wire, and a report that says why in a line.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from interop.plain import PlainTarget

pytestmark = [pytest.mark.interop, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Run:
    returncode: int
    seconds: float
    output: str
    report: dict[str, Any]
    markdown: str
    received: bytes
    keys: list[str]


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    work = tmp_path_factory.mktemp("plain")
    reports = work / "reports"
    with PlainTarget(work / "target") as target:
        started = time.monotonic()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "conformance",
                "run",
                *("--target", str(target.profile_path), "--include-destructive"),
                *("--report-dir", str(reports), "-q"),
            ],
            env={**os.environ, **target.env},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,  # no hang: the run ends on its own well within this
            check=False,
        )
        seconds = time.monotonic() - started
        received = target.received()
    yield Run(
        done.returncode,
        seconds,
        done.stdout + done.stderr,
        json.loads((reports / "conformance.json").read_text()),
        (reports / "conformance.md").read_text(),
        received,
        list(target.env.values()),
    )


def test_plain_run_fails_with_exit_1_and_no_harness_error(plain_run: Run) -> None:
    assert plain_run.returncode == 1, plain_run.output[-3000:]
    verdicts = {r["verdict"] for r in plain_run.report["scenarios"]}
    assert "error" not in verdicts and "inconclusive" not in verdicts, verdicts
    assert "Traceback" not in plain_run.output
    deadline = 60  # the profile's scenario_deadline
    assert all(r["duration"] < deadline for r in plain_run.report["scenarios"])


def test_plain_run_fails_every_starttls_auth_and_block_requirement(plain_run: Run) -> None:
    requirements = {r["id"]: r["verdict"] for r in plain_run.report["requirements"]}
    for rid in ("TLS-1", "TLS-2", "TLS-3", "BLOCK-1", "BLOCK-2"):
        assert requirements[rid] == "failed", (rid, requirements[rid])
    auth = {rid: v for rid, v in requirements.items() if rid.startswith("AUTH-")}
    assert auth and set(auth.values()) <= {"failed", "blocked"}, auth
    # Whatever needs an authenticated session is charged to the missing TLS, not passed.
    blocked = {r["blocked_by"] for r in plain_run.report["scenarios"] if r["verdict"] == "blocked"}
    assert blocked == {"TLS-1"}
    # The one thing plain aiosmtpd gets right: it refuses AUTH without TLS (538 5.7.11).
    passed = {r["scenario"] for r in plain_run.report["scenarios"] if r["verdict"] == "passed"}
    assert passed == {"starttls/auth-refused-before-tls", "starttls/auth-login-refused-before-tls"}


def test_plain_run_never_sends_a_key(plain_run: Run) -> None:
    assert b"AUTH" in plain_run.received  # the probes did run (with decoys)
    for key in plain_run.keys:
        forms = [key.encode(), base64.b64encode(key.encode())]
        forms += [base64.b64encode(f"\0anypost\0{key}".encode())]
        forms += [base64.b64encode(f"{a}\0anypost\0{key}".encode()) for a in ("anypost",)]
        for form in forms:
            assert form not in plain_run.received, "a key of the profile went on the wire"


def test_plain_report_reads_well(plain_run: Run) -> None:
    md = plain_run.markdown
    assert md.startswith("# Anypost SMTP conformance report")
    assert "plain aiosmtpd (no TLS, no auth)" in md
    # The first failure a reader meets says what is wrong in the server's own words.
    assert "expected EHLO to advertise STARTTLS" in md
    assert "454 TLS not available" in md
    assert "offers no STARTTLS" in md
    assert "Traceback" not in md
