"""Bare line endings in DATA: only <CRLF>.<CRLF> ends a message; a bare LF ends a line and is
stored as CRLF (Postfix >= 3.9's smtpd_forbid_bare_newline = normalize); smuggling-shaped dot
lines and bare CRs refuse the message; no smuggled command ever runs."""

from __future__ import annotations

import smtplib
import ssl

import pytest

from reference_server.spool import read_events

from ..support import KEYS, VERIFIED, ServerThread, delivered, message, run
from .test_rfc_behaviour import Raw


async def _data(server: ServerThread, raw_body: bytes) -> tuple[bytes, bytes]:
    """DATA with ``raw_body`` sent verbatim (it carries its own end of data), then NOOP."""
    raw = await Raw(server).open()
    await raw.expect(f"MAIL FROM:<probe@{VERIFIED}>".encode(), b"250")
    await raw.expect(b"RCPT TO:<a@sink.test>", b"250")
    await raw.expect(b"DATA", b"354")
    raw.writer.write(raw_body)
    final = await raw.reply()
    after = await raw.send(b"NOOP")
    await raw.close()
    return final, after


def _stored(server: ServerThread) -> list[bytes]:
    events = read_events(server.config.spool / "events.sqlite3")
    return [delivered(str(e["path"])).read_bytes() for e in events]


HEAD = f"From: probe@{VERIFIED}\r\nTo: a@sink.test\r\nSubject: line endings\r\n\r\n".encode()
SMUGGLED = b"MAIL FROM:<x@unverified.test>\r\nRCPT TO:<a@sink.test>\r\nDATA\r\nsmuggled\r\n"


@pytest.mark.parametrize(
    "marker",
    [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r\n.\r", b"\r.\r\n", b"\r\n.\r\r\n"],
    ids=[
        "lf-dot-lf",
        "lf-dot-crlf",
        "crlf-dot-lf",
        "cr-dot-cr",
        "crlf-dot-cr",
        "cr-dot-crlf",
        "crlf-dot-cr-crlf",
    ],
)
def test_smuggling_markers_never_end_data(server: ServerThread, marker: bytes) -> None:
    """Each end-of-data look-alike, followed by a whole second transaction: one answer, a
    refusal, for the whole thing; the NOOP after it gets the next reply; nothing stored."""
    final, after = run(_data(server, HEAD + b"first" + marker + SMUGGLED + b".\r\n"))
    assert final.startswith(b"554 5.6.0"), final
    assert after.startswith(b"250 "), after
    assert _stored(server) == []


@pytest.mark.parametrize(
    ("body", "stored"),
    [
        (b"one\ntwo\r\n", b"one\r\ntwo\r\n"),
        (b"one\n\ntwo\n", b"one\r\n\r\ntwo\r\n"),
        (b"..dotted\nplain\r\n", b".dotted\r\nplain\r\n"),
        (b"x\n..dotted\n", b"x\r\n.dotted\r\n"),
    ],
    ids=["lf-then-crlf", "lf-only", "stuffed-crlf-line", "stuffed-lf-line"],
)
def test_bare_lf_inside_content_is_a_line_end_stored_as_crlf(
    server: ServerThread, body: bytes, stored: bytes
) -> None:
    final, after = run(_data(server, HEAD + body + b"\r\n.\r\n"))
    assert final.startswith(b"250 2.0.0 OK ids="), final
    assert after.startswith(b"250 ")
    assert _stored(server) == [HEAD + stored + b"\r\n"]


def test_bare_lf_in_headers_is_normalized_and_checked(server: ServerThread) -> None:
    head = f"From: probe@{VERIFIED}\nTo: a@sink.test\nSubject: folded\n there\n\n".encode()
    final, _ = run(_data(server, head + b"body\r\n.\r\n"))
    assert final.startswith(b"250 2.0.0 OK ids="), final
    (stored,) = _stored(server)
    assert stored == head.replace(b"\n", b"\r\n") + b"body\r\n"


def test_bare_lf_cannot_hide_a_second_from(server: ServerThread) -> None:
    """A bare LF is a line end for the header check as much as for delivery."""
    head = f"From: probe@{VERIFIED}\nFrom: ceo@other.test\r\nSubject: x\r\n\r\n".encode()
    final, _ = run(_data(server, head + b"body\r\n.\r\n"))
    assert final.startswith(b"554 5.6.0"), final


def test_bare_cr_inside_content_refused(server: ServerThread) -> None:
    final, after = run(_data(server, HEAD + b"one\rtwo\r\n.\r\n"))
    assert final.startswith(b"554 5.6.0 Bare CR") and after.startswith(b"250 ")


def test_many_short_lf_lines_are_not_one_long_line(server: ServerThread) -> None:
    """LF-only content has no CRLF to split on until the end: it is still short lines."""
    body = b"".join(b"line %d of an LF-only body\n" % i for i in range(2000))
    final, _ = run(_data(server, HEAD + body + b"last\r\n.\r\n"))
    assert final.startswith(b"250 2.0.0 OK ids="), final
    (stored,) = _stored(server)
    assert stored == HEAD + body.replace(b"\n", b"\r\n") + b"last\r\n"


def test_one_long_lf_line_is_still_too_long(server: ServerThread) -> None:
    final, after = run(_data(server, HEAD + b"short\n" + b"y" * 5000 + b"\nshort\r\n.\r\n"))
    assert final.startswith(b"500 5.5.2") and after.startswith(b"250 ")


def test_lf_before_the_final_dot_is_refused_not_taken_as_end(server: ServerThread) -> None:
    """<LF>.<CRLF> is not the end of data: the client that ends so is refused (as Postfix's
    normalize refuses it), never cut at the dot."""
    final, after = run(_data(server, HEAD + b"body\n.\r\n" + b"more\r\n.\r\n"))
    assert final.startswith(b"554 5.6.0") and after.startswith(b"250 ")


def test_smtplib_data_with_lf_line_endings_is_accepted(server: ServerThread) -> None:
    """Python's smtplib.SMTP.data() sends bytes as given (only str is converted to CRLF), so a
    message with LF line endings arrives with bare LFs and a proper <CRLF>.<CRLF>."""
    lf_message = message(body="Hello\n.leading dot\nfrom smtplib.\n").replace(b"\r\n", b"\n")
    context = ssl.create_default_context(cafile=server.ca)
    with smtplib.SMTP("127.0.0.1", server.port, timeout=15) as smtp:
        smtp.starttls(context=context)
        smtp.login("anypost", KEYS["send_only"])
        smtp.mail(f"probe@{VERIFIED}")
        smtp.rcpt("a@sink.test")
        code, reply = smtp.data(lf_message)
    assert code == 250 and reply.startswith(b"2.0.0 OK ids="), reply
    (stored,) = _stored(server)
    # smtplib ends the data with CRLF after the last LF: one empty line more, as on the wire.
    assert stored == lf_message.replace(b"\n", b"\r\n") + b"\r\n"
