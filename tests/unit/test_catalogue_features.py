"""Variable transforms, the recipient pattern, and the run-wide id registry."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conformance.errors import ProfileError, ScenarioError
from conformance.idregistry import IdRegistry
from conformance.loader import load_profile, load_scenarios
from conformance.model import Profile
from conformance.variables import resolve


def _profile(**extra: object) -> Profile:
    return Profile(
        file="p",
        name="p",
        host="127.0.0.1",
        ports={"submission": 587},
        domains={"verified": "acme.test"},
        recipients=("a@sink.test", "b@sink.test"),
        **extra,  # type: ignore[arg-type]  # test-only keyword pass-through
    )


def test_transforms_spell_the_same_value_otherwise() -> None:
    profile = _profile()
    assert resolve("p@${domains.verified|upper}", profile) == "p@ACME.TEST"
    assert resolve("p@${domains.verified|title}", profile) == "p@Acme.test"
    assert resolve("p@${domains.verified|trailing_dot}", profile) == "p@acme.test."
    assert resolve("p@${domains.verified}", profile) == "p@acme.test"


def test_unknown_transform_is_a_scenario_error_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "x.scenario.yaml"
    path.write_text(
        "schema_version: 1\nscenarios:\n  - id: a/b\n    title: t\n    requirements: [TLS-1]\n"
        "    level: MUST\n    steps:\n      - mail: 'p@${domains.verified|reverse}'\n"
    )
    with pytest.raises(ScenarioError) as info:
        load_scenarios(path)
    assert "unknown transform |reverse" in str(info.value)
    assert "x.scenario.yaml:8" in str(info.value)


def test_recipient_pattern_expands_only_past_the_listed_recipients() -> None:
    profile = _profile(recipient_pattern="sink+{n}@sink.test")
    assert profile.recipient(1) == "b@sink.test"
    assert profile.recipient(7) == "sink+7@sink.test"
    assert _profile().recipient(7) is None


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("sink+12@sink.test", True),
        ("sink+12@SINK.test", True),
        ("a@sink.test", True),
        ("sink+@sink.test", False),
        ("sink+1x@sink.test", False),
        ("sink+1@other.test", False),
        ("sink+1@sink.test.evil.test", False),
        ("c@sink.test", False),
    ],
)
def test_only_the_pattern_and_the_list_may_receive(address: str, allowed: bool) -> None:
    profile = _profile(recipient_pattern="sink+{n}@sink.test")
    assert profile.may_receive(address) is allowed


def test_recipient_pattern_outside_the_sink_domain_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "schema_version: 1\ntarget: {host: h, ports: {submission: 587}}\nkeys: {}\n"
        "domains: {verified: acme.test}\nrecipients: [a@sink.test]\n"
        "recipient_pattern: 'x+{n}@someone-else.test'\n"
    )
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert "recipient_pattern must stay inside the recipients' domain" in str(info.value)
    assert "p.yaml:6" in str(info.value)


def test_registry_reports_ids_seen_earlier_in_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANYPOST_CONFORMANCE_STATE", str(tmp_path))
    first = IdRegistry("target", run_id="run-1")
    assert first.claim(["email_a", "email_b"]) == set()
    # Another worker of the same run sees them; another run does not.
    assert IdRegistry("target", run_id="run-1").claim(["email_b", "email_c"]) == {"email_b"}
    assert IdRegistry("target", run_id="run-2").claim(["email_a"]) == set()
    assert IdRegistry("other-target", run_id="run-1").claim(["email_a"]) == set()


def test_registry_sees_what_another_process_claimed_after_it_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This process keeps what it read of the file; ids another worker (a process of its own)
    # appends later must still be seen.
    monkeypatch.setenv("ANYPOST_CONFORMANCE_STATE", str(tmp_path))
    assert IdRegistry("t", run_id="r").claim(["email_mine"]) == set()
    code = (
        "from conformance.idregistry import IdRegistry;"
        "print(sorted(IdRegistry('t', run_id='r').claim(['email_mine', 'email_theirs'])))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == "['email_mine']"
    assert IdRegistry("t", run_id="r").claim(["email_theirs", "email_new"]) == {"email_theirs"}


def test_registry_claims_from_threads_never_lose_an_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANYPOST_CONFORMANCE_STATE", str(tmp_path))
    repeated: list[set[str]] = []

    def claim(n: int) -> None:
        repeated.append(IdRegistry("t", run_id="r").claim([f"email_{n}", "email_shared"]))

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Exactly one claim was first with the shared id; every other saw it.
    assert sum("email_shared" in r for r in repeated) == 7
    assert IdRegistry("t", run_id="r").claim([f"email_{n}" for n in range(8)]) == {
        f"email_{n}" for n in range(8)
    }
