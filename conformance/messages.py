"""Build the message a ``data`` step sends, from its declarative description.

The ``email`` package composes it (headers, text, html, attachments); repeated and folded
headers and exact sizes are applied to the bytes, since the package rightly refuses to write
some of the malformed messages a conformance probe needs.
"""

from __future__ import annotations

import functools
import re
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, make_msgid
from typing import Any

from .errors import ScenarioError

_ESCAPES = {"\\r": "\r", "\\n": "\n", "\\t": "\t", "\\0": "\x00", "\\\\": "\\"}
_ESCAPE = re.compile(r"\\(?:x[0-9a-fA-F]{2}|[rnt0\\])")
_FILLER_LINE = 76


def unescape(text: str) -> bytes:
    r"""Turn the escapes a scenario may write (\r \n \t \0 \xNN \\) into bytes."""

    def one(match: re.Match[str]) -> str:
        token = match.group(0)
        return chr(int(token[2:], 16)) if token.startswith("\\x") else _ESCAPES[token]

    return _ESCAPE.sub(one, text).encode("utf-8", "surrogateescape")


def size_value(spec: int | str, limit: int | None) -> int:
    """``limit``, ``limit+N``, ``limit-N`` or an integer, in octets."""
    if isinstance(spec, int):
        return spec
    if limit is None:
        raise LookupError("limits.message_size")
    match = re.fullmatch(r"limit(?:([+-])(\d+))?", spec)
    if match is None:
        raise ScenarioError(f"size {spec!r} is not limit, limit+N, limit-N or a number")
    if match.group(1) is None:
        return limit
    delta = int(match.group(2))
    return limit + delta if match.group(1) == "+" else limit - delta


def _fold(value: str) -> str:
    """Fold at every space so the value spans several lines (RFC 5322 §2.2.3)."""
    return value.replace(" ", "\r\n ") if " " in value else value


def build(spec: dict[str, Any], size_limit: int | None) -> tuple[bytes, bool]:
    """The message bytes (CRLF line ends) and whether to send them verbatim."""
    if "raw_body" in spec:
        return unescape(spec["raw_body"]), True
    if "raw" in spec:
        return _crlf(unescape(spec["raw"])), False
    text = spec.get("text", "Conformance probe.\n")
    attachments = spec.get("attachments", [])
    if spec.get("html") is None and not attachments:
        body = _text_body(text)
    else:
        body = _mime_body(text, spec.get("html"), attachments, size_limit)
    # Headers are written by hand so that repeated, folded and malformed ones go out as given.
    headers: list[str] = []
    if spec.get("from_header", True) and spec.get("from") is not None:
        headers.append(f"From: {spec['from']}")
    if "to" in spec:
        headers.append(f"To: {spec['to']}")
    headers.append(f"Subject: {spec.get('subject', 'anypost conformance probe')}")
    headers.append(f"Date: {spec.get('date') or formatdate(localtime=False)}")
    headers.append(f"Message-ID: {spec.get('message_id') or make_msgid(domain='conformance.test')}")
    for header in spec.get("headers", []):
        value = _fold(header["value"]) if header.get("fold") else header["value"]
        headers.append(f"{header['name']}: {value}")
    data = ("\r\n".join(headers) + "\r\n").encode("utf-8") + body
    if "size" in spec:
        data = pad_to(data, size_value(spec["size"], size_limit))
    return data, False


@functools.lru_cache(maxsize=64)
def _text_body(text: str) -> bytes:
    """A single-part text body with its MIME headers. The same text gives the same bytes (no
    boundary, nothing random), so it is composed once per run, not once per message: the
    ``email`` package takes about a quarter of a millisecond for even a one-line body."""
    message = EmailMessage(policy=SMTP)
    message.set_content(text)
    return message.as_bytes()


def _mime_body(
    text: str, html: str | None, attachments: list[dict[str, Any]], size_limit: int | None
) -> bytes:
    """A multipart body with its MIME headers (a fresh boundary each time)."""
    message = EmailMessage(policy=SMTP)
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    for attachment in attachments:
        if "text" in attachment:
            content = attachment["text"].encode()
        else:
            size = size_value(attachment.get("size", 1024), size_limit)
            content = (bytes(range(256)) * (size // 256 + 1))[:size]
        maintype, _, subtype = attachment.get("content_type", "application/octet-stream").partition(
            "/"
        )
        message.add_attachment(
            content,
            maintype=maintype,
            subtype=subtype or "octet-stream",
            filename=attachment["filename"],
        )
    return message.as_bytes()


def _crlf(data: bytes) -> bytes:
    data = re.sub(rb"\r?\n", b"\r\n", data)
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def pad_to(message: bytes, size: int) -> bytes:
    """Grow a CRLF message to exactly ``size`` octets as RFC 1870 §5 counts them.

    Filler lines are letters only, so no dot-stuffing changes the count.
    """
    missing = size - len(message)
    if missing < 0:
        raise ScenarioError(
            f"the message is {len(message)} octets before padding, over size={size}"
        )
    if missing == 0:
        return message
    if missing < 3:
        # Too few octets for a line of its own: lengthen the last line instead.
        return message[:-2] + b"x" * missing + b"\r\n"
    filler = bytearray()
    remaining = missing
    while remaining > 0:
        line = min(_FILLER_LINE, remaining - 2)
        if remaining - (line + 2) in (1, 2):
            line -= 3  # leave room for a last line of at least one letter
        filler += b"y" * line + b"\r\n"
        remaining -= line + 2
    assert len(filler) == missing
    return message + bytes(filler)
