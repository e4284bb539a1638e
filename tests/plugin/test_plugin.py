"""The pytest plugin, run as users run it: ``pytest --target PROFILE scenarios/``."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ..support import (
    KEYS,
    OUTSIDE_ALLOWED,
    UNVERIFIED,
    VERIFIED,
    ServerThread,
    make_config,
    running,
)

CATALOGUE = Path(__file__).resolve().parents[2] / "scenarios"


def write_profile(folder: Path, server: ServerThread, port: int | None = None) -> Path:
    profile = {
        "schema_version": 1,
        "name": "plugin-test",
        "target": {
            "host": "127.0.0.1",
            "ports": {"submission": port or server.port, "alternate": server.server.ports[1]},
            "tls": {"ca_file": server.ca, "server_name": "localhost"},
            "timeout": 3,
        },
        "keys": {
            "send_only": {"env": "PLUGIN_KEY_SEND_ONLY"},
            "restricted": {"env": "PLUGIN_KEY_RESTRICTED", "allowed_domains": [VERIFIED]},
            "invalid": {"value": "ap_plugin_invalid_key"},
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


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    """The reference server, with the block the profiles above describe."""
    with running(
        make_config(tmp_path, auth_failure_threshold=3, auth_failure_cooldown=1.0)
    ) as thread:
        yield thread


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PLUGIN_KEY_SEND_ONLY", KEYS["send_only"])
    monkeypatch.setenv("PLUGIN_KEY_RESTRICTED", KEYS["restricted"])
    monkeypatch.setenv("ANYPOST_CONFORMANCE_STATE", str(tmp_path / "state"))


def copy_catalogue(pytester: pytest.Pytester, *files: str) -> Path:
    folder = pytester.path / "scenarios"
    folder.mkdir()
    shutil.copy(CATALOGUE / "requirements.yaml", folder)
    for name in files:
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(CATALOGUE / name, target)
    return folder


def test_plugin_collects_one_item_per_scenario_and_port(
    pytester: pytest.Pytester, server: ServerThread
) -> None:
    folder = copy_catalogue(pytester, "starttls/enforcement.scenario.yaml")
    profile = write_profile(pytester.path, server)
    result = pytester.runpytest_subprocess(str(folder), "--target", str(profile), "-v")
    result.assert_outcomes(passed=18)
    result.stdout.fnmatch_lines(["*starttls/upgrade-succeeds?submission? PASSED*"])
    result.stdout.fnmatch_lines(["*starttls/upgrade-succeeds?alternate? PASSED*"])


def test_plugin_selection_by_k_tag_and_requirement(
    pytester: pytest.Pytester, server: ServerThread
) -> None:
    folder = copy_catalogue(
        pytester, "starttls/enforcement.scenario.yaml", "auth/authentication.scenario.yaml"
    )
    profile = write_profile(pytester.path, server)
    by_k = pytester.runpytest_subprocess(
        str(folder), "--target", str(profile), "-k", "injected and submission"
    )
    by_k.assert_outcomes(passed=1)
    by_tag = pytester.runpytest_subprocess(
        str(folder), "--target", str(profile), "--conformance-tag", "smoke"
    )
    by_tag.assert_outcomes(passed=4)  # two smoke scenarios x two ports
    by_req = pytester.runpytest_subprocess(
        str(folder), "--target", str(profile), "--conformance-requirement", "RFC-7"
    )
    by_req.assert_outcomes(passed=2)


def test_plugin_scenario_typo_is_a_collection_error_with_location(
    pytester: pytest.Pytester, server: ServerThread
) -> None:
    folder = copy_catalogue(pytester, "starttls/enforcement.scenario.yaml")
    broken = folder / "starttls/enforcement.scenario.yaml"
    broken.write_text(
        broken.read_text().replace(
            "expect:\n          code: 250", "expcet:\n          code: 250", 1
        )
    )
    result = pytester.runpytest_subprocess(
        str(folder), "--target", str(write_profile(pytester.path, server))
    )
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*enforcement.scenario.yaml:1[0-9]:*'expcet' was unexpected*"])


def test_plugin_without_target_says_what_to_do(pytester: pytest.Pytester) -> None:
    folder = copy_catalogue(pytester, "starttls/enforcement.scenario.yaml")
    result = pytester.runpytest_subprocess(str(folder))
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*no target: give --target PROFILE*"])


def test_plugin_unreachable_target_is_a_usage_error(
    pytester: pytest.Pytester, server: ServerThread
) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
        folder = copy_catalogue(pytester, "starttls/enforcement.scenario.yaml")
        result = pytester.runpytest_subprocess(
            str(folder), "--target", str(write_profile(pytester.path, server, closed))
        )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*target unreachable: cannot connect to 127.0.0.1:*"])


def test_plugin_failure_shows_requirement_expected_actual_and_transcript(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    from ..selfcheck.variants import AcceptsAnyKey

    folder = copy_catalogue(pytester, "auth/authentication.scenario.yaml")
    config = make_config(tmp_path, auth_failure_threshold=3, auth_failure_cooldown=1.0)
    with running(config, handler_class=AcceptsAnyKey) as broken:
        result = pytester.runpytest_subprocess(
            str(folder),
            "--target",
            str(write_profile(pytester.path, broken)),
            "-k",
            "bad-key-refused-at-auth and submission",
            "--junitxml",
            str(pytester.path / "junit.xml"),
            "--conformance-report-dir",
            str(pytester.path / "out"),
        )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*auth/bad-key-refused-at-auth [[]submission[]]: failed (MUST)*",
            "*requirement AUTH-4: Authentication failures are reported in the SMTP exchange*",
            "*MUST step 'login*authentication.scenario.yaml:*",
            "*expected a 5xx reply, got 235 2.7.0 Authentication successful*",
            "*> AUTH PLAIN <redacted: anypost / invalid key>*",
        ]
    )
    report = json.loads((pytester.path / "out" / "conformance.json").read_text())
    assert report["summary"] == {"failed": 1}
    auth4 = next(r for r in report["requirements"] if r["id"] == "AUTH-4")
    assert auth4["verdict"] == "failed"
    assert (pytester.path / "out" / "conformance.md").read_text().count(
        "bad-key-refused-at-auth"
    ) >= 1
    assert "AUTH-4" in (pytester.path / "junit.xml").read_text()


def test_plugin_reports_never_hold_a_key(pytester: pytest.Pytester, server: ServerThread) -> None:
    folder = copy_catalogue(
        pytester, "starttls/enforcement.scenario.yaml", "auth/authentication.scenario.yaml"
    )
    out = pytester.path / "out"
    result = pytester.runpytest_subprocess(
        str(folder),
        "--target",
        str(write_profile(pytester.path, server)),
        "--junitxml",
        str(out / "junit.xml"),
        "--alluredir",
        str(out / "allure-results"),
        "--conformance-report-dir",
        str(out),
        "-rA",
    )
    result.assert_outcomes(passed=40, skipped=4)  # no full_access or no_send key in the profile
    result.stdout.fnmatch_lines(["*not verified: the profile has no key of role full_access*"])
    secret = KEYS["send_only"]
    forms = [
        secret,
        base64.b64encode(f"\0anypost\0{secret}".encode()).decode(),
        base64.b64encode(secret.encode()).decode(),
    ]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) > 10 and any(p.suffix == ".json" and "result" in p.name for p in files)
    for path in files:
        text = path.read_text(errors="replace")
        for form in forms:
            assert form not in text, f"{form!r} leaked into {path}"
    assert secret not in result.stdout.str()
    allure = "".join(p.read_text() for p in (out / "allure-results").glob("*-result.json"))
    assert '"name": "severity", "value": "critical"' in allure and "SMTP transcript" in allure


def test_plugin_should_level_warns_and_strict_fails(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    from ..selfcheck.variants import NoEnhancedCodes

    folder = copy_catalogue(pytester, "auth/authentication.scenario.yaml")
    config = make_config(tmp_path, auth_failure_threshold=3, auth_failure_cooldown=1.0)
    with running(config, smtp_class=NoEnhancedCodes) as plain_codes:
        args = [
            str(folder),
            "--target",
            str(write_profile(pytester.path, plain_codes)),
            "-k",
            "send-only-key-plain and submission",
        ]
        relaxed = pytester.runpytest_subprocess(*args)
        strict = pytester.runpytest_subprocess(*args, "--conformance-strict")
    relaxed.assert_outcomes(passed=1)
    relaxed.stdout.fnmatch_lines(
        ["*SHOULD-level warnings*", "*expected enhanced status code 2.7.0, got none*"]
    )
    strict.assert_outcomes(failed=1)


def test_plugin_report_matches_its_schema_and_deviations_are_graded(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    import jsonschema

    from conformance.loader import schema

    from ..selfcheck.variants import AcceptsAnyKey

    folder = copy_catalogue(pytester, "auth/authentication.scenario.yaml")
    config = make_config(tmp_path, auth_failure_threshold=3, auth_failure_cooldown=1.0)
    with running(config, handler_class=AcceptsAnyKey) as broken:
        profile = write_profile(pytester.path, broken)
        doc = yaml.safe_load(profile.read_text())
        doc["deviations"] = [
            {
                "scenario": "auth/bad-key-refused-at-auth",
                "reason": "ticket 1",
                "expires": "2999-01-01",
            },
            {"scenario": "auth/send-only-key-plain", "reason": "ticket 2", "expires": "2999-01-01"},
            {
                "scenario": "auth/bad-key-refused-login-mechanism",
                "reason": "ticket 3",
                "expires": "2000-01-01",
            },
        ]
        profile.write_text(yaml.safe_dump(doc))
        out = pytester.path / "out"
        result = pytester.runpytest_subprocess(
            str(folder),
            "--target",
            str(profile),
            "--conformance-report-dir",
            str(out),
            "-k",
            "submission and (bad-key or send-only-key-plain)",
        )
    # known deviation: skipped; expired deviation: still failed; passing one: stale
    result.assert_outcomes(passed=1, skipped=1, failed=1)
    report = json.loads((out / "conformance.json").read_text())
    jsonschema.Draft202012Validator(schema("report")).validate(report)
    notes = {r["scenario"]: r["deviation"] for r in report["scenarios"]}
    assert notes["auth/bad-key-refused-at-auth"].startswith("known deviation")
    assert notes["auth/send-only-key-plain"].startswith("stale deviation")
    assert notes["auth/bad-key-refused-login-mechanism"].startswith("expired deviation")
    assert "## Deviations declared by the profile" in (out / "conformance.md").read_text()
