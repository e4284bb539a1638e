"""A strict RFC 5322 reader of the From and Sender fields, and every address a reader is shown.

Why not the ``email`` package: its parser is lenient by design. Given
``From: probe@acme.test <ceo@other.test>`` it keeps one address and files the rest as a defect,
so the address checked is not the address a mail client shows. This module reads the field with
the grammar of RFC 5322 §3.4 (``mailbox-list`` for From, ``mailbox`` for Sender, §3.6.2) and
refuses anything that grammar does not derive, so the mailboxes checked are exactly the
mailboxes of the field that is delivered.

What is refused as malformed (``AddressSyntaxError``), and why:
- anything outside printable US-ASCII and white space: header fields are ASCII without
  SMTPUTF8 (RFC 6532), which the server does not advertise;
- the obsolete forms of RFC 5322 §4.4 (route ``<@a,@b:x@y>``, ``a . b@c`` local parts,
  domains with comments between labels, empty list members): "MUST NOT" be generated, and
  readers disagree on them; the one obsolete form kept is a period in a display name
  between two words (``John Q. Public``, §4.1 obs-phrase), which mail programs still write;
- group syntax (``Friends: a@x, b@y;``): From and Sender hold mailboxes (§3.6.2; RFC 6854's
  groups in From are for messages nobody replies to, which a submission service never sends);
- text after an angle-addr, two angle-addrs, an unquoted ``@``, ``;`` or ``<`` in a display name.

Beyond the mailboxes, ``shown_addresses`` finds every address-like text a reader could display:
inside quoted display names, comments and RFC 2047 encoded-words (decoded as a client shows
them, adjacent words joined, undecodable ones as clients guess; NFKC-normalized so a
fullwidth at sign counts), and whatever the ``email`` package's lenient reader extracts. Each of
those domains is checked too, so ``"ceo@other.test" <probe@acme.test>`` is refused although its
mailbox is permitted.
"""

from __future__ import annotations

import base64
import re
import unicodedata
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.quoprimime import header_decode
from email.utils import getaddresses

# RFC 5322 §3.2.3 atext.
_ATEXT = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
)
_WSP = " \t"
_PRINTABLE = re.compile(r"^[\x20-\x7e\t]*$")
# RFC 2047 §2 encoded-word, as lenient readers find it (Thunderbird's pattern): white space
# allowed in the charset and the text.
_ENCODED_WORD = re.compile(r"=\?([^?]*)\?([bBqQ])\?([^?]*)\?=")
# RFC 2047 §6.2: white space between two encoded-words is not shown.
_BETWEEN_WORDS = re.compile(r"(?<=\?=)\s+(?==\?)")
# Charset labels that mail software writes and Python does not know, or knows as a narrower
# set than the software means (WHATWG's encoding labels): gb2312 mail is GBK, ks_c_5601-1987
# (Outlook's Korean) is windows-949, Shift_JIS is windows-31J.
_CHARSETS = {
    "windows-874": "cp874",
    "iso-8859-8-i": "iso8859_8",
    "windows-31j": "cp932",
    "x-sjis": "cp932",
    "shift_jis": "cp932",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "x-windows-949": "cp949",
    "gb2312": "gbk",
    "x-gbk": "gbk",
    "x-mac-roman": "mac_roman",
}
# Address-like text a person would read as an address: Unicode word characters, as a decoded
# display name may hold any script; the domain needs a dot so "Bob@Home" is a name.
_ADDRESS_LIKE = re.compile(r"([\w.!#$%&'*+/=?^`{|}~-]+)@([\w-]+(?:\.[\w-]+)+)")
_MAX_NESTING = 50
_ROUTE = re.compile(r"[ \t]*@")


class AddressSyntaxError(ValueError):
    """The field is not a strict RFC 5322 mailbox list; the message says where."""


@dataclass(frozen=True)
class Mailbox:
    local: str  # as written: a dot-atom, or a quoted-string with its quotes
    domain: str  # as written: a dot-atom or a domain-literal

    @property
    def username(self) -> str:
        return self.local

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"


@dataclass(frozen=True)
class ParsedField:
    mailboxes: tuple[Mailbox, ...]
    shown: tuple[str, ...]  # display names and comments as a reader sees them (decoded)


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.shown: list[str] = []

    def fail(self, what: str) -> AddressSyntaxError:
        near = self.text[self.pos : self.pos + 20]
        return AddressSyntaxError(f"{what} at column {self.pos + 1} (near {near!r})")

    def peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def cfws(self) -> None:
        """Skip [CFWS] (RFC 5322 §3.2.2), keeping comment texts as shown text."""
        while not self.at_end():
            c = self.text[self.pos]
            if c in _WSP:
                self.pos += 1
            elif c == "(":
                self.shown.append(self.comment())
            else:
                return

    def comment(self) -> str:
        start = self.pos
        depth = 0
        out: list[str] = []
        while not self.at_end():
            c = self.text[self.pos]
            if c == "\\":
                if self.pos + 1 >= len(self.text):
                    raise self.fail("a quoted-pair without its character")
                out.append(self.text[self.pos + 1])
                self.pos += 2
                continue
            self.pos += 1
            if c == "(":
                depth += 1
                if depth > _MAX_NESTING:
                    raise self.fail("comments nested too deeply")
                if depth > 1:
                    out.append(c)
            elif c == ")":
                depth -= 1
                if depth == 0:
                    return _decode_words("".join(out))
                out.append(c)
            else:
                out.append(c)
        self.pos = start
        raise self.fail("an unclosed comment")

    def quoted_string(self) -> str:
        """A quoted-string (RFC 5322 §3.2.4); returns its content, quoted-pairs resolved."""
        assert self.peek() == '"'
        start = self.pos
        self.pos += 1
        out: list[str] = []
        while not self.at_end():
            c = self.text[self.pos]
            if c == "\\":
                if self.pos + 1 >= len(self.text):
                    break
                out.append(self.text[self.pos + 1])
                self.pos += 2
            elif c == '"':
                self.pos += 1
                return "".join(out)
            else:
                out.append(c)
                self.pos += 1
        self.pos = start
        raise self.fail("an unclosed quoted-string")

    def atom_text(self) -> str:
        start = self.pos
        while not self.at_end() and self.text[self.pos] in _ATEXT:
            self.pos += 1
        return self.text[start : self.pos]

    def dot_atom_text(self, what: str) -> str:
        start = self.pos
        if not self.atom_text():
            raise self.fail(f"expected {what}")
        while self.peek() == ".":
            self.pos += 1
            if not self.atom_text():
                raise self.fail(f"an empty label in {what}")
        return self.text[start : self.pos]

    def domain_literal(self) -> str:
        start = self.pos
        self.pos += 1
        while not self.at_end() and self.text[self.pos] not in "[]\\":
            self.pos += 1
        if self.peek() != "]":
            self.pos = start
            raise self.fail("an unclosed or malformed domain-literal")
        self.pos += 1
        return self.text[start : self.pos]

    def addr_spec(self) -> Mailbox:
        """addr-spec (RFC 5322 §3.4.1), without the obsolete local-part and domain forms."""
        self.cfws()
        if self.peek() == '"':
            start = self.pos
            self.quoted_string()
            local = self.text[start : self.pos]
        else:
            local = self.dot_atom_text("a local part")
        self.cfws()
        if self.peek() != "@":
            raise self.fail("expected '@' after the local part")
        self.pos += 1
        self.cfws()
        domain = self.domain_literal() if self.peek() == "[" else self.dot_atom_text("a domain")
        self.cfws()
        return Mailbox(local, domain)

    def angle_addr(self) -> Mailbox:
        assert self.peek() == "<"
        self.pos += 1
        if _ROUTE.match(self.text, self.pos):
            raise self.fail("route syntax (obsolete, RFC 5322 §4.4)")
        mailbox = self.addr_spec()
        if self.peek() != ">":
            raise self.fail("expected '>' to close the angle-addr")
        self.pos += 1
        self.cfws()
        return mailbox

    def phrase(self) -> str:
        """display-name: words, and periods after the first (obs-phrase, RFC 5322 §4.1)."""
        words: list[str] = []
        while True:
            self.cfws()
            c = self.peek()
            if c == '"':
                words.append(self.quoted_string())
            elif c and c in _ATEXT:
                words.append(_decode_words(self.atom_text()))
            elif c == "." and words:
                # Only between two words ("John Q. Public"): a period ending the display
                # name is read differently by different parsers (the email package fails).
                self.pos += 1
                self.cfws()
                nxt = self.peek()
                if not (nxt == '"' or (nxt and nxt in _ATEXT)):
                    raise self.fail("a period that does not stand between two words")
                words.append(".")
            else:
                break
        return " ".join(words)

    def mailbox(self) -> Mailbox:
        start, shown = self.pos, len(self.shown)
        try:
            mailbox = self.addr_spec()
        except AddressSyntaxError:
            pass
        else:
            if self.at_end() or self.peek() == ",":
                return mailbox
        self.pos = start
        del self.shown[shown:]
        name = self.phrase()
        if self.peek() != "<":
            if self.peek() == ":":
                raise self.fail("group syntax (From and Sender hold mailboxes, RFC 5322 §3.6.2)")
            raise self.fail("expected a mailbox: an address, or a display name and <address>")
        if name:
            self.shown.append(name)
        return self.angle_addr()

    def mailbox_list(self) -> tuple[Mailbox, ...]:
        boxes = [self.mailbox()]
        while self.peek() == ",":
            self.pos += 1
            boxes.append(self.mailbox())
        if not self.at_end():
            raise self.fail("unexpected text after the mailbox")
        return tuple(boxes)


def _decode_words(text: str) -> str:
    """Decode RFC 2047 encoded-words as a mail client shows them.

    The email package's decoder first: adjacent words joined (§6.2), a character split
    between two words whole. Where it fails (an unknown charset, bytes the charset has no
    character for, base64 that is not whole), each word is decoded on its own, the way
    clients guess, so that an address hidden in it is still seen:
    ``=?utf-8?q?ceo=40other.test=FF?=`` shows ceo@other.test with a replacement character.
    """
    if "=?" not in text:
        return text
    whole = _strict_decode(text)
    return whole if whole is not None else _decode_each(text)


def _strict_decode(text: str) -> str | None:
    """The email package's reading of the encoded-words in ``text``; None where it fails."""
    try:
        return str(make_header(decode_header(text)))
    except Exception:  # hostile input: assorted errors from the decoder
        return None


def _decode_each(text: str) -> str:
    """Every encoded-word decoded in place, adjacent ones joined: what a client shows that
    also decodes a word inside an atom (``ceo=?utf-8?q?=40?=other.test``)."""
    return _ENCODED_WORD.sub(_decode_word, _BETWEEN_WORDS.sub("", text))


def _decode_word(word: re.Match[str]) -> str:
    decoded = _strict_decode(word.group(0))
    return decoded if decoded is not None else _guess_word(word)


def _guess_word(word: re.Match[str]) -> str:
    """One encoded-word as a lenient client decodes it: an RFC 2231 language ignored (§5),
    base64 without its incomplete end, a replacement character for each byte the charset has
    no character for, Latin-1 for a charset nobody knows."""
    label, encoding, text = word.groups()
    label = label.split("*", 1)[0].strip().lower()
    if encoding in "qQ":
        raw = header_decode(text).encode("latin-1", "replace")
    else:
        letters = re.sub(r"[^A-Za-z0-9+/]", "", text)
        if len(letters) % 4 == 1:
            letters = letters[:-1]
        raw = base64.b64decode(letters + "=" * (-len(letters) % 4))
    try:
        return raw.decode(_CHARSETS.get(label, label), "replace")
    except (LookupError, ValueError):  # unknown, not a text encoding, or no "replace" (idna)
        return raw.decode("latin-1")


def _unfold(value: str) -> str:
    return re.sub(r"\r\n(?=[ \t])", "", value)


def parse_mailboxes(value: str, single: bool = False) -> ParsedField:
    """Read a From (``mailbox-list``) or Sender (``mailbox``, ``single``) field body strictly."""
    text = _unfold(value)
    if not _PRINTABLE.match(text):
        raise AddressSyntaxError(
            "control or non-ASCII characters (header fields are ASCII without SMTPUTF8)"
        )
    reader = _Reader(text.strip(_WSP))
    if reader.at_end():
        raise AddressSyntaxError("no mailbox")
    boxes = reader.mailbox_list()
    if single and len(boxes) != 1:
        raise AddressSyntaxError("exactly one mailbox is allowed here")
    return ParsedField(boxes, tuple(reader.shown))


def address_like_domains(text: str) -> list[str]:
    """The domains of every address-like text in ``text``, as a person might read them."""
    variants = {text, text.replace("\\", "")}
    if "=?" in text:
        each = _decode_each(text)
        whole = _strict_decode(text)
        for decoded in {each, each if whole is None else whole}:
            variants |= {decoded, decoded.replace("\\", "")}
    domains: list[str] = []
    for variant in variants:
        normal = unicodedata.normalize("NFKC", variant)
        # Format characters (zero-width space, soft hyphen...) are not shown: ceo<ZWSP>@x.test
        # reads as ceo@x.test.
        normal = "".join(c for c in normal if unicodedata.category(c) != "Cf")
        domains += [m.group(2) for m in _ADDRESS_LIKE.finditer(normal)]
    return domains


def lenient_domains(value: str) -> list[str]:
    """Domains the ``email`` package's lenient reader extracts (what many tools show)."""
    domains: list[str] = []
    try:
        pairs = getaddresses([_unfold(value)])
    except Exception:  # hostile input: the strict reader has the final word anyway
        return domains
    for _, address in pairs:
        _, at, domain = address.rpartition("@")
        if at:
            domains.append(domain)
    return domains
