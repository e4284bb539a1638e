"""Points 7 and 8: durable delivery before 250, and protocol hygiene."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import sqlite3
import ssl
from pathlib import Path

import aiosmtplib
import pytest

from reference_server.spool import mailbox_dir, read_events

from ..support import (
    Client,
    ServerThread,
    delivered,
    make_config,
    message,
    read_reply,
    run,
    running,
    submission_prologue,
)
from .test_message import ID


def test_delivery_journalled_and_logged_before_250_then_in_maildir(server: ServerThread) -> None:
    spool = server.config.spool

    async def go() -> str:
        client = Client(server)
        await client.ready()
        reply = await client.submit(message(), rcpts=("a@sink.test", "B@Sink.Test"))
        # Checked while the session is still open: the 250 itself vouches for the store, the
        # message in the journal and a row per copy in the event log, both committed.
        events = read_events(spool / "events.sqlite3")
        ids = re.findall(ID, reply.message)
        assert [e["email_id"] for e in events] == ids
        db = sqlite3.connect(spool / "events.sqlite3")
        try:
            bodies = [bytes(b) for (b,) in db.execute("SELECT body FROM journal")]
        finally:
            db.close()
        assert len(bodies) == 1 and b"Subject:" in bodies[0]
        # And the copies follow: one file, in both Maildirs.
        for event in events:
            assert delivered(str(event["path"])).read_bytes() == bodies[0]
        assert (mailbox_dir(spool, "B@sink.test") / "new").is_dir()
        await client.close()
        return reply.message

    run(go())
    assert not list(spool.glob("maildir/*/tmp/*"))


def test_delivery_storage_failure_is_451_not_250(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = server.server.spool
    assert spool is not None

    def disk_full(*args: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    # The disk fills as the message is committed: nothing may be left to deliver.
    monkeypatch.setattr(spool, "_commit", disk_full)

    async def go() -> int:
        client = Client(server)
        await client.ready()
        reply = await client.submit(message())
        await client.close()
        return reply.code

    assert run(go()) == 451
    assert read_events(server.config.spool / "events.sqlite3") == []
    assert not list((server.config.spool / "maildir").glob("*/new/*"))


async def _data_then_noop(server: ServerThread, data: bytes) -> tuple[bytes, bytes]:
    """A hand-driven session (for bytes aiosmtplib will not send): DATA with ``data`` sent
    verbatim, then NOOP; the replies to the end of data and to the NOOP."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)

    async def reply() -> bytes:
        return await read_reply(reader, timeout=5)

    try:
        await reply()
        writer.write(b"EHLO raw.test\r\n")
        await reply()
        writer.write(b"STARTTLS\r\n")
        assert (await reply()).startswith(b"220")
        await writer.start_tls(server.tls_context(), server_hostname="localhost")
        for line in submission_prologue():
            writer.write(line + b"\r\n")
            answer = await reply()
            assert answer[:1] in (b"2", b"3"), answer
        writer.write(data)
        final = await reply()
        writer.write(b"NOOP\r\n")
        return final, await reply()
    finally:
        writer.close()
        # The server may have gone already; the socket is closed either way.
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 5)


def test_hygiene_bare_lf_dot_never_ends_data(server: ServerThread) -> None:
    body = (
        "first\n.\nMAIL FROM:<x@unverified.test>\r\nRCPT TO:<a@sink.test>\r\nDATA\r\nsmuggled\r\n"
    )
    final, after = run(_data_then_noop(server, message(body=body) + b".\r\n"))
    assert final.startswith(b"554 5.6.0")  # one answer, for the whole message
    assert after.startswith(b"250")  # and nothing answered the smuggled commands
    assert read_events(server.config.spool / "events.sqlite3") == []


def test_hygiene_bare_cr_refused(server: ServerThread) -> None:
    final, after = run(_data_then_noop(server, message(body="first\r.\rRSET\r\n") + b".\r\n"))
    assert final.startswith(b"554") and after.startswith(b"250")


def test_hygiene_long_line_refused(server: ServerThread) -> None:
    final, after = run(_data_then_noop(server, message(body="x" * 5000 + "\r\n") + b".\r\n"))
    assert final.startswith(b"500 5.5.2") and after.startswith(b"250")


def test_hygiene_idle_client_timed_out(tmp_path: Path) -> None:
    with (
        running(make_config(tmp_path, idle_timeout=0.5)) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock,
    ):
        data = b""
        while not data.endswith(b"\r\n") or b"421" not in data:
            chunk = sock.recv(1024)
            if not chunk:
                break
            data += chunk
        assert b"421 4.4.2" in data
        assert sock.recv(1024) == b""  # and then closed


def test_hygiene_many_concurrent_sessions(server: ServerThread) -> None:
    async def one(i: int) -> str:
        client = Client(server)
        await client.ready()
        reply = await client.submit(message(body=f"message {i}\r\n"), rcpts=(f"r{i}@sink.test",))
        await client.close()
        assert reply.code == 250, reply
        return re.findall(ID, reply.message)[0]

    async def go() -> list[str]:
        return await asyncio.gather(*(one(i) for i in range(40)))

    ids = run(go())
    assert len(set(ids)) == 40
    assert len(read_events(server.config.spool / "events.sqlite3")) == 40


def test_certificates_from_files(tmp_path: Path) -> None:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "chain.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "myca.pem"))
    from dataclasses import replace

    config = replace(
        make_config(tmp_path), tls_cert=tmp_path / "chain.pem", tls_key=tmp_path / "key.pem"
    )
    with running(config) as server:
        assert server.server.ca_path is None

        async def go() -> int:
            smtp = aiosmtplib.SMTP(
                hostname="127.0.0.1", port=server.port, start_tls=False, timeout=5
            )
            await smtp.connect()
            await smtp.ehlo()
            reply = await smtp.starttls(
                tls_context=ssl.create_default_context(cafile=str(tmp_path / "myca.pem"))
            )
            await smtp.quit()
            return reply.code

        assert run(go()) == 220


def test_certificates_made_with_trustme_when_none_given(server: ServerThread) -> None:
    assert Path(server.ca).read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")

    async def go() -> bool:
        client = Client(server)
        await client.ready()  # verifies the chain and the name against the written CA
        await client.close()
        return True

    assert run(go())
