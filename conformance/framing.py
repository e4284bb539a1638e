"""The strict reply reader: SMTP replies out of the raw bytes of a session, with every breach
of the reply syntax recorded. Pure: it is fed bytes and hands out replies; no I/O.

The rules (RFC 5321):
- §2.3.8: lines end with CRLF; "Conforming implementations MUST NOT recognize or generate any
  other character or character sequence as a line terminator" (RFC-9).
- §4.2: a reply line is a three-digit code (``Reply-code = %x32-35 %x30-35 %x30-39``), then ``-``
  on every line but the last, then SP (or nothing) on the last (RFC-10; SP on the last line is a
  SHOULD: RFC-13).
- §4.2.1: "In a multiline reply, the reply code on each of the lines MUST be the same" (RFC-11).
- §4.5.3.1.5: a reply line is at most 512 octets with its CRLF (RFC-5).

A breach that still lets the reply be read (a bare LF, a long line, a mixed code) is recorded on
the reply and reading goes on, so the rest of the scenario can be judged. A line that is not a
reply line at all becomes a malformed reply of its own (code 0). Beyond the reader's bounds (a
line of ``HARD_LINE`` octets without an end, a reply of ``MAX_LINES`` lines or ``MAX_BYTES``
octets) the stream cannot be trusted: ``FramingError``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .evidence import escape, shown
from .model import Level
from .reply import Reply, Violation

MAX_REPLY_LINE = 512  # octets with the CRLF (RFC 5321 §4.5.3.1.5)
HARD_LINE = 8192  # a line longer than this without an end is not SMTP any more
MAX_LINES = 1000  # lines of one reply
MAX_BYTES = 65536  # octets of one reply

CRLF_RULE = "RFC-9"
SYNTAX_RULE = "RFC-10"
SAME_CODE_RULE = "RFC-11"
LENGTH_RULE = "RFC-5"
SP_RULE = "RFC-13"


class FramingError(Exception):
    """The reply stream broke the reader's bounds: nothing after this can be paired."""

    def __init__(self, message: str, violation: Violation) -> None:
        self.message = message
        self.violation = violation
        super().__init__(message, violation)

    def __str__(self) -> str:
        return self.message


def _code_of(content: bytes) -> int | None:
    """The reply code when ``content`` starts like a reply line (§4.2 ``Reply-code``)."""
    head = content[:3]
    if len(head) == 3 and head.isdigit() and head[0] in b"2345" and head[1] in b"012345":
        return int(head)
    return None


@dataclass
class _Line:
    raw: bytes  # with its terminator
    content: bytes  # without it


class ReplyReader:
    """Feed it the bytes of a session; take complete replies, in order, as they form."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer.extend(data)

    def clear(self) -> bytes:
        """Forget everything buffered (RFC 3207 §4.2: plaintext read before the TLS handshake
        is no part of the TLS session); returns what was dropped."""
        dropped = bytes(self._buffer)
        del self._buffer[:]
        return dropped

    @property
    def pending(self) -> bytes:
        """Bytes received that do not form a complete reply yet."""
        return bytes(self._buffer)

    def _lines(self) -> tuple[list[_Line], int] | None:
        """The lines of the next complete reply and the octets they take, or None."""
        lines: list[_Line] = []
        offset = 0
        while True:
            end = self._buffer.find(b"\n", offset)
            if (
                end < 0
                and not lines
                and len(self._buffer) >= 3
                and _code_of(bytes(self._buffer[:3])) is None
            ):
                # No reply starts like this, wherever the line ends: do not wait for the end.
                return [_Line(bytes(self._buffer), bytes(self._buffer))], len(self._buffer)
            if end < 0:
                rest = len(self._buffer) - offset
                if rest > HARD_LINE:
                    data = bytes(self._buffer[offset:])
                    raise FramingError(
                        f"a reply line of more than {HARD_LINE} octets without a line end: "
                        f"{shown(data)}",
                        Violation(
                            LENGTH_RULE,
                            Level.MUST,
                            f"a reply line longer than {MAX_REPLY_LINE} octets "
                            f"({rest} octets and no CRLF yet): {shown(data)}",
                            data[:1024],
                        ),
                    )
                return None
            raw = bytes(self._buffer[offset : end + 1])
            content = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
            lines.append(_Line(raw, content))
            offset = end + 1
            if len(lines) > MAX_LINES or offset > MAX_BYTES:
                data = bytes(self._buffer[:offset])
                raise FramingError(
                    f"a reply of more than {MAX_LINES} lines or {MAX_BYTES} octets: {shown(data)}",
                    Violation(
                        SYNTAX_RULE,
                        Level.MUST,
                        f"a reply without an end ({len(lines)} lines, {offset} octets)",
                        data[:1024],
                    ),
                )
            code = _code_of(content)
            # A line that is not a reply line ends what is read so far; a line whose
            # separator is not "-" is the last line (§4.2.1).
            if code is None or content[3:4] != b"-":
                return lines, offset

    def next_reply(self) -> Reply | None:
        """The next complete reply, or None until more bytes arrive."""
        found = self._lines()
        if found is None:
            return None
        lines, used = found
        del self._buffer[:used]
        return parse_reply([line.raw for line in lines])


def _where(index: int, raw: bytes) -> str:
    """A line of a reply, for a breach's message (made only when there is a breach)."""
    return f"line {index + 1} of the reply, {shown(raw, 80)}"


def parse_reply(raw_lines: list[bytes]) -> Reply:
    """One reply from its raw lines (each with its terminator), judged line by line."""
    violations: list[Violation] = []
    first = raw_lines[0]
    texts: list[str] = []
    reply_code: int | None = None
    for index, raw in enumerate(raw_lines):
        crlf = raw.endswith(b"\r\n")
        content = raw[:-2] if crlf else raw[:-1] if raw.endswith(b"\n") else raw
        code = _code_of(content)
        if code is None:
            # Not SMTP at all: one breach, shown once (its other faults are beside the point).
            violations.append(
                Violation(
                    SYNTAX_RULE,
                    Level.MUST,
                    f"not a reply line (a reply line starts with a three-digit code 2xx-5xx): "
                    f"{shown(raw, 40)}",
                    raw[:1024],
                )
            )
            texts.append(escape(content.decode("utf-8", "backslashreplace")))
            continue
        if not crlf:
            violations.append(
                Violation(CRLF_RULE, Level.MUST, f"a bare LF ends {_where(index, raw)}", raw[:1024])
            )
        if b"\r" in content:
            violations.append(
                Violation(
                    CRLF_RULE, Level.MUST, f"a bare CR inside {_where(index, raw)}", raw[:1024]
                )
            )
        length = len(content) + 2
        if length > MAX_REPLY_LINE:
            violations.append(
                Violation(
                    LENGTH_RULE,
                    Level.MUST,
                    f"a reply line of {length} octets with its CRLF (at most {MAX_REPLY_LINE}):"
                    f" {shown(raw, 80)}",
                    raw[:1024],
                )
            )
        text = content[4:].decode("utf-8", "backslashreplace")
        if reply_code is None:
            reply_code = code
        elif code != reply_code:
            violations.append(
                Violation(
                    SAME_CODE_RULE,
                    Level.MUST,
                    f"code {code} on {_where(index, raw)} of a {reply_code} reply",
                    raw[:1024],
                )
            )
        separator = content[3:4]
        last = index == len(raw_lines) - 1
        if separator not in (b"-", b" ", b""):
            violations.append(
                Violation(
                    SYNTAX_RULE,
                    Level.MUST,
                    f"{separator!r} after the code on {_where(index, raw)} "
                    "(expected '-' or a space)",
                    raw[:1024],
                )
            )
            text = content[3:].decode("utf-8", "backslashreplace")
        elif last and separator == b"":
            violations.append(
                Violation(
                    SP_RULE,
                    Level.SHOULD,
                    f"no space after the code on the last line, {shown(raw, 80)}",
                    raw[:1024],
                )
            )
        # Control bytes never reach a matcher's message or a report as they are.
        texts.append(escape(text))
    if reply_code is None:
        # Not a reply at all: code 0 keeps it a value every matcher can refuse.
        return Reply(0, (texts[0],), raw=first, violations=tuple(violations))
    return Reply(reply_code, tuple(texts), raw=b"".join(raw_lines), violations=tuple(violations))
