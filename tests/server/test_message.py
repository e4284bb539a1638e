"""Points 4, 5 and 6: size, Anypost headers, and ids=."""

from __future__ import annotations

import json
import re
from email import message_from_bytes
from pathlib import Path

import pytest

from reference_server.spool import read_events

from ..support import (
    VERIFIED,
    Client,
    ServerThread,
    delivered,
    make_config,
    message,
    run,
    running,
)

ID = r"email_[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"


def sized(size: int, body_line: bytes = b"x" * 70) -> bytes:
    """A message of exactly ``size`` octets as RFC 1870 counts them."""
    head = message(body="").rstrip(b"\r\n") + b"\r\n\r\n"
    body = bytearray()
    line = body_line + b"\r\n"
    while len(head) + len(body) + len(line) <= size - 3:
        body += line
    missing = size - len(head) - len(body)
    body += b"y" * (missing - 2) + b"\r\n"
    data = head + bytes(body)
    assert len(data) == size
    return data


async def _submit(
    server: ServerThread, data: bytes, rcpts: tuple[str, ...] = ("a@sink.test",)
) -> tuple[int, str]:
    client = Client(server)
    await client.ready()
    reply = await client.submit(data, rcpts=rcpts)
    await client.close()
    return reply.code, reply.message


def test_size_advertised_before_and_after_tls(server: ServerThread) -> None:
    async def go() -> tuple[str, str]:
        client = Client(server)
        await client.connect()
        before = await client.cmd("EHLO", "x.test")
        await client.smtp.starttls()
        after = await client.cmd("EHLO", "x.test")
        await client.close()
        return before.message, after.message

    before, after = run(go())
    assert "SIZE 5242880" in before.split("\n") and "SIZE 5242880" in after.split("\n")


@pytest.mark.parametrize(("declared", "code"), [(5242880, 250), (5242881, 552), ("abc", 501)])
def test_size_declared_at_mail(server: ServerThread, declared: object, code: int) -> None:
    async def go() -> tuple[int, str]:
        client = Client(server)
        await client.ready()
        reply = await client.cmd(f"MAIL FROM:<probe@{VERIFIED}> SIZE={declared}")
        await client.close()
        return reply.code, reply.message

    got, text = run(go())
    assert got == code, text
    if code == 552:
        assert text.startswith("5.3.4")


def test_size_boundaries_after_data(tmp_path: Path) -> None:
    limit = 20000
    with running(make_config(tmp_path, message_size=limit)) as server:
        assert run(_submit(server, sized(limit)))[0] == 250
        code, text = run(_submit(server, sized(limit + 1)))
        assert (code, text[:5]) == (552, "5.3.4")


def test_size_counts_without_stuffed_dots(tmp_path: Path) -> None:
    """RFC 1870 §5: the doubled dots of transparency do not count."""
    limit = 20000
    with running(make_config(tmp_path, message_size=limit)) as server:
        data = sized(limit, body_line=b"." + b"x" * 69)
        assert run(_submit(server, data))[0] == 250


def test_size_session_usable_after_refusal(tmp_path: Path) -> None:
    with running(make_config(tmp_path, message_size=20000)) as server:

        async def go() -> tuple[int, int]:
            client = Client(server)
            await client.ready()
            too_big = await client.submit(sized(20001))
            ok = await client.submit(message())
            await client.close()
            return too_big.code, ok.code

        assert run(go()) == (552, 250)


HEADER_CASES = [
    (('X-Anypost-Tags: ["welcome","onboarding"]',), 250, ["welcome", "onboarding"]),
    (("X-Anypost-Tags: []",), 250, []),
    (('X-Anypost-Tags: ["a",\r\n "b"]',), 250, ["a", "b"]),
    (("X-Anypost-Tag: a", "X-Anypost-Tag: b", "x-anypost-tag: c"), 250, ["a", "b", "c"]),
    (('X-Anypost-Tags: "a"',), 554, None),
    (("X-Anypost-Tags: [1]",), 554, None),
    (('X-Anypost-Tags: {"a": 1}',), 554, None),
    (('X-Anypost-Tags: ["a",]',), 554, None),
    (('X-Anypost-Tags: ["a"]', 'X-Anypost-Tags: ["b"]'), 554, None),
    (('X-Anypost-Tags: ["a"]', "X-Anypost-Tag: b"), 554, None),
    (("X-Anypost-Tag: ",), 554, None),
    (("X-Anypost-Topic: a", "x-anypost-topic: b"), 554, None),
    (("X-Campaign: a", "X-CAMPAIGN: b"), 554, None),
    (("X-Anypost-Topic:   ",), 554, None),
    (("X-Campaign:",), 554, None),
]


@pytest.mark.parametrize(("headers", "code", "tags"), HEADER_CASES)
def test_headers_rules(
    server: ServerThread, headers: tuple[str, ...], code: int, tags: list[str] | None
) -> None:
    got, text = run(_submit(server, message(headers=headers)))
    assert got == code, text
    if code == 554:
        assert text.startswith("5.6.0") and "ids=" not in text
    else:
        events = read_events(server.config.spool / "events.sqlite3")
        assert json.loads(str(events[-1]["tags"])) == tags


def test_headers_stripped_and_recorded(server: ServerThread) -> None:
    headers = (
        "X-Anypost-Tag: welcome",
        "X-Anypost-Topic: account\r\n  security",
        "X-Campaign: spring",
        "X-Other: kept",
    )
    body = "--b\r\nContent-Type: text/plain\r\nX-Anypost-Topic: inner\r\n\r\nbody\r\n--b--\r\n"
    data = message(headers=(*headers, 'Content-Type: multipart/mixed; boundary="b"'), body=body)
    code, text = run(_submit(server, data))
    assert code == 250, text
    email_id = re.findall(ID, text)[0]
    event = read_events(server.config.spool / "events.sqlite3")[-1]
    assert event["email_id"] == email_id
    assert (event["topic"], event["campaign"], json.loads(str(event["tags"]))) == (
        "account  security",  # RFC 5322 §2.2.3: unfolding removes the CRLF only
        "spring",
        ["welcome"],
    )
    stored = delivered(str(event["path"])).read_bytes()
    parsed = message_from_bytes(stored)
    for name in ("X-Anypost-Tag", "X-Anypost-Tags", "X-Anypost-Topic", "X-Campaign"):
        assert parsed.get_all(name) is None
    assert parsed["X-Other"] == "kept" and parsed["From"] == f"Probe <probe@{VERIFIED}>"
    # Only top-level headers are control headers: the part's header is untouched.
    assert b"X-Anypost-Topic: inner" in stored
    assert stored.endswith(body.encode())


def test_ids_one_per_recipient_in_order(server: ServerThread) -> None:
    rcpts = ("a@sink.test", "b@sink.test", "c@sink.test")
    code, text = run(_submit(server, message(), rcpts))
    assert code == 250 and text.startswith("2.0.0 OK ids=")
    ids = re.findall(ID, text)
    assert len(ids) == 3 == len(set(ids))
    events = read_events(server.config.spool / "events.sqlite3")
    assert [(e["email_id"], e["recipient"]) for e in events] == list(zip(ids, rcpts, strict=True))


def test_ids_many_recipients_continue_over_lines(server: ServerThread) -> None:
    rcpts = tuple(f"r{i}@sink.test" for i in range(100))

    async def go() -> list[str]:
        client = Client(server)
        await client.ready()
        reply = await client.submit(message(), rcpts=rcpts)
        await client.close()
        assert reply.code == 250
        return reply.message.split("\n")

    lines = run(go())
    assert len(lines) > 1
    assert all(len(f"250-{line}\r\n") <= 512 and line.startswith("2.0.0") for line in lines)
    ids = [i for line in lines for i in re.findall(ID, line)]
    assert len(ids) == 100 == len(set(ids))


def test_ids_duplicate_rcpt_is_one_recipient_and_too_many_is_452(tmp_path: Path) -> None:
    with running(make_config(tmp_path, max_recipients=2)) as server:

        async def go() -> tuple[list[int], int]:
            client = Client(server)
            await client.ready()
            await client.cmd(f"MAIL FROM:<probe@{VERIFIED}>")
            codes = [
                (await client.cmd(f"RCPT TO:<{r}>")).code
                for r in ("a@sink.test", "a@SINK.test", "b@sink.test", "c@sink.test")
            ]
            reply = await client.send(message())
            await client.close()
            return codes, len(re.findall(ID, reply.message))

        assert run(go()) == ([250, 250, 250, 452], 2)


def test_ids_new_on_every_submission_with_and_without_rset(server: ServerThread) -> None:
    async def go() -> list[str]:
        client = Client(server)
        await client.ready()
        first = await client.submit(message())
        second = await client.submit(message())
        await client.cmd("RSET")
        third = await client.submit(message())
        await client.close()
        return [i for r in (first, second, third) for i in re.findall(ID, r.message)]

    ids = run(go())
    assert len(ids) == 3 == len(set(ids))
    assert ids == sorted(ids)  # UUIDv7 sorts by creation time


def test_size_oversized_message_is_not_held_in_memory(tmp_path: Path) -> None:
    """A 4 MB message against a 100 KB limit: the server keeps at most the limit."""
    import socket
    import ssl
    import tracemalloc

    from ..support import read_reply_sync, submission_prologue

    limit = 100_000
    with running(make_config(tmp_path, message_size=limit)) as server:
        context = ssl.create_default_context(cafile=server.ca)
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            reader = raw.makefile("rb")
            reply = read_reply_sync
            reply(reader)
            raw.sendall(b"EHLO mem.test\r\nSTARTTLS\r\n")
            reply(reader)
            assert reply(reader).startswith(b"220")
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                stream = tls.makefile("rb")
                for line in submission_prologue():
                    tls.sendall(line + b"\r\n")
                    assert reply(stream)[:1] in (b"2", b"3")
                tracemalloc.start()
                try:
                    tls.sendall(message(body=""))
                    chunk = (b"x" * 76 + b"\r\n") * 800  # 62 KB, sent 64 times: 4 MB
                    for _ in range(64):
                        tls.sendall(chunk)
                    tls.sendall(b".\r\n")
                    final = reply(stream)
                    _, peak = tracemalloc.get_traced_memory()
                finally:
                    tracemalloc.stop()
    assert final.startswith(b"552 5.3.4")
    assert peak < 3 * limit + 1_000_000, f"peak {peak} bytes while refusing a 4 MB message"
