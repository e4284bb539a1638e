"""The wire log of a scenario: every line sent and received, with secrets redacted.

Redaction happens when a line is recorded, so no later consumer (report, log, exception) can
see a secret. It covers the secrets themselves and any base64 token that decodes to text
containing one (an ``AUTH PLAIN`` payload, a LOGIN answer).
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from dataclasses import dataclass, field

REDACTED = "<redacted>"
_B64_TOKEN = re.compile(r"[A-Za-z0-9+/]{8,}={0,2}")


class Redactor:
    def __init__(self, secrets: list[str] | None = None) -> None:
        self._secrets: list[str] = []
        for secret in secrets or []:
            self.add(secret)

    def add(self, secret: str) -> None:
        if secret and len(secret) >= 4 and secret not in self._secrets:
            self._secrets.append(secret)
            self._secrets.sort(key=len, reverse=True)

    def _decodes_to_secret(self, token: str) -> bool:
        padded = token + "=" * (-len(token) % 4)
        try:
            decoded = base64.b64decode(padded, validate=True).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            return False
        return any(secret in decoded for secret in self._secrets)

    def __call__(self, text: str) -> str:
        if not self._secrets:
            return text
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return _B64_TOKEN.sub(
            lambda m: REDACTED if self._decodes_to_secret(m.group(0)) else m.group(0), text
        )


@dataclass(frozen=True)
class Entry:
    at: float  # seconds since the transcript started
    direction: str  # ">" sent, "<" received, "*" an event (TLS, close, timeout)
    text: str

    def render(self) -> str:
        return f"{self.at:8.3f} {self.direction} {self.text}"


@dataclass
class Transcript:
    redact: Redactor = field(default_factory=Redactor)
    entries: list[Entry] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def _add(self, direction: str, text: str) -> None:
        self.entries.append(Entry(time.monotonic() - self.started, direction, self.redact(text)))

    def sent(self, data: bytes | str) -> None:
        text = data.decode("utf-8", "backslashreplace") if isinstance(data, bytes) else data
        for line in text.split("\r\n"):
            if line:
                self._add(">", _visible(line))

    def sent_summary(self, text: str) -> None:
        self._add(">", text)

    def received(self, code: int, lines: list[str]) -> None:
        for i, line in enumerate(lines):
            sep = " " if i == len(lines) - 1 else "-"
            self._add("<", f"{code}{sep}{line}")

    def event(self, text: str) -> None:
        self._add("*", text)

    def render(self, around: int | None = None, context: int = 6) -> str:
        """The transcript as text; with ``around``, only ``context`` entries either side."""
        entries = self.entries
        if around is not None:
            entries = entries[max(0, around - context) : around + context]
        return "\n".join(e.render() for e in entries)

    def __len__(self) -> int:
        return len(self.entries)


def _visible(line: str) -> str:
    """Show stray control characters (bare CR/LF, NUL) instead of sending them to a terminal."""
    return line.replace("\r", "\\r").replace("\n", "\\n").replace("\x00", "\\x00")
