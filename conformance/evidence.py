"""Bytes a server sent, made safe to show: escaped and capped.

A hostile or broken server decides what it sends; every format the harness writes (console,
JUnit, JSON, Markdown, HTML, Allure) shows it through ``shown`` so that no control byte reaches a
terminal or a parser, no invalid UTF-8 breaks a report, and no reply bloats one.
"""

from __future__ import annotations

import re

LINE_CAP = 1024  # characters of one line shown; the rest is counted, not shown
BINARY_HEAD = 32  # octets of a binary line shown, in hex (enough to tell TLS or a file type)
# C0 controls but TAB, DEL, and C1 controls (a terminal reads some of these as escapes).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def _escape_char(match: re.Match[str]) -> str:
    char = match.group(0)
    return {"\r": "\\r", "\n": "\\n"}.get(char, f"\\x{ord(char):02x}")


def escape(text: str) -> str:
    """Control characters as ``\\r``, ``\\n``, ``\\xNN``; everything else as it is."""
    return _CONTROL.sub(_escape_char, text)


def shown(data: bytes | str, cap: int = LINE_CAP) -> str:
    """``data`` as printable text: invalid UTF-8 and control bytes escaped, at most ``cap``
    characters of it (escapes count), and the total in octets when some are left out."""
    if len(data) <= cap and data.isascii():
        # The common case, printable ASCII within the cap, is shown as it is.
        text = data if isinstance(data, str) else data.decode("ascii")
        if text.isprintable():
            return text
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    head = raw[:cap]
    text = escape(head.decode("utf-8", "backslashreplace"))
    if len(head) >= 16 and len(text) > 2 * len(head):
        # Mostly not text (binary, or TLS spoken where SMTP was due): its first octets in hex
        # say more than a wall of escapes.
        count = min(BINARY_HEAD, max(8, cap // 4))
        more = "..." if len(raw) > count else ""
        return f"[binary, {len(raw)} octets: {raw[:count].hex(' ')}{more}]"
    if len(raw) > cap or len(text) > cap:
        text = text[:cap] + f"... [{len(raw)} octets in all]"
    return text
