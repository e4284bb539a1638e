"""Each failure charged to what it tests: the whole catalogue against a server that only leaves
out ``ids=`` fails IDS-1 and no other requirement (the measured case: AUTH-2, AUTH-3, SENDER-3,
SESSION-1/2/3, TLS-1 and RFC-5 used to be reported failed too)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from conformance.engine import run_scenario
from conformance.reporting import by_requirement, record
from conformance.requirements import load_requirements

from .test_variants import CATALOGUE, catalogue, profile, start
from .test_variants import keys as keys


def test_catalogue_without_ids_fails_only_ids_1(tmp_path: Path) -> None:
    server = start("no-ids", tmp_path)
    try:

        async def run_all() -> list[dict[str, object]]:
            return [
                record(await run_scenario(s, profile(server), "submission", True))
                for _, s in sorted(catalogue().items())
            ]

        records = asyncio.run(run_all())
    finally:
        server.stop()
    rows = by_requirement(records, load_requirements(CATALOGUE / "requirements.yaml"))
    failed = sorted(row["id"] for row in rows if row["verdict"] == "failed")
    assert failed == ["IDS-1"], failed
    blocked_by = {r["blocked_by"] for r in records if r["verdict"] == "blocked"}
    assert blocked_by == {"IDS-1"}
    # A scenario naming IDS-1 among others failed for IDS-1 alone; the rest it saw passed.
    submission = next(r for r in records if r["scenario"] == "starttls/authenticated-submission")
    assert submission["verdict"] == "failed" and submission["charged_to"] == "IDS-1"
    by_id = {row["id"]: row for row in rows}
    assert by_id["TLS-1"]["verdict"] == "passed"


def test_a_step_that_names_its_requirement_is_charged_to_it(tmp_path: Path) -> None:
    # size/over-limit-refused checks SIZE-2 (the refusal) and SESSION-2 (the next message on
    # the same connection): a server that accepts one octet too many broke SIZE-2 alone.
    server = start("size-unenforced", tmp_path)
    try:
        outcome = asyncio.run(
            run_scenario(
                catalogue()["size/over-limit-refused"], profile(server), "submission", True
            )
        )
    finally:
        server.stop()
    found = record(outcome)
    assert found["verdict"] == "failed" and found["charged_to"] == "SIZE-2", found
    rows = by_requirement([found], load_requirements(CATALOGUE / "requirements.yaml"))
    by_id = {row["id"]: row for row in rows}
    assert by_id["SIZE-2"]["verdict"] == "failed"
    assert by_id.get("SESSION-2", {}).get("verdict") != "failed"
