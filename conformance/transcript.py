"""The wire log of a scenario: every line sent and received, with secrets redacted.

Redaction happens when a line is recorded, so no later consumer (report, log, exception) can
see a secret. It covers the secrets themselves and any base64 token that decodes to text
containing one (an ``AUTH PLAIN`` payload, a LOGIN answer).

Evidence is capped when it is recorded too: each line shows at most ``LINE_CAP`` octets (and
the total it had), control bytes and invalid UTF-8 escaped, and a scenario keeps at most
``MAX_ENTRIES`` lines and ``MAX_TEXT`` characters, counting what it left out.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from dataclasses import dataclass, field

from .evidence import LINE_CAP, shown

MAX_ENTRIES = 600  # lines kept per scenario
MAX_TEXT = 64 * 1024  # characters kept per scenario
REDACTED = "<redacted>"
_B64_TOKEN = re.compile(r"[A-Za-z0-9+/]{8,}={0,2}")


class Redactor:
    def __init__(self, secrets: list[str] | None = None) -> None:
        self._secrets: list[str] = []
        # For each secret, the base64 of its whole 3-octet groups at each of the 3 alignments
        # it can have in a decoded token: a token that decodes to text holding the secret
        # holds one of them (base64 encodes each group on its own), so a line holding none
        # needs no decoding. None: a secret too short (or odd) to be screened that way.
        self._cores: list[str] | None = []
        for secret in secrets or []:
            self.add(secret)

    def add(self, secret: str) -> None:
        if secret and len(secret) >= 4 and secret not in self._secrets:
            self._secrets.append(secret)
            self._secrets.sort(key=len, reverse=True)
            cores = _base64_cores(secret)
            if cores is None or self._cores is None:
                self._cores = None
            else:
                self._cores += cores

    def _decodes_to_secret(self, token: str) -> bool:
        if self._cores is not None and not any(core in token for core in self._cores):
            return False
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
            if secret in text:
                text = text.replace(secret, REDACTED)
        if self._cores is not None and not any(core in text for core in self._cores):
            return text
        return _B64_TOKEN.sub(
            lambda m: REDACTED if self._decodes_to_secret(m.group(0)) else m.group(0), text
        )


def _base64_cores(secret: str) -> list[str] | None:
    """What the base64 of any text holding ``secret`` must contain, at the secret's three
    possible alignments to base64's 3-octet groups; None when a screen cannot be made."""
    if "\ufffd" in secret:
        return None  # a decoded replacement character could stand for other octets
    data = secret.encode("utf-8")
    cores = []
    for skip in range(3):
        whole = (len(data) - skip) // 3 * 3
        if whole <= 0:
            return None
        cores.append(base64.b64encode(data[skip : skip + whole]).decode("ascii"))
    return cores


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
    omitted: int = 0  # lines not kept (over the caps)
    omitted_octets: int = 0
    _size: int = 0

    def _add(self, direction: str, text: str) -> None:
        text = self.redact(text)
        if len(self.entries) >= MAX_ENTRIES or self._size + len(text) > MAX_TEXT:
            self.omitted += 1
            self.omitted_octets += len(text)
            return
        self._size += len(text)
        self.entries.append(Entry(time.monotonic() - self.started, direction, text))

    def sent(self, data: bytes | str) -> None:
        raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogateescape")
        for line in raw.split(b"\r\n"):
            if line:
                self._add(">", _capped(line))

    def sent_summary(self, text: str) -> None:
        self._add(">", text)

    def received(self, code: int, lines: list[str], raw: bytes = b"") -> None:
        """A reply; with ``raw``, its lines as they came (a bare LF shown as ``\\n``)."""
        if raw:
            for line in raw.split(b"\n"):
                if line:
                    self._add("<", _capped(line[:-1] if line.endswith(b"\r") else line + b"\n"))
            return
        for i, text in enumerate(lines):
            sep = " " if i == len(lines) - 1 else "-"
            self._add("<", _capped(f"{code}{sep}{text}".encode("utf-8", "surrogateescape")))

    def event(self, text: str) -> None:
        self._add("*", text)

    def render(self, around: int | None = None, context: int = 6) -> str:
        """The transcript as text; with ``around``, only ``context`` entries either side."""
        entries = self.entries
        if around is not None:
            entries = entries[max(0, around - context) : around + context]
        text = "\n".join(e.render() for e in entries)
        if self.omitted:
            text += (
                f"\n[{self.omitted} more transcript lines ({self.omitted_octets} characters) "
                "not kept: the transcript of a scenario is capped]"
            )
        return text

    def __len__(self) -> int:
        return len(self.entries)


def _capped(line: bytes) -> str:
    """One line as evidence: control bytes and invalid UTF-8 escaped (so a stray CR or LF shows
    as ``\\r`` or ``\\n``), at most ``LINE_CAP`` octets with the total given."""
    return shown(line, LINE_CAP)
