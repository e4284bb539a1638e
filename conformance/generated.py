"""Differential property-based probes: hypothesis writes the headers, an oracle judges them.

Two families:
- ``from`` and ``sender``: spellings of the From (or Sender) field from the RFC 5322 grammar
  (display names, quoted strings, comments, encoded-words, lists, folding) and the ambiguous
  forms mail clients and parsers disagree on (Chen et al., "Composition Kills", USENIX Security
  2020). The oracle reads the field with a strict RFC 5322 parser, the ``abnf`` package's
  grammar of RFC 5322 (a parser generated from the RFC's own ABNF), and adds every address-like
  text a reader could be shown (in display names, comments and decoded encoded-words). A field
  showing a domain outside the permitted ones must be refused; a well-formed field on permitted
  domains must be accepted; anything else may go either way.
- ``control``: X-Anypost-Tags values, JSON arrays of strings and their neighbours (other JSON,
  JavaScript and YAML spellings). The oracle is a strict RFC 8259 reader (the standard
  library's, with NaN and Infinity refused): an array of strings must be accepted, anything else
  refused.

Pure: no I/O. ``run_property`` drives hypothesis and calls ``submit`` for each example; the
step in ``steps`` does the SMTP.
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from email.header import decode_header
from enum import StrEnum
from typing import Any

from abnf.grammars import rfc5322
from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings
from hypothesis import strategies as st

FAMILIES = ("from", "sender", "control")


class Expected(StrEnum):
    ACCEPT = "accept"
    REFUSE = "refuse"
    EITHER = "either"


@dataclass(frozen=True)
class Probe:
    """One generated message: its extra header fields, in order, and how they were made."""

    headers: tuple[tuple[str, str], ...]
    form: str  # "well-formed", or the name of the ambiguous form

    def describe(self) -> str:
        return "; ".join(f"{n}: {v!r}" for n, v in self.headers) + f" ({self.form})"


@dataclass(frozen=True)
class Verdict:
    expected: Expected
    reason: str


@dataclass(frozen=True)
class Settings:
    examples: int = 60
    seconds: float = 30.0
    seed: int | None = None


@dataclass(frozen=True)
class Result:
    seed: int
    examples: int  # examples sent to the target
    failure: str | None  # the shrunk failing input and what went wrong, or None


# --- the oracle -----------------------------------------------------------------------------
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
# Text a person reads as an address: atext, an at sign, a domain of at least two labels.
_ADDRESS_LIKE = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@([\w-]+(?:\.[\w-]+)+)")


def _unfold(value: str) -> str:
    return re.sub(r"\r\n(?=[ \t])", "", value)


def _decoded(value: str) -> str:
    """The field as a reader decoding every encoded-word (RFC 2047) would show it."""

    def one(match: re.Match[str]) -> str:
        try:
            parts = decode_header(match.group(0))
            return "".join(
                p.decode(c or "ascii", "replace") if isinstance(p, bytes) else str(p)
                for p, c in parts
            )
        except Exception:  # a malformed encoded-word stays as written
            return match.group(0)

    return unicodedata.normalize("NFKC", _ENCODED_WORD.sub(one, value))


def strict_domains(value: str, rule: str) -> list[str] | None:
    """The addr-spec domains of ``value`` read as RFC 5322 ``rule``, or None if it is not one."""
    try:
        node = rfc5322.Rule(rule).parse_all(_unfold(value))
    except Exception:  # abnf.ParseError and friends: not derived by the grammar
        return None
    found: list[str] = []

    def walk(n: Any) -> None:
        if n.name == "addr-spec":
            domain = next(c for c in n.children if c.name == "domain")
            text = _text_of(domain)
            found.append(text)
            return
        for child in getattr(n, "children", ()):
            walk(child)

    walk(node)
    return found


def _text_of(domain: Any) -> str:
    """A domain node without its comments and folding white space."""
    for child in domain.children:
        if child.name in ("dot-atom", "domain-literal", "obs-domain"):
            for part in child.children:
                if part.name in ("dot-atom-text",):
                    return str(part.value)
            return re.sub(r"\([^)]*\)|\s", "", str(child.value))
    return str(domain.value).strip()


def shown_domains(value: str, rule: str) -> set[str]:
    """Every domain a reader could be shown: the strict reading's, and address-like text
    anywhere (display names, comments, decoded encoded-words)."""
    found = set(strict_domains(value, rule) or [])
    found |= {m.group(1) for m in _ADDRESS_LIKE.finditer(_decoded(_unfold(value)))}
    return {d.lower().rstrip(".") for d in found}


def judge_author(probe: Probe, permitted: frozenset[str]) -> Verdict:
    shown: set[str] = set()
    strict = True
    for name, value in probe.headers:
        rule = "mailbox-list" if name.lower() == "from" else "mailbox"
        shown |= shown_domains(value, rule)
        strict = strict and strict_domains(value, rule) is not None
    outside = sorted(shown - permitted)
    if outside:
        return Verdict(Expected.REFUSE, f"a reader could be shown {', '.join(outside)}")
    if probe.form == "well-formed" and strict:
        return Verdict(Expected.ACCEPT, "well-formed RFC 5322, every domain permitted")
    return Verdict(Expected.EITHER, "ambiguous, but shows only permitted domains")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259 §6)")


def judge_control(probe: Probe) -> Verdict:
    value = _unfold(probe.headers[0][1]).strip()
    try:
        parsed = json.loads(value, parse_constant=_no_constants)
    except ValueError:
        return Verdict(Expected.REFUSE, "not JSON (RFC 8259)")
    if isinstance(parsed, list) and all(isinstance(t, str) for t in parsed):
        return Verdict(Expected.ACCEPT, "a JSON array of strings")
    return Verdict(Expected.REFUSE, "JSON, but not an array of strings")


# --- the generators -------------------------------------------------------------------------
_LOCAL = st.from_regex(r"[a-z0-9]{1,6}([.+_-][a-z0-9]{1,5}){0,2}", fullmatch=True)
_WORD = st.from_regex(r"[A-Za-z0-9]{1,8}", fullmatch=True)
_TEXT = st.text(alphabet="abcdefXYZ0123 ,;:.<>[]", min_size=1, max_size=12)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _q_encode(text: str) -> str:
    return "".join(c if c.isalnum() else "_" if c == " " else f"={ord(c):02X}" for c in text)


@st.composite
def _addressish(draw: Any, domains: list[str]) -> str:
    """Free text, sometimes holding an address on one of ``domains``."""
    text: str = draw(_TEXT)
    if draw(st.booleans()):
        text = f"{text} {draw(_LOCAL)}@{draw(st.sampled_from(domains))}".strip()
    return text


@st.composite
def _display_name(draw: Any, domains: list[str]) -> str:
    kind = draw(st.sampled_from(["atoms", "quoted", "encoded"]))
    if kind == "atoms":
        return " ".join(draw(st.lists(_WORD, min_size=1, max_size=3)))
    if kind == "quoted":
        return _quoted(draw(_addressish(domains)))
    return f"=?utf-8?q?{_q_encode(draw(_addressish(domains)))}?="


@st.composite
def _mailbox(draw: Any, domains: list[str], named_domains: list[str]) -> str:
    address = f"{draw(_LOCAL)}@{draw(st.sampled_from(domains))}"
    form = draw(st.sampled_from(["addr-spec", "name-addr", "angle-addr"]))
    text = address
    if form == "name-addr":
        text = f"{draw(_display_name(named_domains))} <{address}>"
    elif form == "angle-addr":
        text = f"<{address}>"
    if draw(st.integers(0, 3)) == 0:
        comment = draw(_addressish(named_domains)).replace("(", "").replace(")", "")
        text += f" ({comment.replace(chr(92), '')})"
    return text


def _fold(draw: Any, value: str) -> str:
    spaces = [i for i, c in enumerate(value) if c == " "]
    if not spaces or not draw(st.booleans()):
        return value
    at = draw(st.sampled_from(spaces))
    return value[:at] + "\r\n" + value[at:]


@st.composite
def author_probes(draw: Any, field: str, permitted: list[str], others: list[str]) -> Probe:
    """A From (``field="from"``) or Sender spelling: well-formed on any domains, or ambiguous."""
    every = permitted + others + [d.upper() for d in others]
    ambiguous = [
        "text-after-angle-addr",
        "two-angle-addrs",
        "unquoted-address-display-name",
        "unquoted-semicolon-list",
        "encoded-word-local-part",
        "group",
        "route",
    ]
    form = draw(st.sampled_from(["well-formed", "well-formed", *ambiguous]))
    # Which of the form's two addresses is on a permitted domain: the spoof puts the permitted
    # one where a lenient reader looks (first) and another domain where a client may show it.
    placing = draw(st.sampled_from(["spoof", "reversed", "both-permitted", "both-other"]))
    mine, theirs = draw(st.sampled_from(permitted)), draw(st.sampled_from(every[len(permitted) :]))
    d1 = mine if placing in ("spoof", "both-permitted") else theirs
    d2 = theirs if placing in ("spoof", "both-other") else mine
    a, x = draw(_LOCAL), draw(_LOCAL)
    single = field == "sender"
    count = 1
    if form == "well-formed":
        domains = draw(st.sampled_from([permitted, every]))
        count = 1 if single else draw(st.integers(1, 3))
        value = ", ".join(draw(_mailbox(domains, every)) for _ in range(count))
    elif form == "text-after-angle-addr":
        value = f"<{a}@{d1}> {x}@{d2}"
    elif form == "two-angle-addrs":
        value = f"<{a}@{d1}>{draw(st.sampled_from(['', ' ']))}<{x}@{d2}>"
    elif form == "unquoted-address-display-name":
        value = f"{a}@{d1} <{x}@{d2}>"
    elif form == "unquoted-semicolon-list":
        value = f"{a}@{d1}; {x}@{d2}"
    elif form == "encoded-word-local-part":
        value = f"=?utf-8?q?{x}=40{d2}?=@{d1}"
    elif form == "group":
        value = f"{draw(_WORD)}: {x}@{d2};"
    else:
        value = f"<@{d1}:{x}@{d2}>"
    value = _fold(draw, value)
    own = f"probe@{permitted[0]}"
    if field == "sender":
        return Probe((("From", own), ("Sender", value)), form)
    headers: tuple[tuple[str, str], ...] = (("From", value),)
    if count > 1:
        # RFC 5322 §3.6.2: several authors need a Sender; a permitted one.
        headers += (("Sender", own),)
    return Probe(headers, form)


_TAG = st.text(
    alphabet=st.characters(codec="ascii", exclude_categories=["Cc"]), min_size=0, max_size=10
)


@st.composite
def control_probes(draw: Any) -> Probe:
    """An X-Anypost-Tags value: a JSON array of strings, or one of its neighbours."""
    tags = draw(st.lists(_TAG, max_size=4))
    form = draw(
        st.sampled_from(
            [
                "json-array-of-strings",
                "json-array-of-strings",
                "json-spaced",
                "array-with-number",
                "array-with-null",
                "nested-array",
                "object",
                "bare-string",
                "single-quoted",
                "unquoted-yaml-flow",
                "trailing-comma",
                "unterminated",
                "nan",
            ]
        )
    )
    if form == "json-array-of-strings":
        value = json.dumps(tags, separators=(",", ":"))
    elif form == "json-spaced":
        value = json.dumps(tags, indent=None).replace(",", " , ").replace("[", "[ ")
    elif form == "array-with-number":
        value = json.dumps([*tags, draw(st.integers(-5, 5))])
    elif form == "array-with-null":
        value = json.dumps([*tags, None])
    elif form == "nested-array":
        value = json.dumps([tags])
    elif form == "object":
        value = json.dumps({"tags": tags})
    elif form == "bare-string":
        value = json.dumps(draw(_TAG))
    elif form == "single-quoted":
        value = "[" + ",".join("'" + t.replace("'", "") + "'" for t in tags or ["a"]) + "]"
    elif form == "unquoted-yaml-flow":
        words = [re.sub(r"[^A-Za-z0-9]", "", t) or "a" for t in tags or ["a"]]
        value = "[" + ", ".join(words) + "]"
    elif form == "trailing-comma":
        value = json.dumps(tags or ["a"])[:-1] + ",]"
    elif form == "unterminated":
        value = json.dumps(tags or ["a"])[:-1]
    else:
        value = "[NaN]"
    return Probe((("X-Anypost-Tags", _fold(draw, value)),), form)


# --- the runner -----------------------------------------------------------------------------
Submit = Callable[[Probe], int | None]  # the reply code to the end of data, None: no verdict


def run_property(
    strategy: st.SearchStrategy[Probe],
    judge: Callable[[Probe], Verdict],
    submit: Submit,
    config: Settings,
    random_seed: int,
) -> Result:
    """Run the property: every example is submitted and its reply held against the oracle.

    Bounded by ``config.examples`` and ``config.seconds`` (generation; shrinking gets as long
    again). Each input is submitted once: its outcome is remembered, so hypothesis's replays
    and shrinks see a deterministic target.
    """
    chosen = config.seed if config.seed is not None else random_seed
    started = time.monotonic()
    outcomes: dict[Probe, str | None] = {}
    sent = 0
    last_failing: list[Probe] = []  # hypothesis replays its shrunk example last

    def check(probe: Probe) -> None:
        nonlocal sent
        if probe not in outcomes:
            elapsed = time.monotonic() - started
            if elapsed > 2 * config.seconds or (elapsed > config.seconds and not outcomes_fail()):
                return  # out of time: the example is not run (the bound is the CI's)
            verdict = judge(probe)
            code = submit(probe)
            sent += 1
            outcomes[probe] = _problem(verdict, code)
        problem = outcomes[probe]
        if problem is not None:
            last_failing.append(probe)
            raise AssertionError(problem)

    def outcomes_fail() -> bool:
        return any(p is not None for p in outcomes.values())

    test = settings(
        max_examples=config.examples,
        deadline=None,
        database=None,
        derandomize=False,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
        report_multiple_bugs=False,
    )(seed(chosen)(given(strategy)(check)))
    try:
        test()
    except AssertionError:
        shrunk = last_failing[-1]
        return Result(chosen, sent, f"{outcomes[shrunk]}\n  input: {shrunk.describe()}")
    except Exception as exc:  # hypothesis's own errors (flaky target, ...): never a pass
        return Result(chosen, sent, f"the property could not run to the end: {exc!r}")
    return Result(chosen, sent, None)


def _problem(verdict: Verdict, code: int | None) -> str | None:
    if code is None or verdict.expected is Expected.EITHER:
        return None
    accepted = 200 <= code < 300
    if verdict.expected is Expected.REFUSE and accepted:
        return f"expected a refusal ({verdict.reason}), got {code}"
    if verdict.expected is Expected.ACCEPT and code >= 500:
        return f"expected acceptance ({verdict.reason}), got {code}"
    return None
