"""Pure matchers: what a step expected against what it observed. No I/O, no SMTP.

``judge`` returns the mismatches, each saying what was expected and what came back; an empty
list is a pass. ``judge_checks`` returns the same mismatches with the kind of check each comes
from (``CHECK_*``), so the engine can charge an incidental check (the ``ids=`` of a message
accepted in a sender scenario) to the requirement it belongs to rather than to the scenario's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .model import ReplyMatch
from .reply import Reply

ID_FORMAT = re.compile(
    r"^email_[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
)
ID_TOKEN = re.compile(r"email_[^\s,;]+")
MAX_REPLY_LINE = 512  # octets with the CRLF (RFC 5321 §4.5.3.1.5)

CHECK_REPLY = "reply"  # code, class, text, extensions, closed, TLS: the behaviour itself
CHECK_IDS = "ids"  # the ids= field: present, one per recipient, of the email_ form
CHECK_IDS_UNIQUE = "ids unique"  # one id per recipient's copy: no two alike
CHECK_IDS_NEW = "ids new"  # a resubmission is a new send: ids never seen before
CHECK_LINE_LENGTH = "line length"  # reply lines of at most 512 octets
CHECK_ENHANCED = "enhanced"  # RFC 3463 enhanced status codes


@dataclass(frozen=True)
class Observation:
    reply: Reply | None
    closed: bool = False
    tls: bool = False
    error: str | None = None
    accepted_recipients: int = 0
    seen_ids: frozenset[str] = field(default_factory=frozenset)
    # Set when AUTH before TLS was answered 535: the server judged a credential in clear.
    plaintext_judgement: str | None = None


def ids_of(reply: Reply) -> list[str] | None:
    """The ids of a reply to DATA, gathered across every line after the ``ids=`` keyword.

    None when the reply has no ``ids=`` field at all.
    """
    text = "\n".join(reply.lines)
    at = text.find("ids=")
    if at < 0:
        return None
    return ID_TOKEN.findall(text[at:])


class _Problems(list[tuple[str, str]]):
    """Mismatches, each with the kind of check it comes from (``CHECK_REPLY`` by default)."""

    def add(self, text: str, check: str = CHECK_REPLY) -> None:
        self.append((check, text))


def _fmt_codes(codes: tuple[int, ...]) -> str:
    return " or ".join(str(c) for c in codes)


def judge(match: ReplyMatch, obs: Observation) -> list[str]:
    return [text for _, text in judge_checks(match, obs)]


def judge_checks(match: ReplyMatch, obs: Observation) -> list[tuple[str, str]]:
    """The mismatches, each as (kind of check, what was expected and what came back)."""
    problems = _Problems()
    reply = obs.reply
    if match.no_reply:
        if reply is not None:
            problems.add(f"expected no reply, got {reply}")
        return problems
    wants_reply = any(
        (
            match.code,
            match.reply_class,
            match.enhanced,
            match.text,
            match.has_extensions,
            match.lacks_extensions,
            match.extension_values,
            match.checks_ids,
            match.enhanced_every_line,
        )
    )
    if match.refused is not None:
        refused = obs.closed or (reply is not None and reply.reply_class in (4, 5))
        if refused != match.refused:
            problems.add(
                f"expected the server to refuse (4xx, 5xx or close), got {reply or obs.error}"
                if match.refused
                else f"expected the server to accept, got {reply or obs.error}"
            )
        if reply is None:
            return problems
    if reply is None:
        if wants_reply:
            got = obs.error or "no reply"
            problems.add(f"expected a reply ({_summary(match)}), got {got}")
    else:
        _judge_reply(problems, match, reply, obs)
    if match.closed is not None and match.closed != obs.closed:
        problems.add(
            "expected the server to close the connection, but it stayed open"
            if match.closed
            else "expected the connection to stay open, but the server closed it"
        )
    if match.tls is not None and match.tls != obs.tls:
        problems.add(
            "expected TLS to be established" if match.tls else "expected no TLS on the session"
        )
    return problems


def judge_id_form(match: ReplyMatch, obs: Observation) -> list[str]:
    """The form of the ids beyond ``email_``: a SHOULD. The contract requires "one email_ ID per
    recipient"; lowercase UUIDv7 is only the shape of its example (and the reference server's
    choice), so another server's ids of another shape earn a warning, never a failure."""
    if not (match.checks_ids and match.ids_uuidv7) or obs.reply is None:
        return []
    bad = [i for i in ids_of(obs.reply) or () if not ID_FORMAT.match(i)]
    if not bad:
        return []
    return [f"expected ids of the form email_<lowercase UUIDv7>, got {', '.join(bad)}"]


def _summary(match: ReplyMatch) -> str:
    parts = []
    if match.code:
        parts.append(_fmt_codes(match.code))
    if match.reply_class:
        parts.append(" or ".join(f"{c}xx" for c in match.reply_class))
    if match.enhanced:
        parts.append(match.enhanced)
    return " ".join(parts) or "any"


def _judge_reply(problems: _Problems, match: ReplyMatch, reply: Reply, obs: Observation) -> None:
    if match.code and reply.code not in match.code:
        problems.add(f"expected reply code {_fmt_codes(match.code)}, got {reply}")
    if match.reply_class and reply.reply_class not in match.reply_class:
        wanted = " or ".join(f"{c}xx" for c in match.reply_class)
        problems.add(f"expected a {wanted} reply, got {reply}")
    if match.enhanced and reply.enhanced != match.enhanced:
        problems.add(
            f"expected enhanced status code {match.enhanced}, got {reply.enhanced or 'none'} "
            f"in {reply}",
            CHECK_ENHANCED,
        )
    if match.text and not re.search(match.text, reply.text, re.IGNORECASE):
        problems.add(f"expected reply text matching /{match.text}/, got {reply}")
    if match.enhanced_every_line and reply.enhanced:
        for line in reply.lines:
            if not line.startswith(reply.enhanced):
                problems.add(
                    f"expected every line to carry {reply.enhanced}, got {line!r}", CHECK_ENHANCED
                )
                break
    if match.has_extensions or match.lacks_extensions or match.extension_values:
        extensions = reply.extensions()
        for name in match.has_extensions:
            if name.upper() not in extensions:
                problems.add(
                    f"expected EHLO to advertise {name}; it advertised {_names(extensions)}"
                )
        for name in match.lacks_extensions:
            if name.upper() in extensions:
                problems.add(
                    f"expected EHLO not to advertise {name}; it advertised {_names(extensions)}"
                )
        for name, value in match.extension_values:
            actual = extensions.get(name.upper())
            if actual is None:
                problems.add(f"expected EHLO to advertise {name} {value}; it is absent")
            elif actual.split() != value.split():
                problems.add(f"expected EHLO {name} {value}, got {name} {actual}")
    if match.checks_ids:
        _judge_ids(problems, match, reply, obs)


def _names(extensions: dict[str, str]) -> str:
    return ", ".join(extensions) or "nothing"


def _judge_ids(problems: _Problems, match: ReplyMatch, reply: Reply, obs: Observation) -> None:
    ids = ids_of(reply)
    if ids is None:
        problems.add(f"expected an ids= field in the reply, got {reply}", CHECK_IDS)
        return
    expected = obs.accepted_recipients if match.ids_count == "recipients" else match.ids_count
    if expected is not None and len(ids) != expected:
        problems.add(
            f"expected {expected} id(s) in ids=, got {len(ids)}: {' '.join(ids)}", CHECK_IDS
        )
    if len(set(ids)) != len(ids):
        problems.add(
            f"expected every id to be unique, got duplicates in {' '.join(ids)}", CHECK_IDS
        )
    reused = sorted(set(ids) & obs.seen_ids)
    if reused:
        problems.add(
            f"expected new ids for a new submission, got ids seen before: {' '.join(reused)}",
            CHECK_IDS_NEW,
        )
    if match.ids_line_length:
        for line in reply.wire_lines():
            if len(line.encode()) + 2 > MAX_REPLY_LINE:
                problems.add(
                    f"expected reply lines of at most {MAX_REPLY_LINE} octets, got one of "
                    f"{len(line.encode()) + 2}",
                    CHECK_LINE_LENGTH,
                )
                break
