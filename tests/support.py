"""Shared helpers for the tests: a reference server on loopback in a thread, keys, clients."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import aiosmtplib

from conformance.driver import settle
from reference_server.config import ServerConfig, parse_config
from reference_server.handler import AnypostHandler
from reference_server.server import ReferenceServer
from reference_server.session import AnypostSMTP

KEYS = {
    "send_only": "ap_test_send_only_0123456789",
    "full_access": "ap_test_full_access_0123456789",
    "restricted": "ap_test_restricted_0123456789",
    "no_send": "ap_test_read_only_0123456789",
    "revoked": "ap_test_revoked_0123456789",
}
VERIFIED = "acme.test"
OUTSIDE_ALLOWED = "billing.acme.test"
UNVERIFIED = "unverified.test"
OTHER_TEAM = "other.test"


def sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def raw_config(tmp_path: Path, **limits: Any) -> dict[str, Any]:
    """The test configuration as YAML would hold it (for servers run as processes too)."""
    return {
        "hostname": "localhost",
        "listen": {"host": "127.0.0.1", "ports": [0, 0, 0]},
        "tls": {"ca_out": str(tmp_path / "ca.pem")},
        "spool": str(tmp_path / "spool"),
        "teams": [
            {
                "name": "acme",
                "verified_domains": [VERIFIED, OUTSIDE_ALLOWED],
                "keys": [
                    {
                        "id": "so",
                        "secret_sha256": sha(KEYS["send_only"]),
                        "permission": "send_only",
                    },
                    {
                        "id": "fa",
                        "secret_sha256": sha(KEYS["full_access"]),
                        "permission": "full_access",
                    },
                    {
                        "id": "rs",
                        "secret_sha256": sha(KEYS["restricted"]),
                        "permission": "send_only",
                        "allowed_domains": [VERIFIED],
                    },
                    {"id": "ro", "secret_sha256": sha(KEYS["no_send"]), "permission": "read_only"},
                    {
                        "id": "rv",
                        "secret_sha256": sha(KEYS["revoked"]),
                        "permission": "send_only",
                        "revoked": True,
                    },
                ],
            },
            {"name": "other", "verified_domains": [OTHER_TEAM], "keys": []},
        ],
        "limits": limits,
    }


def make_config(tmp_path: Path, **limits: Any) -> ServerConfig:
    return parse_config(raw_config(tmp_path, **limits), tmp_path, env={})


class ServerThread:
    """A ReferenceServer on its own event loop in a thread, for sync and async clients alike."""

    def __init__(
        self,
        config: ServerConfig,
        handler_class: type[AnypostHandler] = AnypostHandler,
        smtp_class: type[AnypostSMTP] = AnypostSMTP,
    ) -> None:
        self.server = ReferenceServer(config, handler_class=handler_class, smtp_class=smtp_class)
        self.config = config
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._stop = asyncio.Event()
            loop.run_until_complete(self.server.start())
        except BaseException as exc:  # surfaced to the test by start()
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        loop.run_until_complete(self._stop.wait())
        loop.run_until_complete(self.server.stop())
        loop.close()

    def start(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the reference server did not start within 30s")
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    @property
    def port(self) -> int:
        return self.server.ports[0]

    @property
    def ca(self) -> str:
        assert self.server.ca_path is not None
        return str(self.server.ca_path)

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca)


@contextmanager
def running(config: ServerConfig, **kwargs: Any) -> Iterator[ServerThread]:
    thread = ServerThread(config, **kwargs).start()
    try:
        yield thread
    finally:
        thread.stop()


def plain_auth(secret: str, username: str = "anypost", authzid: str = "") -> bytes:
    return base64.b64encode(f"{authzid}\0{username}\0{secret}".encode())


class Client:
    """A thin aiosmtplib client that returns every reply and never re-sends EHLO by itself."""

    def __init__(self, server: ServerThread, port: int | None = None, timeout: float = 10) -> None:
        self.server = server
        self.smtp = aiosmtplib.SMTP(
            hostname="127.0.0.1",
            port=port or server.port,
            timeout=timeout,
            start_tls=False,
            tls_context=server.tls_context(),
            local_hostname="client.test",
        )
        # aiosmtplib forgets its transport when a server's 421 closes the session, while the
        # TLS shutdown beneath may still hold the socket: kept here so close() can end it.
        self._transport: asyncio.BaseTransport | None = None

    async def connect(self) -> aiosmtplib.SMTPResponse:
        reply = await self.smtp.connect()
        self._transport = self.smtp.transport
        return reply

    async def cmd(self, *parts: str) -> aiosmtplib.SMTPResponse:
        return await self.smtp.execute_command(*(p.encode() for p in parts))

    async def ready(self, key: str | None = "send_only") -> None:
        """Connected, TLS, EHLO, and authenticated with the key of that role."""
        await self.connect()
        await self.smtp.ehlo()
        await self.smtp.starttls()
        self._transport = self.smtp.transport
        await self.smtp.ehlo()
        if key is not None:
            reply = await self.cmd("AUTH", "PLAIN", plain_auth(KEYS[key]).decode())
            assert reply.code == 235, reply

    async def send(self, message: bytes) -> aiosmtplib.SMTPResponse:
        """DATA with this message; the reply to the final dot, whatever it is."""
        start = await self.cmd("DATA")
        if start.code != 354:
            return start
        assert self.smtp.protocol is not None
        payload = message.replace(b"\r\n.", b"\r\n..")
        if payload.startswith(b"."):
            payload = b"." + payload
        self.smtp.protocol.write(payload + b".\r\n")
        return await self.smtp.protocol.read_response(timeout=30)

    async def submit(
        self,
        message: bytes,
        sender: str = f"probe@{VERIFIED}",
        rcpts: tuple[str, ...] = ("a@sink.test",),
    ) -> aiosmtplib.SMTPResponse:
        reply = await self.cmd(f"MAIL FROM:<{sender}>")
        assert reply.code == 250, reply
        for rcpt in rcpts:
            reply = await self.cmd(f"RCPT TO:<{rcpt}>")
            assert reply.code == 250, reply
        return await self.send(message)

    async def close(self) -> None:
        protocol = self.smtp.protocol  # quit() forgets it, and we wait on it below
        if self.smtp.is_connected:
            # The server may have gone first; closing below is all that is left then.
            with contextlib.suppress(aiosmtplib.SMTPException):
                await self.smtp.quit()
        self.smtp.close()
        await settle(protocol)
        if self._transport is not None:
            self._transport.abort()  # closed already after a QUIT: then nothing happens


def message(
    from_: str = f"Probe <probe@{VERIFIED}>",
    headers: tuple[str, ...] = (),
    body: str = "Hello.\r\n",
) -> bytes:
    lines = []
    if from_:
        lines.append(f"From: {from_}")
    lines += ["To: a@sink.test", "Subject: test", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def submission_prologue(key: str = "send_only") -> tuple[bytes, ...]:
    """The command lines after STARTTLS up to DATA, for sessions driven by hand."""
    return (
        b"EHLO raw.test",
        b"AUTH PLAIN " + plain_auth(KEYS[key]),
        f"MAIL FROM:<probe@{VERIFIED}>".encode(),
        b"RCPT TO:<a@sink.test>",
        b"DATA",
    )


async def read_reply(reader: asyncio.StreamReader, timeout: float = 10) -> bytes:
    """One whole reply, continuation lines included, from a hand-driven session."""
    out = b""
    while True:
        line = await asyncio.wait_for(reader.readline(), timeout)
        if not line:
            raise ConnectionError("the server closed the connection")
        out += line
        if line[3:4] != b"-":
            return out


def read_reply_sync(stream: IO[bytes]) -> bytes:
    """``read_reply`` for a blocking socket's file."""
    out = b""
    while True:
        line = stream.readline()
        if not line:
            raise ConnectionError("the server closed the connection")
        out += line
        if line[3:4] != b"-":
            return out


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def delivered(path: Path | str, timeout: float = 10.0) -> Path:
    """A stored message's Maildir copy, once written: the reference server answers 250 after
    the journal's commit and writes the copy right after, so a test reading it at once waits."""
    path = Path(path)
    deadline = time.monotonic() + timeout
    while not path.is_file():
        if time.monotonic() >= deadline:
            raise AssertionError(f"no Maildir copy at {path} within {timeout} s")
        time.sleep(0.005)
    return path
