"""The oracle of the property-based scenarios, and the runner's bounds, seed and shrinking."""

from __future__ import annotations

import pytest

from conformance.generated import (
    Expected,
    Probe,
    Settings,
    author_probes,
    control_probes,
    judge_author,
    judge_control,
    run_property,
    shown_domains,
    strict_domains,
)

PERMITTED = frozenset({"acme.test", "billing.acme.test"})


def _from(value: str, form: str = "well-formed") -> Probe:
    return Probe((("From", value),), form)


@pytest.mark.parametrize(
    ("value", "form", "expected"),
    [
        ("probe@acme.test", "well-formed", Expected.ACCEPT),
        ('"Doe, Jane" <probe@acme.test>', "well-formed", Expected.ACCEPT),
        ("=?utf-8?q?Probe_Team?= <probe@acme.test>", "well-formed", Expected.ACCEPT),
        ("probe@ACME.TEST", "well-formed", Expected.ACCEPT),
        ("probe@unverified.test", "well-formed", Expected.REFUSE),
        ('"x@unverified.test" <probe@acme.test>', "well-formed", Expected.REFUSE),
        ("probe@acme.test (x@unverified.test)", "well-formed", Expected.REFUSE),
        ("<probe@acme.test> x@unverified.test", "text-after-angle-addr", Expected.REFUSE),
        ("probe@acme.test; x@UNVERIFIED.test", "unquoted-semicolon-list", Expected.REFUSE),
        ("=?utf-8?q?x=40unverified.test?=@acme.test", "encoded-word-local-part", Expected.REFUSE),
        ("<@unverified.test:probe@acme.test>", "route", Expected.EITHER),
        ("<probe@acme.test><x@acme.test>", "two-angle-addrs", Expected.EITHER),
    ],
)
def test_author_oracle(value: str, form: str, expected: Expected) -> None:
    assert judge_author(_from(value, form), PERMITTED).expected is expected


def test_strict_reader_is_rfc_5322() -> None:
    assert strict_domains("Joe Q. Public <john@x.test>, b@y.test", "mailbox-list") == [
        "x.test",
        "y.test",
    ]
    assert strict_domains("<a@x.test> b@y.test", "mailbox-list") is None
    assert shown_domains('"b@y.test" <a@x.test>', "mailbox") == {"x.test", "y.test"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('["welcome","onboarding"]', Expected.ACCEPT),
        ("[]", Expected.ACCEPT),
        ('[\r\n "a"]', Expected.ACCEPT),
        ("['a']", Expected.REFUSE),
        ("[a, b]", Expected.REFUSE),
        ('["a", 1]', Expected.REFUSE),
        ("[NaN]", Expected.REFUSE),
        ('{"tags": []}', Expected.REFUSE),
        ('"a"', Expected.REFUSE),
    ],
)
def test_control_oracle(value: str, expected: Expected) -> None:
    assert judge_control(Probe((("X-Anypost-Tags", value),), "x")).expected is expected


def test_runner_finds_and_shrinks_an_accepted_spoof() -> None:
    """A target that only reads the first address (the old bypass) is caught, and the input
    reported is the shrunk one: an ambiguous form with short parts."""
    strategy = author_probes("from", sorted(PERMITTED), ["unverified.test"])
    sent: list[Probe] = []

    def first_address_only(probe: Probe) -> int:
        sent.append(probe)
        value = probe.headers[0][1]
        domain = value.split("@", 1)[1].split(">")[0].split()[0].strip(";,()").lower()
        return 250 if domain in PERMITTED else 550

    result = run_property(
        strategy,
        lambda p: judge_author(p, PERMITTED),
        first_address_only,
        Settings(examples=200, seconds=30, seed=1234),
        random_seed=99,
    )
    assert result.seed == 1234
    assert result.failure is not None
    assert "expected a refusal" in result.failure
    assert "input: From:" in result.failure
    assert 0 < result.examples <= len(sent)


def test_runner_passes_a_target_that_agrees_with_the_oracle() -> None:
    def agrees(probe: Probe) -> int:
        return 550 if judge_control(probe).expected is Expected.REFUSE else 250

    result = run_property(
        control_probes(), judge_control, agrees, Settings(examples=50, seconds=30), random_seed=7
    )
    assert result.failure is None
    assert result.seed == 7
    assert result.examples > 0


def test_runner_stops_at_its_time_bound() -> None:
    result = run_property(
        control_probes(),
        judge_control,
        lambda p: 250 if judge_control(p).expected is Expected.ACCEPT else 554,
        Settings(examples=10_000, seconds=0.5),
        random_seed=1,
    )
    assert result.failure is None
    assert result.examples < 10_000
