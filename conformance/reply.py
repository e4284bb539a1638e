"""SMTP replies as values, with what was wrong with them on the wire."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .evidence import shown
from .model import Level

REPLY_SHOWN = 160  # characters of a reply quoted in a problem; the transcript has the rest

ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s|$)")


@dataclass(frozen=True)
class Violation:
    """A breach of the wire rules, judged against its own requirement (not the scenario's)."""

    requirement: str  # e.g. "RFC-9"
    level: Level
    text: str  # what was wrong, the offending bytes shown escaped and capped
    data: bytes = b""  # the offending bytes (capped)


@dataclass(frozen=True)
class Reply:
    code: int  # 0: not a reply line at all (see ``violations``)
    lines: tuple[str, ...]  # the text of each line, without the code and separator
    raw: bytes = field(default=b"", compare=False)  # as received (capped), terminators included
    violations: tuple[Violation, ...] = field(default=(), compare=False)

    @property
    def reply_class(self) -> int:
        return self.code // 100

    @property
    def enhanced(self) -> str | None:
        match = ENHANCED.match(self.lines[0]) if self.lines else None
        return ".".join(match.groups()) if match else None

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def wire_lines(self) -> list[str]:
        """The reply as it stood on the wire (code, separator, text)."""
        if self.code == 0:
            return list(self.lines)
        last = len(self.lines) - 1
        return [f"{self.code}{' ' if i == last else '-'}{t}" for i, t in enumerate(self.lines)]

    def __str__(self) -> str:
        """The reply for a problem's text: escaped, and capped (the transcript has it all)."""
        if self.code == 0:
            raw = self.raw or self.lines[0].encode("utf-8", "surrogateescape")
            return f"a malformed reply: {shown(raw, 40)}"
        return shown(" / ".join(self.wire_lines()), REPLY_SHOWN)

    def extensions(self) -> dict[str, str]:
        """EHLO keywords (upper-cased) and their parameters; the first line is the greeting."""
        result: dict[str, str] = {}
        for line in self.lines[1:]:
            keyword, _, params = line.strip().partition(" ")
            if keyword:
                result[keyword.upper()] = params.strip()
        return result
