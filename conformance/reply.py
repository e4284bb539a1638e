"""SMTP replies as values."""

from __future__ import annotations

import re
from dataclasses import dataclass

ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s|$)")


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]  # the text of each line, without the code and separator

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
        last = len(self.lines) - 1
        return [f"{self.code}{' ' if i == last else '-'}{t}" for i, t in enumerate(self.lines)]

    def __str__(self) -> str:
        return " / ".join(self.wire_lines())

    def extensions(self) -> dict[str, str]:
        """EHLO keywords (upper-cased) and their parameters; the first line is the greeting."""
        result: dict[str, str] = {}
        for line in self.lines[1:]:
            keyword, _, params = line.strip().partition(" ")
            if keyword:
                result[keyword.upper()] = params.strip()
        return result
