"""Header rules of the contract, as pure functions over the raw header block.

- The From header: exactly one, and at most one Sender; both read strictly as RFC 5322
  (``addresses``); every mailbox and every address-like text a reader could be shown in them is
  checked, so a display name never stands for the address.
- The Anypost control headers (X-Anypost-Tags, X-Anypost-Tag, X-Anypost-Topic, X-Campaign):
  names case-insensitive, folded values unfolded, each at most once except X-Anypost-Tag, which
  cannot be combined with X-Anypost-Tags; read, then stripped before delivery.

Only top-level headers count: a part or an attached message is body (BRIEF §4).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from .addresses import (
    AddressSyntaxError,
    Mailbox,
    address_like_domains,
    lenient_domains,
    parse_mailboxes,
)

TAGS = "x-anypost-tags"
TAG = "x-anypost-tag"
TOPIC = "x-anypost-topic"
CAMPAIGN = "x-campaign"
CONTROL = frozenset({TAGS, TAG, TOPIC, CAMPAIGN})

_FIELD_NAME = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:")
# The usual From and Sender: ``local@domain`` or ``Display Name <local@domain>``, in letters,
# digits and a few atext marks, nothing to quote, decode or hide an address in. For exactly
# these, the strict reading, the address-like scan and the lenient reader each find the one
# address and nothing else (tests/unit/test_properties.py checks it on generated values), so
# ``sender_mailboxes`` skips the three parses, the largest CPU cost of a message's DATA.
_LOCAL = r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*"
_DOMAIN = r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_SIMPLE_MAILBOX = re.compile(
    rf"(?:[A-Za-z0-9_'-]+(?: [A-Za-z0-9_'-]+)* ?<(?P<angle>{_LOCAL}@{_DOMAIN})>)"
    rf"|(?P<bare>{_LOCAL}@{_DOMAIN})"
)


class HeaderError(ValueError):
    """The message breaks a header rule; ``kind`` says which reply applies."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind  # "from" (554 5.6.0), "control" (554 5.6.0)


@dataclass(frozen=True)
class Field:
    name: str  # lower-cased
    raw: bytes  # the field as sent, continuation lines and CRLFs included
    value: str  # unfolded, leading and trailing white space removed


@dataclass(frozen=True)
class HeaderBlock:
    fields: tuple[Field, ...]
    body_offset: int  # offset of the blank line ending the header block (or of the body)

    def named(self, name: str) -> list[Field]:
        return [f for f in self.fields if f.name == name]


@dataclass(frozen=True)
class ControlValues:
    tags: tuple[str, ...] = ()
    topic: str | None = None
    campaign: str | None = None


def parse_header_block(data: bytes | bytearray) -> HeaderBlock:
    """Split the top-level header fields off a message whose lines end in CRLF."""
    view = memoryview(data)
    fields: list[Field] = []
    pos = 0
    end = len(view)
    current_start = -1
    current_name = ""

    def close(stop: int) -> None:
        if current_start >= 0:
            raw = bytes(view[current_start:stop])
            colon = raw.index(b":")
            value = raw[colon + 1 :].decode("utf-8", "surrogateescape")
            unfolded = re.sub(r"\r\n(?=[ \t])", "", value).strip()
            fields.append(Field(current_name, raw, unfolded))

    while pos < end:
        nl = data.find(b"\n", pos)
        line_end = end if nl == -1 else nl + 1
        line = bytes(view[pos:line_end])
        if line in (b"\r\n", b"\n"):
            close(pos)
            return HeaderBlock(tuple(fields), pos)
        if line[:1] in (b" ", b"\t") and current_start >= 0:
            pos = line_end
            continue
        match = _FIELD_NAME.match(line)
        if match is None:
            # Not a header field: the header block has ended without a blank line.
            close(pos)
            return HeaderBlock(tuple(fields), pos)
        close(pos)
        current_start = pos
        current_name = match.group(1).decode("ascii").lower()
        pos = line_end
    close(end)
    return HeaderBlock(tuple(fields), end)


def simple_mailbox(value: str) -> Mailbox | None:
    """The mailbox of a field in the usual simple form (``_SIMPLE_MAILBOX``), else None."""
    match = _SIMPLE_MAILBOX.fullmatch(value)
    if match is None:
        return None
    local, _, domain = (match["angle"] or match["bare"]).rpartition("@")
    return Mailbox(local, domain)


def _field_mailboxes(header: Field, single: bool) -> list[Mailbox]:
    try:
        parsed = parse_mailboxes(header.value, single=single)
    except AddressSyntaxError as exc:
        raise HeaderError("from", f"{header.name}: {exc}") from None
    return list(parsed.mailboxes)


def _shown(header: Field) -> list[Mailbox]:
    """Every other address a reader may be shown in this field: address-like text in display
    names, comments and encoded-words, and what a lenient parser extracts."""
    domains = address_like_domains(header.value) + lenient_domains(header.value)
    return [Mailbox("", d) for d in dict.fromkeys(domains)]


def sender_mailboxes(block: HeaderBlock) -> list[Mailbox]:
    """Every address the recipient may be shown as the author, to be checked: the mailboxes of
    From and Sender read strictly (``addresses``), then every address-like text in them.

    Raises ``HeaderError`` when From or Sender is missing, repeated, or not strict RFC 5322.
    """
    froms = block.named("from")
    if len(froms) != 1:
        raise HeaderError("from", f"expected exactly one From header, found {len(froms)}")
    senders = block.named("sender")
    if len(senders) > 1:
        raise HeaderError("from", "several Sender headers")
    fields = [(froms[0], False), *((sender, True) for sender in senders)]
    simple = [simple_mailbox(field.value) for field, _ in fields]
    authors: list[Mailbox] = []
    for (field, single), found in zip(fields, simple, strict=True):
        authors += [found] if found is not None else _field_mailboxes(field, single)
    if not senders and len(authors) > 1:
        # RFC 5322 §3.6.2: several authors need a Sender.
        raise HeaderError("from", "a From with several mailboxes needs a Sender header")
    for (field, _), found in zip(fields, simple, strict=True):
        authors += [Mailbox("", found.domain)] if found is not None else _shown(field)
    return authors


def _nonempty(value: str, name: str) -> str:
    if not value.strip():
        raise HeaderError("control", f"{name} must not be empty")
    return value.strip()


def control_values(block: HeaderBlock) -> ControlValues:
    """Read the Anypost control headers, enforcing the contract's rules on each."""
    tags_fields = block.named(TAGS)
    tag_fields = block.named(TAG)
    for name in (TAGS, TOPIC, CAMPAIGN):
        if len(block.named(name)) > 1:
            raise HeaderError("control", f"{name} may appear at most once")
    if tags_fields and tag_fields:
        raise HeaderError("control", "X-Anypost-Tag cannot be combined with X-Anypost-Tags")
    tags: tuple[str, ...] = ()
    if tags_fields:
        try:
            parsed = json.loads(tags_fields[0].value)
        except ValueError:
            raise HeaderError("control", "X-Anypost-Tags is not JSON") from None
        if not isinstance(parsed, list) or not all(isinstance(t, str) for t in parsed):
            raise HeaderError("control", "X-Anypost-Tags must be a JSON array of strings")
        tags = tuple(parsed)
    elif tag_fields:
        tags = tuple(_nonempty(f.value, "X-Anypost-Tag") for f in tag_fields)
    topic = block.named(TOPIC)
    campaign = block.named(CAMPAIGN)
    return ControlValues(
        tags=tags,
        topic=_nonempty(topic[0].value, "X-Anypost-Topic") if topic else None,
        campaign=_nonempty(campaign[0].value, "X-Campaign") if campaign else None,
    )


def stripped_header_bytes(block: HeaderBlock) -> bytes:
    """The header block without the control headers, byte for byte otherwise."""
    return b"".join(f.raw for f in block.fields if f.name not in CONTROL)
