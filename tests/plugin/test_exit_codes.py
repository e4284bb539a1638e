"""The exit-code table of the README, row by row, over the reference server on loopback.

| verdict of a selected run                      | exit | with --strict |
|------------------------------------------------|------|---------------|
| passed, or passed with a should: not met       | 0    | 0 / 1         |
| a SHOULD-level scenario failed or inconclusive | 0    | 1             |
| a MUST-level scenario failed                   | 1    | 1             |
| blocked by a MUST requirement                  | 1    | 1             |
| inconclusive at MUST level                     | 1    | 1             |
| not verified                                   | 0    | 0             |
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from conformance.model import Level, Verdict, fails_run

from ..support import KEYS, ServerThread, make_config, running
from .test_plugin import CATALOGUE, write_profile

SCENARIOS = """\
schema_version: 1
scenarios:
  - id: exit/should-scenario-fails
    title: a SHOULD-level scenario the reference server fails (NOOP is not refused)
    requirements: [RFC-3]
    level: SHOULD
    steps:
      - noop:
        expect: {class: 5}

  - id: exit/should-expectation-unmet
    title: a MUST scenario whose should expectation is not met
    requirements: [SESSION-2]
    level: MUST
    steps:
      - noop:
        expect: {class: 2, should: {code: 299}}

  - id: exit/must-fails
    title: a MUST scenario the reference server fails
    requirements: [SESSION-2]
    level: MUST
    steps:
      - noop:
        expect: {class: 5}

  - id: exit/blocked
    title: a precondition (MAIL on an unverified domain) fails in an RFC-8 scenario
    requirements: [RFC-8]
    level: MUST
    steps:
      - login: {key: send_only}
      - mail: "probe@${domains.unverified}"
      - rcpt: "${recipients.0}"
        expect: {code: 503}

  - id: exit/inconclusive-must
    title: a 452 (too many recipients) on a RCPT not under test
    requirements: [SESSION-3]
    level: MUST
    steps:
      - login: {key: send_only}
      - mail: "probe@${domains.verified}"
      - rcpt: {count: 101}
      - data: {from: "probe@${domains.verified}", to: "${recipients.0}"}

  - id: exit/inconclusive-should
    title: the same at SHOULD level
    requirements: [SESSION-3]
    level: SHOULD
    steps:
      - login: {key: send_only}
      - mail: "probe@${domains.verified}"
      - rcpt: {count: 101}

  - id: exit/not-verified
    title: needs a key role the profile lacks
    requirements: [AUTH-2]
    level: MUST
    steps:
      - login: {key: full_access}
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    with running(make_config(tmp_path)) as thread:
        yield thread


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PLUGIN_KEY_SEND_ONLY", KEYS["send_only"])
    monkeypatch.setenv("PLUGIN_KEY_RESTRICTED", KEYS["restricted"])
    monkeypatch.setenv("ANYPOST_CONFORMANCE_STATE", str(tmp_path / "state"))


def _setup(pytester: pytest.Pytester, server: ServerThread) -> tuple[Path, Path]:
    folder = pytester.path / "scenarios"
    folder.mkdir()
    shutil.copy(CATALOGUE / "requirements.yaml", folder)
    (folder / "exit.scenario.yaml").write_text(SCENARIOS)
    profile = write_profile(pytester.path, server)
    doc = yaml.safe_load(profile.read_text())
    doc["recipients"] = [f"r{i}@sink.test" for i in range(101)]
    doc["target"]["ports"] = {"submission": server.port}
    profile.write_text(yaml.safe_dump(doc))
    return folder, profile


@pytest.mark.parametrize(
    ("selection", "verdict", "relaxed", "strict"),
    [
        ("should-scenario-fails", "failed", 0, 1),
        ("should-expectation-unmet", "passed", 0, 1),
        ("must-fails", "failed", 1, 1),
        ("blocked", "blocked", 1, 1),
        ("inconclusive-must", "inconclusive", 1, 1),
        ("inconclusive-should", "inconclusive", 0, 1),
        ("not-verified", "not verified", 0, 0),
    ],
)
def test_exit_code_table(
    pytester: pytest.Pytester,
    server: ServerThread,
    selection: str,
    verdict: str,
    relaxed: int,
    strict: int,
) -> None:
    folder, profile = _setup(pytester, server)
    out = pytester.path / "out"
    args = [str(folder), "--target", str(profile), "-k", selection]
    first = pytester.runpytest_subprocess(*args, "--conformance-report-dir", str(out))
    assert first.ret == relaxed, first.stdout.str()
    record = json.loads((out / "conformance.json").read_text())["scenarios"][0]
    assert record["verdict"] == verdict
    assert record["fails_run"] is bool(relaxed)
    second = pytester.runpytest_subprocess(*args, "--conformance-strict")
    assert second.ret == strict, second.stdout.str()


def test_exit_blocked_run_is_charged_to_the_blocking_requirement(
    pytester: pytest.Pytester, server: ServerThread
) -> None:
    folder, profile = _setup(pytester, server)
    out = pytester.path / "out"
    result = pytester.runpytest_subprocess(
        str(folder), "--target", str(profile), "-k", "blocked", "--conformance-report-dir", str(out)
    )
    result.stdout.fnmatch_lines(["*exit/blocked ?submission?: blocked by SENDER-1*"])
    report = json.loads((out / "conformance.json").read_text())
    (run,) = report["scenarios"]
    assert run["blocked_by"] == "SENDER-1" and run["verdict"] == "blocked"
    rows = {row["id"]: row for row in report["requirements"]}
    # RFC-8 was not judged (never "failed"); SENDER-1 carries the failure.
    assert rows["RFC-8"]["verdict"] == "blocked"
    assert rows["SENDER-1"]["verdict"] == "failed"
    assert rows["SENDER-1"]["blocking"] == ["exit/blocked[submission]"]


def test_exit_should_scenario_never_fails_a_must_requirement(
    pytester: pytest.Pytester, server: ServerThread
) -> None:
    folder, profile = _setup(pytester, server)
    text = (folder / "exit.scenario.yaml").read_text()
    # The SHOULD scenario now names a MUST requirement, next to a MUST scenario that passes.
    text = text.replace("requirements: [RFC-3]", "requirements: [SESSION-2]")
    (folder / "exit.scenario.yaml").write_text(text)
    out = pytester.path / "out"
    result = pytester.runpytest_subprocess(
        str(folder),
        "--target",
        str(profile),
        "-k",
        "should-scenario-fails or should-expectation-unmet",
        "--conformance-report-dir",
        str(out),
    )
    assert result.ret == 0, result.stdout.str()
    rows = {
        row["id"]: row for row in json.loads((out / "conformance.json").read_text())["requirements"]
    }
    assert rows["SESSION-2"]["verdict"] == "passed"
    assert rows["SESSION-2"]["warnings"] == [
        "exit/should-expectation-unmet[submission]",
        "exit/should-scenario-fails[submission]",
    ]


@pytest.mark.parametrize(
    ("verdict", "level", "relaxed", "strict"),
    [
        (Verdict.PASSED, Level.MUST, False, False),
        (Verdict.NOT_VERIFIED, Level.MUST, False, False),
        (Verdict.FAILED, Level.MUST, True, True),
        (Verdict.FAILED, Level.SHOULD, False, True),
        (Verdict.BLOCKED, Level.MUST, True, True),
        (Verdict.BLOCKED, Level.SHOULD, False, True),
        (Verdict.INCONCLUSIVE, Level.MUST, True, True),
        (Verdict.INCONCLUSIVE, Level.SHOULD, False, True),
        (Verdict.ERROR, Level.SHOULD, True, True),
    ],
)
def test_fails_run_table(verdict: Verdict, level: Level, relaxed: bool, strict: bool) -> None:
    assert fails_run(verdict, level, strict=False) is relaxed
    assert fails_run(verdict, level, strict=True) is strict
