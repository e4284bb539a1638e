"""Variants for the From-spoofing family: the readers of From and Sender that real servers have
shipped, each wrong in one way. The refusing scenarios fail against a reader that shows less
than a mail client shows; the accepting ones against a reader that refuses too much.

Merged into ``VARIANTS`` and ``CATALOGUE_PROOF`` by ``variants.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import policy
from typing import Any

from reference_server.handler import AnypostHandler
from reference_server.headers import Field, HeaderBlock, HeaderError

from .variants import Variant


@dataclass(frozen=True)
class _Author:
    domain: str


def _fields(block: HeaderBlock) -> tuple[list[Field], list[Field]]:
    return block.named("from"), block.named("sender")


class LenientEmailParser(AnypostHandler):
    """The email package's reader, defects ignored: ``<a@V> x@U`` is a@V alone (the reference
    server's own reader before the strict one, commit 741815a)."""

    def authors(self, block: HeaderBlock) -> list[Any]:
        froms, senders = _fields(block)
        if len(froms) != 1 or len(senders) > 1:
            raise HeaderError("from", "expected one From and at most one Sender")
        found: list[Any] = []
        registry: Any = policy.default.header_factory
        for field in (*froms, *senders):
            try:
                parsed = registry[field.name](field.name, field.value)
            except Exception as exc:  # the email package raises assorted errors
                raise HeaderError("from", str(exc)) from None
            addresses = list(getattr(parsed, "addresses", ()))
            if not addresses or any(not a.domain for a in addresses):
                raise HeaderError("from", "no mailbox")
            found += addresses
        if len(found) > 1 and not senders:
            raise HeaderError("from", "several authors need a Sender")
        return found


class FirstAtDomain(AnypostHandler):
    """Takes the text after the first ``@`` of the field's first line as the domain."""

    def authors(self, block: HeaderBlock) -> list[Any]:
        froms, senders = _fields(block)
        if len(froms) != 1:
            raise HeaderError("from", "expected one From")
        found = []
        for field in (*froms, *senders):
            first_line = field.raw.split(b"\r\n")[0].decode("utf-8", "replace")
            match = re.search(r"@([^\s:>;,()@]+)", first_line.partition(":")[2])
            if match is None:
                raise HeaderError("from", "no address")
            found.append(_Author(match.group(1)))
        return found


class FirstLineOnly(LenientEmailParser):
    """Reads From and Sender from their first line: a folded field loses its continuation."""

    def authors(self, block: HeaderBlock) -> list[Any]:
        cut = []
        for field in block.fields:
            if field.name in ("from", "sender"):
                first = field.raw.split(b"\r\n")[0].decode("utf-8", "replace")
                field = Field(field.name, field.raw, first.partition(":")[2].strip())
            cut.append(field)
        return super().authors(HeaderBlock(tuple(cut), block.body_offset))


class CaseSensitiveHeaderNames(AnypostHandler):
    """Looks up "From" and "Sender" spelt exactly so: a FROM or SENDER field goes unseen."""

    def authors(self, block: HeaderBlock) -> list[Any]:
        exact = tuple(
            f
            for f in block.fields
            if f.name not in ("from", "sender") or f.raw.startswith((b"From", b"Sender"))
        )
        return super().authors(HeaderBlock(exact, block.body_offset))


class GroupFromUsesEnvelope(AnypostHandler):
    """Takes a group in From as "no author mailbox" (RFC 6854) and lets the envelope stand."""

    def authors(self, block: HeaderBlock) -> list[Any]:
        froms, _ = _fields(block)
        if len(froms) == 1 and re.match(r'^[^"@<]*:', froms[0].value):
            return []
        return super().authors(block)


class SplitsOnSpecials(AnypostHandler):
    """Splits From on , and ; without regard to quotes, and wants an address in each piece."""

    def authors(self, block: HeaderBlock) -> list[Any]:
        froms, _ = _fields(block)
        for field in froms:
            if any("@" not in piece for piece in re.split(r"[,;]", field.value)):
                raise HeaderError("from", "a list member without an address")
        return super().authors(block)


class RefusesEncodedWords(AnypostHandler):
    """Refuses any encoded-word in From, to be safe from decoded addresses."""

    def authors(self, block: HeaderBlock) -> list[Any]:
        if any("=?" in f.value for f in block.named("from")):
            raise HeaderError("from", "encoded-word in From")
        return super().authors(block)


class RefusesComments(AnypostHandler):
    """Refuses any comment in From, to be safe from addresses shown in comments."""

    def authors(self, block: HeaderBlock) -> list[Any]:
        if any("(" in f.value for f in block.named("from")):
            raise HeaderError("from", "comment in From")
        return super().authors(block)


class SingleAuthorOnly(AnypostHandler):
    """Allows one From mailbox only, Sender or not."""

    def authors(self, block: HeaderBlock) -> list[Any]:
        found = super().authors(block)
        if any("," in f.value for f in block.named("from")):
            raise HeaderError("from", "one author only")
        return found


class NoObsPhrase(AnypostHandler):
    """A strict reader without RFC 5322 §4.1's obs-phrase: a period in a display name fails."""

    def authors(self, block: HeaderBlock) -> list[Any]:
        for field in block.named("from"):
            name = field.value.partition("<")[0]
            if "<" in field.value and "." in name and '"' not in name:
                raise HeaderError("from", "period in an unquoted display name")
        return super().authors(block)


class SenderMustMatchFrom(AnypostHandler):
    """Wants the Sender to be one of the From mailboxes."""

    def authors(self, block: HeaderBlock) -> list[Any]:
        found = super().authors(block)
        froms, senders = _fields(block)
        for sender in senders:
            address = re.search(r"[^\s<]+@[^\s>]+", sender.value)
            if address is None or address.group(0) not in froms[0].value:
                raise HeaderError("from", "Sender is not a From mailbox")
        return found


FROM_VARIANTS: dict[str, Variant] = {
    "lenient-email-parser": Variant(handler=LenientEmailParser),
    "first-at-domain": Variant(handler=FirstAtDomain),
    "first-line-only": Variant(handler=FirstLineOnly),
    "case-sensitive-header-names": Variant(handler=CaseSensitiveHeaderNames),
    "group-from-uses-envelope": Variant(handler=GroupFromUsesEnvelope),
    "splits-on-specials": Variant(handler=SplitsOnSpecials),
    "refuses-encoded-words": Variant(handler=RefusesEncodedWords),
    "refuses-comments": Variant(handler=RefusesComments),
    "single-author-only": Variant(handler=SingleAuthorOnly),
    "no-obs-phrase": Variant(handler=NoObsPhrase),
    "sender-must-match-from": Variant(handler=SenderMustMatchFrom),
}

FROM_PROOF: dict[str, str] = {
    "from/text-after-angle-addr-refused": "lenient-email-parser",
    "from/two-angle-addrs-refused": "lenient-email-parser",
    "from/unquoted-address-display-name-refused": "lenient-email-parser",
    "from/unquoted-semicolon-list-refused": "lenient-email-parser",
    "from/quoted-specials-display-name-accepted": "splits-on-specials",
    "from/encoded-word-local-part-refused": "lenient-email-parser",
    "from/encoded-word-display-name-address-refused": "lenient-email-parser",
    "from/undecodable-encoded-word-refused": "lenient-email-parser",
    "from/split-encoded-words-address-refused": "lenient-email-parser",
    "from/encoded-word-display-name-accepted": "refuses-encoded-words",
    "from/group-syntax-refused": "group-from-uses-envelope",
    "from/comment-address-refused": "lenient-email-parser",
    "from/comment-accepted": "refuses-comments",
    "from/route-syntax-refused": "first-at-domain",
    "from/folded-second-mailbox-refused": "first-at-domain",
    "from/folded-header-accepted": "first-line-only",
    "from/repeated-header-other-case-refused": "case-sensitive-header-names",
    "from/two-mailboxes-with-sender-accepted": "single-author-only",
    "from/dotted-display-name-accepted": "no-obs-phrase",
    "sender/text-after-angle-addr-refused": "lenient-email-parser",
    "sender/unquoted-address-display-name-refused": "lenient-email-parser",
    "sender/comment-address-refused": "lenient-email-parser",
    "sender/repeated-header-other-case-refused": "case-sensitive-header-names",
    "sender/well-formed-accepted": "sender-must-match-from",
    "from/generated-from-spellings": "lenient-email-parser",
    "sender/generated-sender-spellings": "lenient-email-parser",
}
