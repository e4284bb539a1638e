"""The loader: every kind of schema error points at file:line:col with what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.errors import ProfileError, ScenarioError
from conformance.loader import load_profile, load_scenarios
from conformance.model import Level
from conformance.requirements import load_requirements

CATALOGUE = Path(__file__).resolve().parents[2] / "scenarios"

GOOD = """\
schema_version: 1
scenarios:
  - id: area/name
    title: A title
    requirements: [TLS-1]
    level: MUST
    steps:
      - ehlo: client.test
        expect: {code: 250}
"""


def write(tmp_path: Path, text: str, name: str = "x.scenario.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problem(tmp_path: Path, text: str) -> str:
    requirements = load_requirements(CATALOGUE / "requirements.yaml")
    with pytest.raises(ScenarioError) as caught:
        load_scenarios(write(tmp_path, text), requirements)
    return str(caught.value)


def test_loader_loads_a_good_file(tmp_path: Path) -> None:
    [scenario] = load_scenarios(write(tmp_path, GOOD))
    assert scenario.id == "area/name" and scenario.level is Level.MUST
    assert scenario.steps[0].location.line == 8
    assert scenario.steps[0].expect.must.code == (250,)


@pytest.mark.parametrize(
    ("old", "new", "where", "says"),
    [
        (
            "        expect: {code: 250}",
            "        expect: {cod: 250}",
            ":9:",
            "'cod' was unexpected",
        ),
        ("    level: MUST", "    level: MAYBE", ":6:", "'MAYBE' is not one of"),
        ("      - ehlo: client.test", "      - ehlo: 5", ":8:", "5 is not of type 'string'"),
        (
            "    requirements: [TLS-1]",
            "    requirements: [TLS-99]",
            ":5:",
            "unknown requirement TLS-99",
        ),
        ("    title: A title\n", "", ":3:", "'title' is a required property"),
        (
            "      - ehlo: client.test",
            "      - ehlo: client.test\n        rset:",
            ":8:",
            "exactly one action",
        ),
        (
            "      - ehlo: client.test",
            "      - mail: x@${keys.send_only}",
            ":8:",
            "unknown variable ${keys.send_only}",
        ),
        (
            "      - ehlo: client.test",
            "      - mail: x@${domains verified}",
            ":8:",
            "malformed ${...}",
        ),
        ("    level: MUST", "    level: MUST\n    level: SHOULD", ":7:", "duplicate key 'level'"),
        ("    title: A title", "    title: [unclosed", ":5:", "not valid YAML"),
    ],
)
def test_loader_errors_point_at_the_yaml(
    tmp_path: Path, old: str, new: str, where: str, says: str
) -> None:
    assert old in GOOD
    text = problem(tmp_path, GOOD.replace(old, new))
    assert f"x.scenario.yaml{where}" in text, text
    assert says in text, text
    assert "^" in text  # the excerpt marks the column


def test_loader_unknown_expect_key_is_named_with_the_valid_keys_closest_first(
    tmp_path: Path,
) -> None:
    # expect takes the reply fields it refers to besides its own should: a misspelled one is
    # named where it stands, with every valid key, the closest first.
    text = problem(tmp_path, GOOD.replace("expect: {code: 250}", "expect: {code: 250, clas: 5}"))
    assert "x.scenario.yaml:9:29:" in text, text
    assert "'clas' was unexpected" in text and "did you mean 'class'?" in text, text
    keys = text.split("closest first: ")[1].split("\n")[0].split(", ")
    assert keys[0] == "class" and {"code", "text", "ids", "closed", "should"} <= set(keys), keys
    nested = problem(
        tmp_path, GOOD.replace("expect: {code: 250}", "expect: {should: {enhancd: '2.0.0'}}")
    )
    keys = nested.split("closest first: ")[1].split("\n")[0].split(", ")
    assert keys[0] == "enhanced" and "should" not in keys and "code" in keys, nested


def test_loader_reports_every_problem_at_once(tmp_path: Path) -> None:
    text = problem(
        tmp_path, GOOD.replace("level: MUST", "level: NO").replace("{code: 250}", "{cod: 250}")
    )
    assert "2 problems" in text


def test_loader_whole_catalogue_is_valid() -> None:
    requirements = load_requirements(CATALOGUE / "requirements.yaml")
    ids = set()
    covered = set()
    for file in sorted(CATALOGUE.rglob("*.scenario.yaml")):
        for scenario in load_scenarios(file, requirements):
            assert scenario.id not in ids
            ids.add(scenario.id)
            covered.update(scenario.requirements)
    # BRIEF §5: every requirement has at least one scenario.
    assert set(requirements) == covered


PROFILE = """\
schema_version: 1
target:
  host: 127.0.0.1
  ports: {submission: 587}
keys:
  send_only: {env: ANYPOST_KEY}
domains: {verified: acme.test}
recipients: [a@sink.test]
"""


@pytest.mark.parametrize(
    ("old", "new", "where", "says"),
    [
        ("{env: ANYPOST_KEY}", "{value: ap_live_secret}", ":6:", "never written in a profile"),
        ("{submission: 587}", "{submission: 70000}", ":4:", "70000 is greater than the maximum"),
        ("  host: 127.0.0.1\n", "", ":3:", "'host' is a required property"),
        ("recipients: [a@sink.test]", "recipients: [nobody]", ":8:", "does not match"),
    ],
)
def test_loader_profile_errors(tmp_path: Path, old: str, new: str, where: str, says: str) -> None:
    path = write(tmp_path, PROFILE.replace(old, new), "p.yaml")
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    assert f"p.yaml{where}" in str(caught.value) and says in str(caught.value), str(caught.value)


def test_loader_profile_loads(tmp_path: Path) -> None:
    profile = load_profile(write(tmp_path, PROFILE, "p.yaml"))
    assert profile.ports == {"submission": 587} and profile.keys["send_only"].env == "ANYPOST_KEY"


def test_loader_example_profile_loads() -> None:
    profile = load_profile(
        Path(__file__).resolve().parents[2] / "profiles" / "example-staging.yaml"
    )
    assert profile.deviations[0].expires.isoformat() == "2027-03-31"
    assert profile.keys["invalid"].value and profile.keys["send_only"].env


def test_loader_must_scenario_needs_a_must_requirement(tmp_path: Path) -> None:
    says = problem(tmp_path, GOOD.replace("[TLS-1]", "[RFC-3]"))
    assert "x.scenario.yaml:6:12: level MUST, but RFC-3 is SHOULD" in says
    # The nearest inputs that load: the same at SHOULD, or with a MUST requirement beside it.
    requirements = load_requirements(CATALOGUE / "requirements.yaml")
    should = GOOD.replace("[TLS-1]", "[RFC-3]").replace("level: MUST", "level: SHOULD")
    assert load_scenarios(write(tmp_path, should, "a.scenario.yaml"), requirements)
    both = GOOD.replace("[TLS-1]", "[RFC-3, TLS-1]")
    assert load_scenarios(write(tmp_path, both, "b.scenario.yaml"), requirements)


@pytest.mark.parametrize(
    ("policy", "says"),
    [
        ("{missing_form: refuse}", "policy.missing_form is not a choice a profile can declare"),
        ("{missing_from: reject}", "policy.missing_from: 'reject' is not one of refuse, add"),
    ],
)
def test_loader_scenario_policy_is_one_a_profile_can_declare(
    tmp_path: Path, policy: str, says: str
) -> None:
    text = GOOD.replace("    level: MUST\n", f"    level: MUST\n    policy: {policy}\n")
    assert says in problem(tmp_path, text)
    good = GOOD.replace("    level: MUST\n", "    level: MUST\n    policy: {missing_from: add}\n")
    (scenario,) = load_scenarios(write(tmp_path, good, "c.scenario.yaml"))
    assert scenario.policy == (("missing_from", "add"),)


def test_loader_step_checks_names_a_requirement_of_its_scenario(tmp_path: Path) -> None:
    good = GOOD.replace(
        "        expect: {code: 250}", "        checks: TLS-1\n        expect: {code: 250}"
    )
    [scenario] = load_scenarios(write(tmp_path, good))
    assert scenario.steps[0].checks == "TLS-1"
    said = problem(tmp_path, good.replace("checks: TLS-1", "checks: SIZE-2"))
    assert ":9:" in said and "'SIZE-2' is not a requirement of this scenario" in said, said
