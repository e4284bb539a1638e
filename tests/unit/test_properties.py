"""Properties over generated input (hypothesis)."""

from __future__ import annotations

import base64
import contextlib
from email._header_value_parser import get_angle_addr

from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.messages import pad_to
from conformance.transcript import Redactor
from reference_server.addresses import (
    Mailbox,
    address_like_domains,
    lenient_domains,
    parse_mailboxes,
)
from reference_server.headers import (
    CONTROL,
    HeaderError,
    parse_header_block,
    sender_mailboxes,
    simple_mailbox,
    stripped_header_bytes,
)
from reference_server.session import simple_path

secrets_ = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=8, max_size=40).map(
    lambda s: "ap_" + s
)
line = st.text(alphabet="abcdefXYZ 0123456789:<>@.", max_size=60)


@given(body=st.lists(line, max_size=5), extra=st.integers(min_value=0, max_value=3000))
def test_pad_to_is_exact_and_never_starts_a_line_with_a_dot(body: list[str], extra: int) -> None:
    base = ("From: a@acme.test\r\n\r\n" + "".join(f"{b}\r\n" for b in body)).encode()
    padded = pad_to(base, len(base) + extra)
    assert len(padded) == len(base) + extra and padded.startswith(base[:-2])
    assert padded.endswith(b"\r\n")
    assert all(len(x) <= 998 for x in padded.split(b"\r\n"))


@given(secret=secrets_, before=line, after=line, authzid=st.sampled_from(["", "anypost"]))
def test_redactor_never_lets_a_secret_through(
    secret: str, before: str, after: str, authzid: str
) -> None:
    redact = Redactor([secret])
    plain = base64.b64encode(f"{authzid}\0anypost\0{secret}".encode()).decode()
    login = base64.b64encode(secret.encode()).decode()
    for text in (f"{before}{secret}{after}", f"AUTH PLAIN {plain}", f"{before} {login} {after}"):
        out = redact(text)
        assert secret not in out and plain not in out and login not in out


@given(secret=secrets_, head=st.binary(max_size=8), tail=st.binary(max_size=8))
def test_redactor_finds_a_secret_at_any_offset_of_a_base64_token(
    secret: str, head: bytes, tail: bytes
) -> None:
    # The redactor screens lines by the base64 of the secret at each of its three alignments
    # before decoding anything: a secret at any offset, with any octets around it, is caught.
    token = base64.b64encode(head + secret.encode() + tail).decode()
    for text in (f"AUTH PLAIN {token}", token, f"{token.rstrip('=')} x"):
        out = Redactor(["another_key_value", secret])(text)
        assert token.rstrip("=") not in out and "<redacted>" in out


header_name = st.sampled_from(
    ["Subject", "X-Anypost-Tag", "x-campaign", "X-Other", "X-ANYPOST-TOPIC"]
)


@settings(max_examples=200)
@given(fields=st.lists(st.tuples(header_name, line, st.booleans()), max_size=8), body=line)
def test_stripping_removes_exactly_the_control_headers(
    fields: list[tuple[str, str, bool]], body: str
) -> None:
    raw = [f"{n}: {v}\r\n" + (" folded\r\n" if fold else "") for n, v, fold in fields]
    message = ("From: a@acme.test\r\n" + "".join(raw) + "\r\n" + body + "\r\n").encode()
    block = parse_header_block(message)
    kept = stripped_header_bytes(block)
    expected = "From: a@acme.test\r\n" + "".join(
        r for r, (n, _, _) in zip(raw, fields, strict=True) if n.lower() not in CONTROL
    )
    assert kept == expected.encode()
    assert message[block.body_offset :] == ("\r\n" + body + "\r\n").encode()


# --- the simple-From shortcut of sender_mailboxes ---------------------------------------------
# Values in the simple form's shape, each part either plain or with one character that could
# change the reading (an at sign, a quote, a comment, a dot, an encoded-word mark...) put in:
# so the shortcut is tried on the usual forms and on the nearest misses around them.
_specials = st.sampled_from(list('@<>"(),;:\\=?. \t[]'))


def _part(alphabet: str, min_size: int) -> st.SearchStrategy[str]:
    plain = st.text(alphabet, min_size=min_size, max_size=8)
    near = st.tuples(plain, _specials, plain).map("".join)
    return st.one_of(plain, near)


_shaped = st.builds(
    lambda name, local, domain, angle: (
        f"{name}<{local}@{domain}>" if angle else f"{local}@{domain}"
    ),
    _part("abXY09_' -", 0),
    _part("abXY09_+-.", 1),
    st.one_of(
        st.sampled_from(["acme.test", "other.test", "x-y.test", "localhost", "a.b.c"]),
        _part("abxy09-.", 1),
    ),
    st.booleans(),
)


@settings(max_examples=500)
@given(value=_shaped)
def test_simple_from_shortcut_finds_what_the_full_reading_finds(value: str) -> None:
    """Whenever ``simple_mailbox`` takes a field, the full reading agrees exactly: the strict
    parse gives that one mailbox, and every address a reader may be shown has its domain."""
    simple = simple_mailbox(value)
    if simple is None:
        return
    assert parse_mailboxes(value).mailboxes == (simple,)
    shown = list(dict.fromkeys(address_like_domains(value) + lenient_domains(value)))
    assert shown == [simple.domain]


def test_simple_from_shortcut_takes_the_usual_forms_only() -> None:
    assert simple_mailbox("Bench <bench@acme.test>") == Mailbox("bench", "acme.test")
    assert simple_mailbox("first.last+tag@acme.test") == Mailbox("first.last+tag", "acme.test")
    for spoof in (
        "probe@acme.test <ceo@other.test>",
        '"ceo@other.test" <probe@acme.test>',
        "probe@acme.test, ceo@other.test",
        "Probe (ceo@other.test) <probe@acme.test>",
        "=?utf-8?q?ceo=40other.test?= <probe@acme.test>",
    ):
        assert simple_mailbox(spoof) is None, spoof


# --- the simple-path shortcut of MAIL and RCPT ------------------------------------------------
# Arguments in the usual shape, <local@domain> and maybe parameters, with the nearest misses
# put in anywhere: special characters, other white space, comments, non-ASCII letters.
_path_specials = st.sampled_from(
    [
        *'@<>"(),;:\\[]. \t\x0b\r\n',
        *["é", "\xa0", "..", "()", "=?", "?="],
        # encoded-words, which the email package decodes where an atom starts
        *["=?utf-8?q?abc?=", "=?utf-8?q?a=40b?=", "=?us-ascii?b?YQ==?=", "=?x?q?a?="],
    ]
)


def _path_part(alphabet: str, min_size: int) -> st.SearchStrategy[str]:
    plain = st.text(alphabet, min_size=min_size, max_size=6)
    around = st.text(alphabet, max_size=6)  # may be empty: a special may start or end the part
    return st.one_of(plain, st.tuples(around, _path_specials, around).map("".join))


_path_args = st.builds(
    lambda local, domain, gap, rest: f"<{local}@{domain}>{gap}{rest}",
    _path_part("abXY09!#$%&'*+/=?^_`{|}~-.", 1),
    _path_part("abxy09-.!", 1),
    st.sampled_from(["", " ", "  ", "\t", " \t", "\x0b", " (c) ", "\xa0", " \x0b"]),
    st.sampled_from(["", "SIZE=1100", "AUTH=<>", "BODY=8BITMIME SIZE=9", "(c)", " X", ">"]),
)


@settings(max_examples=800)
@given(arg=_path_args)
def test_simple_path_shortcut_reads_what_the_email_package_reads(arg: str) -> None:
    """Whenever ``simple_path`` takes a MAIL or RCPT argument, the email package's reading,
    which aiosmtpd uses, gives the same address and the same rest."""
    simple = simple_path(arg)
    if simple is None:
        return
    parsed, rest = get_angle_addr(arg)
    assert (parsed.addr_spec, rest) == simple


def test_simple_path_shortcut_takes_the_usual_forms_only() -> None:
    assert simple_path("<bench@acme.test>") == ("bench@acme.test", "")
    assert simple_path("<a.b+c@acme.test> SIZE=1100 BODY=8BITMIME") == (
        "a.b+c@acme.test",
        "SIZE=1100 BODY=8BITMIME",
    )
    for other in (
        " <a@acme.test>",  # leading white space
        '<"a b"@acme.test>',  # quoted local part
        "<a..b@acme.test>",
        "<a@[127.0.0.1]>",
        "<@relay.test:a@acme.test>",  # source route
        "<a@acme.test> (comment)",
        "<a@acme.test>\x0bSIZE=1",
        "<a@acme.test>x",
        "<>",
        "a@acme.test",
        "<ü@acme.test>",
        "<=?utf-8?q?abc?=@acme.test>",  # encoded-words, which the email package decodes
        "<a@=?utf-8?q?acme.test?=>",
        "<a.=?utf-8?q?b?=@acme.test>",
    ):
        assert simple_path(other) is None, other


# --- hostile encoded-words never break the From check ----------------------------------------
_charset = st.sampled_from(
    ["utf-8", "utf-8*en", "x-unknown", "base64", "idna", "rot13", "zlib", "utf-16", "gb2312", ""]
)
_word_text = st.text("abAB09+/=@._ ", max_size=8)
_word_piece = st.one_of(
    st.builds(lambda c, e, t: f"=?{c}?{e}?{t}?=", _charset, st.sampled_from("qQbB"), _word_text),
    st.sampled_from(["=?", "?=", "?q?", "?b?", " ", "\t", "=40", "=FF", '"', "(", ")"]),
    _word_text,
)


@settings(max_examples=400)
@given(value=st.lists(_word_piece, max_size=12).map("".join))
def test_from_check_never_fails_on_encoded_words(value: str) -> None:
    """Whatever encoded-word-like text a From holds, the check ends in mailboxes or in a
    ``HeaderError`` (a 5xx), never in another exception (which would answer 451)."""
    block = parse_header_block(f"From: {value} <probe@acme.test>\r\n\r\nbody\r\n".encode())
    with contextlib.suppress(HeaderError):
        sender_mailboxes(block)
