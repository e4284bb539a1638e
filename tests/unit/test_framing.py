"""The strict reply reader, fed bytes: each rule of the reply syntax from both sides (what is a
breach, and the nearest input that is not)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.evidence import LINE_CAP, shown
from conformance.framing import HARD_LINE, MAX_LINES, FramingError, ReplyReader
from conformance.model import Level
from conformance.reply import Reply


def replies(data: bytes) -> list[Reply]:
    reader = ReplyReader()
    reader.feed(data)
    found = []
    while (reply := reader.next_reply()) is not None:
        found.append(reply)
    return found


def rules(reply: Reply) -> list[str]:
    return [v.requirement for v in reply.violations]


def test_framing_well_formed_replies_have_no_violations() -> None:
    [one, many] = replies(b"250 2.0.0 OK\r\n250-localhost\r\n250-SIZE 100\r\n250 HELP\r\n")
    assert (one.code, one.lines, one.violations) == (250, ("2.0.0 OK",), ())
    assert many.lines == ("localhost", "SIZE 100", "HELP") and not many.violations


def test_framing_three_replies_in_one_segment_come_out_in_order() -> None:
    found = replies(b"250 a\r\n251 b\r\n252 c\r\n")
    assert [r.code for r in found] == [250, 251, 252]


def test_framing_partial_reply_waits_for_more() -> None:
    reader = ReplyReader()
    reader.feed(b"250-first\r\n250 sec")
    assert reader.next_reply() is None and reader.pending == b"250-first\r\n250 sec"
    reader.feed(b"ond\r\n")
    reply = reader.next_reply()
    assert reply is not None and reply.lines == ("first", "second")


def test_framing_bare_lf_is_read_and_is_a_breach_of_rfc_9() -> None:
    [reply] = replies(b"250-a\n250 b\r\n")
    assert reply.lines == ("a", "b") and rules(reply) == ["RFC-9"]
    assert "bare LF" in reply.violations[0].text and "line 1" in reply.violations[0].text


def test_framing_bare_cr_inside_a_line_is_a_breach_of_rfc_9() -> None:
    [reply] = replies(b"250 a\rb\r\n")
    assert rules(reply) == ["RFC-9"] and "bare CR" in reply.violations[0].text


def test_framing_mixed_codes_breach_rfc_11() -> None:
    [reply] = replies(b"250-a\r\n251-b\r\n250 c\r\n")
    assert reply.code == 250 and rules(reply) == ["RFC-11"]


@pytest.mark.parametrize(
    ("data", "rule"),
    [
        (b"250OK\r\n", "RFC-10"),  # no separator
        (b"250\tOK\r\n", "RFC-10"),
        (b"hello\r\n", "RFC-10"),  # no code at all
        (b"25 OK\r\n", "RFC-10"),
        (b"199 OK\r\n", "RFC-10"),  # §4.2: Reply-code = %x32-35 %x30-35 %x30-39
        (b"260 OK\r\n", "RFC-10"),
        (b"250\r\n", "RFC-13"),  # SHOULD: the SP even without text
    ],
)
def test_framing_bad_reply_lines(data: bytes, rule: str) -> None:
    [reply] = replies(data)
    assert rules(reply) == [rule]


def test_framing_nearest_good_lines_pass() -> None:
    for data in (b"250 \r\n", b"554 5.5.0 x\r\n", b"220-a\r\n220 \r\n", b"259 x\r\n"):
        [reply] = replies(data)
        assert not reply.violations, data


def test_framing_missing_space_is_a_should() -> None:
    [reply] = replies(b"250\r\n")
    assert reply.violations[0].level is Level.SHOULD and reply.lines == ("",)


def test_framing_malformed_line_is_a_reply_of_code_0() -> None:
    found = replies(b"hello\r\n250 OK\r\n")
    assert [r.code for r in found] == [0, 250]
    assert str(found[0]).startswith("a malformed reply")


def test_framing_line_length_512_octets_with_crlf() -> None:
    [ok] = replies(b"250 " + b"x" * 506 + b"\r\n")  # 512 with CRLF
    [long] = replies(b"250 " + b"x" * 507 + b"\r\n")
    assert not ok.violations and rules(long) == ["RFC-5"]
    assert "513 octets" in long.violations[0].text


def test_framing_endless_line_is_a_framing_error() -> None:
    reader = ReplyReader()
    reader.feed(b"220 " + b"x" * HARD_LINE)
    with pytest.raises(FramingError) as caught:
        reader.next_reply()
    assert caught.value.violation.requirement == "RFC-5"
    assert f"[{HARD_LINE + 4} octets in all]" in caught.value.message
    assert len(caught.value.message) < 2 * LINE_CAP


def test_framing_endless_reply_is_a_framing_error() -> None:
    reader = ReplyReader()
    reader.feed(b"250-x\r\n" * (MAX_LINES + 1))
    with pytest.raises(FramingError):
        reader.next_reply()


def test_framing_clear_drops_what_is_buffered() -> None:
    reader = ReplyReader()
    reader.feed(b"250 injected\r\n25")
    assert reader.clear() == b"250 injected\r\n25" and reader.next_reply() is None


def test_evidence_escapes_and_caps() -> None:
    assert shown(b"a\r\nb\x00\x1b[31m\xff") == "a\\r\\nb\\x00\\x1b[31m\\xff"
    text = shown(b"y" * 5000)
    assert text.endswith("[5000 octets in all]") and len(text) < LINE_CAP + 40
    assert shown("tab\tstays") == "tab\tstays"


@given(st.binary(max_size=3000))
def test_framing_any_bytes_give_replies_or_a_framing_error_never_a_crash(data: bytes) -> None:
    reader = ReplyReader()
    reader.feed(data)
    try:
        while (reply := reader.next_reply()) is not None:
            text = str(reply) + "".join(v.text for v in reply.violations)
            assert not any(c in text for c in "\r\n\x00\x1b")
    except FramingError:
        pass


def _record(requirements: list[str], failures: list[dict[str, object]]) -> dict[str, object]:
    return {
        "scenario": "s",
        "port": "p",
        "level": "MUST",
        "requirements": requirements,
        "verdict": "failed" if failures else "passed",
        "failures": failures,
        "should_failures": [],
    }


def test_reporting_wire_breach_is_charged_to_its_rule_unless_the_scenario_names_it() -> None:
    from conformance.model import Requirement
    from conformance.reporting import by_requirement

    catalogue = {
        rid: Requirement(rid, Level.MUST, "text", rid.split("-")[0])
        for rid in ("SENDER-1", "RFC-4", "RFC-12")
    }
    extra = {"step": "x", "location": "f:1:1", "level": "MUST", "problems": ["extra"]}
    records = [
        _record(["SENDER-1"], [{**extra, "requirement": "RFC-12"}]),
        _record(["RFC-4", "RFC-12"], [{**extra, "requirement": "RFC-12"}]),
    ]
    rows = {row["id"]: row["verdict"] for row in by_requirement(records, catalogue)}
    assert rows == {"SENDER-1": "passed", "RFC-4": "failed", "RFC-12": "failed"}
    rows = {row["id"]: row["verdict"] for row in by_requirement(records[:1], catalogue)}
    assert rows == {"SENDER-1": "passed", "RFC-4": "not covered", "RFC-12": "failed"}


def test_framing_reply_text_has_control_bytes_escaped() -> None:
    [reply] = replies(b"250-SIZE 10\x1b[31m\r\n250 \x00HELP\r\n")
    assert reply.lines == ("SIZE 10\\x1b[31m", "\\x00HELP")
    assert "\x1b" not in str(reply) and "\x00" not in str(reply)


def test_engine_failure_problems_are_capped() -> None:
    from conformance.engine import PROBLEM_CAP, Failure

    failure = Failure("EHLO x", "f:1:1", Level.MUST, ("y" * 5000, "short"), 0)
    assert failure.problems[1] == "short"
    assert len(failure.problems[0]) < PROBLEM_CAP + 40
    assert failure.problems[0].endswith("[5000 characters in all]")
