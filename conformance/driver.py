"""The only code that opens sockets: an SMTP session over aiosmtplib, with a transcript.

The driver reports, it does not judge: every reply comes back as a ``Reply``, whatever its code;
only transport failures (refused, timed out, closed, garbage, TLS failure) raise
``TransportError``. It works at aiosmtplib's protocol level because the high-level client
raises on refusals, re-sends EHLO on its own, and closes the socket after a 421, each of which
would hide what the server did.
"""

from __future__ import annotations

import asyncio
import functools
import re
import ssl
from collections.abc import Callable

import aiosmtplib
from aiosmtplib.protocol import SMTPProtocol

from .errors import TransportError
from .reply import Reply
from .transcript import Transcript

_PERIOD = re.compile(rb"(?m)^\.")
_CLOSE_POLL = 0.02


def _reply(response: aiosmtplib.SMTPResponse) -> Reply:
    return Reply(response.code, tuple(response.message.split("\n")))


@functools.lru_cache(maxsize=8)
def tls_context(ca_file: str | None, system: bool, insecure: bool) -> ssl.SSLContext:
    """The client context for a profile's TLS trust, made once: loading a CA file costs more
    than anything else the harness does in a scenario."""
    if insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if ca_file:
        return ssl.create_default_context(cafile=ca_file)
    return ssl.create_default_context()


class Driver:
    def __init__(
        self,
        host: str,
        port: int,
        timeout: float,
        transcript: Transcript,
        make_tls: Callable[[], ssl.SSLContext],
        server_name: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.transcript = transcript
        self._make_tls = make_tls
        self.server_name = server_name or host
        self._smtp: aiosmtplib.SMTP | None = None
        self.tls = False
        self.quit_sent = False

    # --- state ---------------------------------------------------------------------------
    @property
    def _protocol(self) -> SMTPProtocol:
        if self._smtp is None or self._smtp.protocol is None:
            raise TransportError("not connected: the connection was closed earlier in the scenario")
        return self._smtp.protocol

    @property
    def connected(self) -> bool:
        return (
            self._smtp is not None
            and self._smtp.protocol is not None
            and self._smtp.protocol.is_connected
        )

    async def wait_closed(self, timeout: float) -> bool:
        """True when the server has closed the connection within ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.connected and loop.time() < deadline:
            await asyncio.sleep(_CLOSE_POLL)
        if not self.connected:
            self.transcript.event("connection closed by the server")
            return True
        return False

    def _fail(self, what: str, exc: BaseException) -> TransportError:
        message = f"{what}: {exc.__class__.__name__}: {exc}"
        closed = not self.connected
        if isinstance(exc, aiosmtplib.SMTPTimeoutError | asyncio.TimeoutError | TimeoutError):
            message = f"{what}: no reply within {self.timeout:g}s"
            # After a timeout the stream may be out of step: never pair a late reply with a
            # later command.
            self.abort()
            closed = True
        self.transcript.event(message)
        dropped = isinstance(
            exc, aiosmtplib.SMTPServerDisconnected | ConnectionResetError | BrokenPipeError
        )
        return TransportError(message, closed=closed, dropped=dropped)

    # --- operations ----------------------------------------------------------------------
    async def connect(self) -> Reply:
        self.abort()
        self.tls = False
        self.quit_sent = False
        self.transcript.event(f"connect {self.host}:{self.port}")
        smtp = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            timeout=self.timeout,
            use_tls=False,
            start_tls=False,
            local_hostname="conformance.test",
        )
        self._smtp = smtp
        try:
            response = await smtp.connect()
        except aiosmtplib.SMTPConnectResponseError as exc:
            reply = Reply(exc.code, tuple(exc.message.split("\n")))
            self.transcript.received(reply.code, list(reply.lines))
            return reply
        except (aiosmtplib.SMTPException, OSError) as exc:
            self._smtp = None
            raise self._fail(f"connect to {self.host}:{self.port}", exc) from None
        reply = _reply(response)
        self.transcript.received(reply.code, list(reply.lines))
        return reply

    async def command(self, line: str, shown: str | None = None) -> Reply:
        """Send one command line and read its reply. ``shown`` replaces it in the transcript."""
        protocol = self._protocol
        self.transcript.sent_summary(shown) if shown is not None else self.transcript.sent(line)
        try:
            response = await protocol.execute_command(line.encode("utf-8"), timeout=self.timeout)
        except ValueError as exc:
            raise TransportError(f"cannot send {line!r}: {exc} (use a raw step)", False) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise self._fail(f"reply to {shown or line!r}", exc) from None
        reply = _reply(response)
        self.transcript.received(reply.code, list(reply.lines))
        if line.upper() == "QUIT":
            self.quit_sent = True
        return reply

    async def read_reply(self, timeout: float | None = None) -> Reply:
        try:
            response = await self._protocol.read_response(timeout=timeout or self.timeout)
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise self._fail("reading a reply", exc) from None
        reply = _reply(response)
        self.transcript.received(reply.code, list(reply.lines))
        return reply

    async def silence(self, timeout: float) -> Reply | None:
        """The reply the server volunteers within ``timeout``, or None (it said nothing)."""
        try:
            response = await self._protocol.read_response(timeout=timeout)
        except aiosmtplib.SMTPReadTimeoutError:
            self.transcript.event(f"no reply within {timeout:g}s")
            return None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise self._fail("waiting for silence", exc) from None
        reply = _reply(response)
        self.transcript.received(reply.code, list(reply.lines))
        return reply

    async def write(self, data: bytes, shown: str | None = None) -> None:
        if shown is None:
            self.transcript.sent(data)
        else:
            self.transcript.sent_summary(shown)
        try:
            self._protocol.write(data)
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise self._fail("sending", exc) from None

    async def starttls(self, inject: bytes = b"") -> Reply:
        """STARTTLS, then the TLS handshake when the reply is 220.

        ``inject`` is written in the same segment, after the command, in plaintext: a server
        must discard it (RFC 3207 §4.2), and the steps after show whether it did.
        """
        protocol = self._protocol
        await self.write(b"STARTTLS\r\n" + inject)
        reply = await self.read_reply()
        if reply.code != 220:
            return reply
        # Anything still buffered arrived in plaintext before TLS: it must not be read as a
        # reply inside the TLS session.
        del protocol._buffer[:]
        transport = protocol.transport
        if not isinstance(transport, asyncio.WriteTransport):
            raise self._fail("STARTTLS", ConnectionError("closed before the TLS handshake"))
        loop = asyncio.get_running_loop()
        try:
            tls_transport = await loop.start_tls(
                transport,
                protocol,
                self._make_tls(),
                server_side=False,
                server_hostname=self.server_name,
                ssl_handshake_timeout=self.timeout,
            )
        except (TimeoutError, ssl.SSLError, ConnectionError, OSError) as exc:
            self.abort()
            raise self._fail("TLS handshake", exc) from None
        if tls_transport is None:
            raise self._fail("TLS handshake", ConnectionError("no transport"))
        protocol.transport = tls_transport
        if self._smtp is not None:
            self._smtp.transport = tls_transport
        self.tls = True
        version = tls_transport.get_extra_info("ssl_object")
        detail = version.version() if version is not None else "TLS"
        self.transcript.event(f"TLS established ({detail})")
        return reply

    async def data(self, message: bytes, verbatim: bool = False) -> tuple[Reply, Reply | None]:
        """DATA, then the message when the reply is 354; the final reply to the end of data.

        ``verbatim`` sends ``message`` exactly (no dot-stuffing, no terminator) for framing
        probes; otherwise lines starting with "." are stuffed (RFC 5321 §4.5.2).
        """
        start = await self.command("DATA")
        if start.code != 354:
            return start, None
        payload = message if verbatim else _PERIOD.sub(b"..", message) + b".\r\n"
        await self.write(payload, shown=_describe_message(message, verbatim))
        # A big message may take a while to reach the server before it can answer.
        final = await self.read_reply(self.timeout + len(payload) / 1_000_000)
        return start, final

    async def finish(self) -> None:
        """End politely where the server still listens (QUIT), then close."""
        if self.connected and not self.quit_sent:
            try:
                self.transcript.sent("QUIT")
                response = await self._protocol.execute_command(
                    b"QUIT", timeout=min(self.timeout, 5)
                )
                self.transcript.received(response.code, response.message.split("\n"))
            except (aiosmtplib.SMTPException, OSError, ValueError):
                pass  # the server has gone: nothing left to be polite to
            self.quit_sent = True
        protocol = self._smtp.protocol if self._smtp is not None else None
        if protocol is not None and isinstance(protocol.transport, asyncio.Transport):
            # The SMTP session is over (QUIT answered, or the server gone): there is nothing
            # left to say, so the TLS close_notify round trip is skipped.
            protocol.transport.abort()
        self.abort()
        await settle(protocol)

    def abort(self) -> None:
        if self._smtp is not None:
            self._smtp.close()
        self._smtp = None

    def tls_details(self) -> dict[str, str]:
        """The TLS session's version, cipher and the peer certificate's subject, for reports."""
        protocol = self._smtp.protocol if self._smtp is not None else None
        transport = protocol.transport if protocol is not None else None
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        if not self.tls or ssl_object is None:
            return {}
        cipher = ssl_object.cipher()
        cert = ssl_object.getpeercert() or {}
        subject = ", ".join(
            f"{key}={value}" for rdn in cert.get("subject", ()) for key, value in rdn
        )
        return {
            "version": str(ssl_object.version() or ""),
            "cipher": str(cipher[0]) if cipher else "",
            "certificate_subject": subject or "(not verified: insecure, subject not read)",
        }


async def settle(protocol: SMTPProtocol | None, timeout: float = 1.0) -> None:
    """Let a closed connection finish closing (a TLS close is a round trip), so no socket is
    left for the event loop's shutdown to complain about."""
    if protocol is None:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    spins = 0
    while protocol.transport is not None and loop.time() < deadline:
        # An aborted transport is gone within a few loop turns; a peer's close takes longer.
        await asyncio.sleep(0 if spins < 10 else 0.001)
        spins += 1


def _describe_message(message: bytes, verbatim: bool) -> str:
    head, sep, _ = message.partition(b"\r\n\r\n")
    lines = head.decode("utf-8", "backslashreplace").split("\r\n") if sep else []
    shown = lines[:30]
    summary = f"[message: {len(message)} octets{', sent verbatim' if verbatim else ''}]"
    return "\n  ".join([summary, *shown]) if shown else summary
