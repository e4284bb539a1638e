"""Point 1: the listeners: plaintext greeting, STARTTLS mandatory on every port, reset after TLS."""

from __future__ import annotations

import asyncio
import ssl

import aiosmtplib
import pytest

from ..support import KEYS, VERIFIED, Client, ServerThread, plain_auth, run


def test_listeners_every_port_greets_in_plaintext_and_gates_on_starttls(
    server: ServerThread,
) -> None:
    assert len(server.server.ports) == 3 and len(set(server.server.ports)) == 3

    async def probe(port: int) -> list[str]:
        client = Client(server, port)
        greeting = await client.connect()
        ehlo = await client.cmd("EHLO", "client.test")
        auth = await client.cmd("AUTH", "PLAIN", plain_auth(KEYS["send_only"]).decode())
        mail = await client.cmd(f"MAIL FROM:<probe@{VERIFIED}>")
        rcpt = await client.cmd("RCPT TO:<a@sink.test>")
        data = await client.cmd("DATA")
        await client.close()
        return [
            str(greeting.code),
            "STARTTLS" if "STARTTLS" in ehlo.message else "-",
            "AUTH" if "AUTH" in ehlo.message else "-",
            f"{auth.code} {auth.message}",
            f"{mail.code} {mail.message}",
            str(rcpt.code),
            str(data.code),
        ]

    results = [run(probe(port)) for port in server.server.ports]
    assert results[0] == results[1] == results[2]
    assert results[0] == [
        "220",
        "STARTTLS",
        "-",
        "530 5.7.0 Must issue a STARTTLS command first",
        "530 5.7.0 Must issue a STARTTLS command first",
        "530",
        "530",
    ]


def test_listeners_ehlo_after_tls_offers_auth_not_starttls(server: ServerThread) -> None:
    async def go() -> str:
        client = Client(server)
        await client.connect()
        await client.smtp.ehlo()
        reply = await client.smtp.starttls()
        assert reply.code == 220 and reply.message.startswith("2.0.0")
        ehlo = await client.cmd("EHLO", "client.test")
        await client.close()
        return ehlo.message

    extensions = run(go()).split("\n")
    assert "AUTH PLAIN LOGIN" in extensions
    assert "STARTTLS" not in extensions
    assert "SIZE 5242880" in extensions and "ENHANCEDSTATUSCODES" in extensions


def test_listeners_no_implicit_tls(server: ServerThread) -> None:
    """A client that starts with a TLS handshake gets no TLS: the port speaks plaintext SMTP."""

    async def go() -> None:
        smtp = Client(server).smtp
        smtp.use_tls = True
        with pytest.raises((aiosmtplib.SMTPException, ssl.SSLError)):
            await smtp.connect(timeout=3)
        smtp.close()

    run(go())


def test_listeners_state_reset_after_starttls(server: ServerThread) -> None:
    async def go() -> tuple[int, int]:
        client = Client(server)
        await client.connect()
        await client.smtp.ehlo()
        await client.smtp.starttls()
        # RFC 3207 §4.2: EHLO knowledge from before TLS is gone.
        auth = await client.cmd("AUTH", "PLAIN", plain_auth(KEYS["send_only"]).decode())
        mail = await client.cmd(f"MAIL FROM:<probe@{VERIFIED}>")
        await client.close()
        return auth.code, mail.code

    assert run(go()) == (503, 503)


def test_listeners_starttls_injection_is_discarded(server: ServerThread) -> None:
    async def go() -> int:
        client = Client(server)
        await client.connect()
        await client.smtp.ehlo()
        protocol = client.smtp.protocol
        assert protocol is not None
        protocol.write(b"STARTTLS\r\nEHLO injected.test\r\n")
        reply = await protocol.read_response(timeout=5)
        assert reply.code == 220
        loop = asyncio.get_running_loop()
        transport = await loop.start_tls(
            protocol.transport, protocol, server.tls_context(), server_hostname="localhost"
        )
        assert transport is not None
        protocol.transport = transport
        protocol.write(b"AUTH PLAIN " + plain_auth(KEYS["send_only"]) + b"\r\n")
        auth = await protocol.read_response(timeout=5)
        client.smtp.close()
        return auth.code

    assert run(go()) == 503
