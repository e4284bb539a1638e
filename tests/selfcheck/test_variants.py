"""Every scenario of the catalogue fails against a server variant that breaks its behaviour.

The reference server passing the whole catalogue is the main job (``anypost-conformance run``)
and ``test_reference_passes_what_each_variant_fails`` below; this is the other half: a scenario
that no wrong server fails is not worth having.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance.engine import run_scenario
from conformance.loader import load_scenarios
from conformance.model import KeyRef, Profile, Scenario, Tls, Verdict
from reference_server.session import AnypostSMTP

from ..support import (
    KEYS,
    OTHER_TEAM,
    OUTSIDE_ALLOWED,
    UNVERIFIED,
    VERIFIED,
    ServerThread,
    make_config,
)
from .variants import CATALOGUE_PROOF, SMTP_OPTIONS, VARIANTS, smtp_with

CATALOGUE = Path(__file__).resolve().parents[2] / "scenarios"
THRESHOLD, COOLDOWN = 3, 1.0
IDLE_TIMEOUT = 4.0  # the slow-upload scenario sends for longer than this


def catalogue() -> dict[str, Scenario]:
    return {s.id: s for f in sorted(CATALOGUE.rglob("*.scenario.yaml")) for s in load_scenarios(f)}


def profile(server: ServerThread) -> Profile:
    return Profile(
        file="selfcheck",
        name="selfcheck",
        host="127.0.0.1",
        ports={"submission": server.port},
        tls=Tls(ca_file=Path(server.ca), server_name="localhost"),
        timeout=2.0,
        scenario_deadline=30.0,
        keys={
            role: KeyRef(role, env=f"SELFCHECK_{role.upper()}")
            for role in ("send_only", "full_access", "no_send")
        }
        | {
            "restricted": KeyRef(
                "restricted", env="SELFCHECK_RESTRICTED", allowed_domains=(VERIFIED,)
            ),
            "invalid": KeyRef("invalid", value="ap_selfcheck_invalid_key"),
        },
        domains={
            "verified": VERIFIED,
            "outside_allowed": OUTSIDE_ALLOWED,
            "unverified": UNVERIFIED,
            "other_team": OTHER_TEAM,
        },
        recipients=tuple(f"r{i}@sink.test" for i in range(30)),
        recipient_pattern="r+{n}@sink.test",
        limits={
            "message_size": 5242880.0,
            "auth_failure_threshold": float(THRESHOLD),
            "auth_failure_cooldown": COOLDOWN,
            "idle_timeout": IDLE_TIMEOUT,
        },
        observer={"kind": "maildir", "path": str(server.config.spool / "maildir")},
        policy={"duplicate_recipients": "one_id", "missing_from": "refuse"},
    )


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for role in ("send_only", "full_access", "no_send", "restricted"):
        monkeypatch.setenv(f"SELFCHECK_{role.upper()}", KEYS[role])
    monkeypatch.setenv("ANYPOST_CONFORMANCE_STATE", str(tmp_path / "state"))
    # The property-based scenarios draw the same examples every time here, so the selfcheck is
    # deterministic (their detection rate over random seeds is measured in the note).
    monkeypatch.setenv("ANYPOST_CONFORMANCE_SEED", "20261201")


def start(name: str | None, tmp_path: Path) -> ServerThread:
    config = make_config(
        tmp_path,
        auth_failure_threshold=THRESHOLD,
        auth_failure_cooldown=COOLDOWN,
        idle_timeout=IDLE_TIMEOUT,
    )
    if name is None:
        return ServerThread(config).start()
    variant = VARIANTS[name]
    smtp = variant.smtp
    if variant.options:
        assert set(variant.options) <= SMTP_OPTIONS and smtp is AnypostSMTP
        smtp = smtp_with(**variant.options)
    return ServerThread(config, handler_class=variant.handler, smtp_class=smtp).start()


def by_variant() -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for scenario_id, variant in CATALOGUE_PROOF.items():
        groups[variant].append(scenario_id)
    return dict(groups)


def test_every_scenario_has_a_variant_that_breaks_it() -> None:
    assert set(CATALOGUE_PROOF) == set(catalogue())
    assert set(CATALOGUE_PROOF.values()) <= set(VARIANTS)
    unused = set(VARIANTS) - set(CATALOGUE_PROOF.values())
    assert not unused, f"variants no scenario uses: {unused}"


def _verdicts(server: ServerThread, ids: list[str]) -> dict[str, tuple[Verdict, str]]:
    scenarios = catalogue()
    target = profile(server)

    async def go() -> dict[str, tuple[Verdict, str]]:
        out = {}
        for scenario_id in ids:
            outcome = await run_scenario(
                scenarios[scenario_id], target, "submission", include_destructive=True
            )
            out[scenario_id] = (outcome.verdict, outcome.summary())
        return out

    return asyncio.run(go())


@pytest.fixture(params=sorted(by_variant()))
def variant(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, ServerThread]]:
    server = start(request.param, tmp_path)
    try:
        yield request.param, server
    finally:
        server.stop()


def test_variant_fails_its_scenarios(variant: tuple[str, ServerThread]) -> None:
    name, server = variant
    verdicts = _verdicts(server, by_variant()[name])
    passed = {
        sid: summary
        for sid, (verdict, summary) in verdicts.items()
        if verdict is not Verdict.FAILED
    }
    assert not passed, f"variant {name} should fail these scenarios:\n" + "\n".join(passed.values())


@pytest.fixture
def reference(tmp_path: Path) -> Iterator[ServerThread]:
    server = start(None, tmp_path)
    try:
        yield server
    finally:
        server.stop()


def test_reference_passes_what_each_variant_fails(reference: ServerThread) -> None:
    """The same scenarios, same profile, against the unbroken server: every one passes."""
    verdicts = _verdicts(reference, sorted(CATALOGUE_PROOF))
    bad = {
        sid: summary
        for sid, (verdict, summary) in verdicts.items()
        if verdict is not Verdict.PASSED
    }
    assert not bad, "\n".join(bad.values())


@pytest.mark.parametrize("name", [None, "no-stripping"])
def test_observe_step_label_reads_like_the_check(name: str | None, tmp_path: Path) -> None:
    # The observe step is named by what it checked of which delivered copy, never by a dict
    # of its arguments; a failure of it carries that label and its file:line.
    server = start(name, tmp_path)
    try:
        s = catalogue()["headers/stripped-before-delivery"]
        outcome = asyncio.run(run_scenario(s, profile(server), "submission"))
    finally:
        server.stop()
    observe = next(st for st in s.steps if st.kind == "observe")
    titles = [r.title for r in outcome.steps_run]
    assert titles[-1].startswith("observe the delivered copy of <"), titles
    assert titles[-1].endswith(
        ">: lacks X-Anypost-Tag, X-Anypost-Tags, X-Anypost-Topic, X-Campaign; "
        "has X-Other, From, Subject; body contains 'Headers stripped.'"
    ), titles[-1]
    assert "{" not in " ".join(titles)
    if name is None:
        assert outcome.verdict is Verdict.PASSED, outcome.summary()
        return
    [failure] = outcome.failures
    assert failure.step == titles[-1], outcome.summary()
    where = observe.location
    assert failure.location.endswith(f"control.scenario.yaml:{where.line}:{where.column}")
    assert "lack X-Anypost-Tag" in failure.problems[0], failure.problems
