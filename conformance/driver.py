"""The only code that opens sockets: an SMTP session over the harness's own wire reader
(``wire``, ``framing``), with a transcript.

The driver reports, it does not judge: every reply comes back as a ``Reply``, whatever its code;
only transport failures (refused, timed out, closed, unreadable, TLS failure) raise
``TransportError``. What the server got wrong on the wire (framing, extra replies) is collected
as ``Violation``s for the engine to judge against their own requirements.

Replies are paired with commands by count (RFC 5321 §4.2: "Every command MUST generate exactly
one reply"): the driver knows how many replies it is owed. A reply received while none is owed
is an extra one. Because a server answers in order, every surplus is visible by the time QUIT's
reply and the close arrive, so an extra reply is found whatever the timing.
"""

from __future__ import annotations

import asyncio
import functools
import re
import ssl
from collections.abc import Callable
from typing import Any

from .errors import TransportError
from .evidence import shown
from .framing import FramingError
from .model import Level
from .reply import Reply, Violation
from .transcript import Transcript
from .wire import Closed, Connection

_PERIOD = re.compile(rb"(?m)^\.")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
EXTRA_RULE = "RFC-12"
MAX_VIOLATIONS = 20  # per session: a server that breaks every line is shown, not copied
QUIT_WAIT = 2.0  # seconds, at most, for QUIT's reply and the close at the end of a session


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


# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH.
NAME_MISMATCH = (62, 64)


def tls_failure(
    exc: BaseException, server_name: str, timeout: float, names: list[str] | None = None
) -> str:
    """What went wrong in a TLS handshake, in words that say where to look; ``names``: the
    names the certificate carries, when they could be read."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = (exc.verify_message or str(exc)).split(",")[0].rstrip(".")
        carried = f"certificate names {', '.join(names)}; " if names else ""
        return (
            f"TLS handshake: certificate verify failed: {detail} "
            f"({carried}the profile expects {server_name})"
        )
    if isinstance(exc, TimeoutError):
        return f"TLS handshake: no answer within {timeout:g}s"
    if isinstance(exc, Closed | ConnectionError | EOFError) or (
        isinstance(exc, ssl.SSLError) and "EOF" in str(exc)
    ):
        return "the server closed the connection during the TLS handshake"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    return f"TLS handshake failed: {exc.__class__.__name__}: {exc}"


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
        self._conn: Connection | None = None
        self._closing: list[Connection] = []  # aborted, to be settled before the loop ends
        self._owed = 0  # replies the server still owes for what was sent
        self._violations: list[Violation] = []
        self._unshown = 0  # violations past MAX_VIOLATIONS
        self.extensions: dict[str, str] | None = None  # of the last EHLO answered 250
        self.tls = False
        self.quit_sent = False

    # --- state ---------------------------------------------------------------------------
    def _connection(self) -> Connection:
        if self._conn is None:
            raise TransportError("not connected: the connection was closed earlier in the scenario")
        return self._conn

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.open_

    def take_violations(self) -> list[Violation]:
        """The wire violations seen since the last call, for the engine to judge."""
        found, self._violations = self._violations, []
        if self._unshown:
            found.append(
                Violation(
                    found[-1].requirement if found else EXTRA_RULE,
                    Level.MUST,
                    f"and {self._unshown} more breaches of the reply syntax (not shown)",
                )
            )
            self._unshown = 0
        return found

    def _violation(self, violation: Violation) -> None:
        if len(self._violations) >= MAX_VIOLATIONS:
            self._unshown += 1
        else:
            self._violations.append(violation)

    def _note(self, reply: Reply) -> Reply:
        self.transcript.received(reply.code, list(reply.lines), raw=reply.raw)
        for violation in reply.violations:
            self._violation(violation)
        return reply

    def _extra(self, reply: Reply, when: str) -> None:
        """A reply nothing was waiting for. RFC 5321 §3.8 lets a server send 421 and close at
        any time; anything else breaks "exactly one reply" (§4.2)."""
        self._note(reply)
        if reply.code == 421:
            self.transcript.event(f"421 without a command ({when}): the server is closing")
            return
        self.transcript.event(f"an extra reply, {when}")
        seen = shown(reply.raw.removesuffix(b"\r\n")) if reply.raw else str(reply)
        self._violation(
            Violation(
                EXTRA_RULE,
                Level.MUST,
                f"a reply no command was waiting for, {when}: {seen}",
                reply.raw[:1024],
            )
        )

    def _take_extras(self, when: str) -> None:
        """Replies already received that no command is owed: extras (or, with replies owed by
        a pipelined write, left for the reads to come)."""
        conn = self._conn
        if conn is None or self._owed:
            return
        try:
            while (reply := conn.buffered_reply()) is not None:
                self._extra(reply, when)
                if reply.code == 0:
                    self._garbled()
                    return
        except FramingError as exc:
            self._broken(exc)

    def _garbled(self) -> None:
        """A line that is no reply at all: nothing after it can be paired with a command."""
        self.transcript.event("not an SMTP reply: the session is abandoned")
        self.abort()

    def _broken(self, exc: FramingError) -> None:
        self._violation(exc.violation)
        self.transcript.event(f"unreadable reply stream: {exc.message}")
        self.abort()

    def _fail(self, message: str, dropped: bool = False) -> TransportError:
        """``dropped``: the server closed or reset the connection (see ``TransportError``)."""
        self.transcript.event(message)
        return TransportError(message, closed=not self.connected, dropped=dropped)

    async def _read(self, what: str, timeout: float | None = None) -> Reply:
        conn = self._connection()
        wait = self.timeout if timeout is None else timeout
        try:
            reply = await conn.next_reply(wait)
        except TimeoutError:
            partial = conn.reader.pending
            message = f"{what}: no reply within {wait:g}s"
            if partial:
                message += f" ({len(partial)} octets without a complete reply: {shown(partial)})"
            # After a timeout the stream may be out of step: never pair a late reply with a
            # later command.
            self.abort()
            raise self._fail(message) from None
        except Closed as exc:
            partial = conn.reader.pending
            message = f"{what}: {exc}"
            if partial:
                message += f" after {len(partial)} octets that are not a reply: {shown(partial)}"
            self.abort()
            raise self._fail(message, dropped=True) from None
        except FramingError as exc:
            self._broken(exc)
            raise self._fail(f"{what}: {exc.message}") from None
        self._owed = max(0, self._owed - 1)
        self._note(reply)
        if reply.code == 0:
            self._garbled()
        elif reply.code == 421 and self._owed == 0 and conn.open_:
            # RFC 5321 §3.8: a 421 announces that the server is closing the channel. Give the
            # close the time a reply has, so "closed" is judged on what the server did and not
            # on whether its FIN overtook our read of the 421.
            await self.wait_closed(wait)
        return reply

    def _write(self, data: bytes, what: str) -> None:
        try:
            self._connection().write(data)
        except (Closed, OSError) as exc:
            self.abort()
            raise self._fail(f"{what}: cannot send, {exc}", dropped=True) from None

    # --- operations ----------------------------------------------------------------------
    async def connect(self) -> Reply:
        self.abort()
        self.tls = False
        self.quit_sent = False
        self.extensions = None
        self._owed = 1  # the greeting
        self.transcript.event(f"connect {self.host}:{self.port}")
        try:
            self._conn = await Connection.open(self.host, self.port, self.timeout)
        except TimeoutError:
            raise self._fail(
                f"connect to {self.host}:{self.port}: no answer within {self.timeout:g}s"
            ) from None
        except OSError as exc:
            raise self._fail(
                f"connect to {self.host}:{self.port}: {exc.strerror or exc}".lower()
            ) from None
        return await self._read("the greeting")

    async def command(self, line: str, shown: str | None = None) -> Reply:
        """Send one command line and read its reply. ``shown`` replaces it in the transcript."""
        label = shown or line
        if _CONTROL.search(line):
            raise TransportError(
                f"cannot send {label!r}: a command line holds no control characters "
                "(use a raw step)",
                closed=False,
            )
        self._connection()
        self._take_extras(f"before {label}")
        self.transcript.sent_summary(shown) if shown is not None else self.transcript.sent(line)
        self._write(line.encode("utf-8") + b"\r\n", label)
        self._owed += 1
        reply = await self._read(f"reply to {label}")
        verb = line.split(" ", 1)[0].upper()
        if verb == "QUIT":
            self.quit_sent = True
        elif verb == "EHLO":
            self.extensions = reply.extensions() if reply.code == 250 else None
        return reply

    async def pipeline(self, lines: list[str]) -> tuple[list[Reply], TransportError | None]:
        """Several commands in one write (RFC 2920), then one reply read for each, in order.

        Returns the replies read, and the transport failure that stopped the reading (the
        reply to ``lines[len(replies)]`` never came), if any."""
        self._connection()
        for line in lines:
            if _CONTROL.search(line):
                raise TransportError(f"cannot send {line!r} in a pipeline (use raw)", False)
        self._take_extras(f"before {lines[0]}")
        for line in lines:
            self.transcript.sent(line)
        self._write("".join(f"{line}\r\n" for line in lines).encode("utf-8"), lines[0])
        self._owed += len(lines)
        replies: list[Reply] = []
        for line in lines:
            try:
                replies.append(await self._read(f"reply to {line} (pipelined)"))
            except TransportError as exc:
                return replies, exc
        return replies, None

    async def read_reply(self, timeout: float | None = None) -> Reply:
        return await self._read("reading a reply", timeout)

    async def silence(self, timeout: float) -> Reply | None:
        """The reply the server volunteers within ``timeout``, or None (it said nothing)."""
        conn = self._connection()
        try:
            reply = await conn.next_reply(timeout)
        except TimeoutError:
            self.transcript.event(f"no reply within {timeout:g}s")
            return None
        except Closed as exc:
            self.abort()
            raise self._fail(f"waiting for silence: {exc}", dropped=True) from None
        except FramingError as exc:
            self._broken(exc)
            raise self._fail(f"waiting for silence: {exc.message}") from None
        self._note(reply)
        if reply.code == 0:
            self._garbled()
        return reply

    async def write(self, data: bytes, shown: str | None = None, replies: int = 0) -> None:
        """Send ``data`` as it is; ``replies`` is how many replies it owes (a raw step's)."""
        self._connection()
        self._take_extras("before a raw write")
        if shown is None:
            self.transcript.sent(data)
        else:
            self.transcript.sent_summary(shown)
        self._write(data, "raw write")
        self._owed += replies
        await self._drain()

    async def _drain(self) -> None:
        if self._conn is not None:
            await self._conn.drain()

    async def starttls(self, inject: bytes = b"") -> Reply:
        """STARTTLS, then the TLS handshake when the reply is 220.

        ``inject`` is written in the same segment, after the command, in plaintext: a server
        must discard it (RFC 3207 §4.2), and the steps after show whether it did.
        """
        conn = self._connection()
        self._take_extras("before STARTTLS")
        self.transcript.sent(b"STARTTLS\r\n" + inject)
        self._write(b"STARTTLS\r\n" + inject, "STARTTLS")
        self._owed += 1
        reply = await self._read("reply to STARTTLS")
        if reply.code != 220:
            return reply
        # Anything received after the 220 arrived in plaintext before TLS: RFC 3207 §4.2 has
        # it discarded, never read as a reply inside the TLS session.
        if not inject:
            self._take_extras("after 220 to STARTTLS, before the TLS handshake")
        dropped = conn.reader.clear()
        if dropped:
            self.transcript.event(
                f"{len(dropped)} octets after 220 to STARTTLS, before the TLS handshake, "
                f"discarded: {shown(dropped)}"
            )
        try:
            await conn.start_tls(self._make_tls(), self.server_name, self.timeout)
        except (TimeoutError, ssl.SSLError, Closed, OSError, EOFError) as exc:
            self.abort()
            names = None
            if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_code in NAME_MISMATCH:
                names = await self._certificate_names()
            raise self._fail(tls_failure(exc, self.server_name, self.timeout, names)) from None
        self.tls = True
        self.extensions = None
        self.transcript.event(f"TLS established ({conn.tls_version or 'TLS'})")
        return reply

    async def _certificate_names(self) -> list[str] | None:
        """The names the server's certificate carries, for the message of a name mismatch.

        OpenSSL does not hand out a certificate it refused, so a second session asks for it:
        the chain is still verified against the profile's trust, only the name is not checked;
        nothing but EHLO, STARTTLS and QUIT is sent on it, and no key ever."""
        trusted = self._make_tls().get_ca_certs(binary_form=True)
        if not trusted:
            return None
        context = ssl.create_default_context(cadata=b"".join(trusted))
        context.check_hostname = False
        conn: Connection | None = None
        try:
            conn = await Connection.open(self.host, self.port, self.timeout)
            await conn.next_reply(self.timeout)
            conn.write(b"EHLO conformance.invalid\r\n")
            await conn.next_reply(self.timeout)
            conn.write(b"STARTTLS\r\n")
            if (await conn.next_reply(self.timeout)).code != 220:
                return None
            conn.reader.clear()
            await conn.start_tls(context, self.server_name, self.timeout)
            names = conn.certificate_names()
            conn.write(b"QUIT\r\n")
            return names
        except (TimeoutError, ssl.SSLError, Closed, OSError, EOFError, FramingError):
            return None
        finally:
            if conn is not None:
                conn.abort()
                self._closing.append(conn)

    async def data(self, message: bytes, verbatim: bool = False) -> tuple[Reply, Reply | None]:
        """DATA, then the message when the reply is 354; the final reply to the end of data.

        ``verbatim`` sends ``message`` exactly (no dot-stuffing, no terminator) for framing
        probes; otherwise lines starting with "." are stuffed (RFC 5321 §4.5.2).
        """
        start = await self.command("DATA")
        if start.code != 354:
            return start, None
        return start, await self.message(message, verbatim)

    async def message(self, message: bytes, verbatim: bool = False) -> Reply:
        """The message after a 354, and the reply to its end."""
        payload = message if verbatim else _PERIOD.sub(b"..", message) + b".\r\n"
        self.transcript.sent_summary(_describe_message(message, verbatim))
        self._write(payload, "the message")
        self._owed += 1
        # A big message may take a while to reach the server before it can answer.
        await self._drain()
        return await self._read("reply to the end of data", self.timeout + len(payload) / 1e6)

    async def wait_closed(self, timeout: float) -> bool:
        """True when the server has closed the connection within ``timeout`` seconds."""
        conn = self._conn
        if conn is None:
            return True
        closed = await conn.wait_lost(timeout)
        self._take_extras("before the server closed the connection")
        if closed:
            self.transcript.event("connection closed by the server")
        return closed

    async def finish(self) -> None:
        """End politely where the server still listens (QUIT), then close.

        Every reply after QUIT but the last is an extra one (the server answers in order), so
        the surplus of a session is counted here whatever the timing."""
        conn = self._conn
        if conn is None:
            await self._settle()
            return
        self._owed = 0
        self._take_extras("at the end of the session")
        if self.connected and not self.quit_sent:
            self.quit_sent = True
            try:
                self.transcript.sent("QUIT")
                conn.write(b"QUIT\r\n")
                await self._after_quit(conn)
            except (Closed, OSError):
                pass  # the server has gone: nothing left to be polite to
        elif self.connected:
            self._take_extras("after QUIT")
        self.abort()
        await self._settle()

    async def _settle(self) -> None:
        closing, self._closing = self._closing, []
        for conn in closing:
            await conn.settle()

    async def _after_quit(self, conn: Connection) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(self.timeout, QUIT_WAIT)
        replies: list[Reply] = []
        while True:
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                replies.append(await conn.next_reply(remaining))
            except (TimeoutError, Closed):
                break
            except FramingError as exc:
                self._broken(exc)
                break
            if replies[-1].code == 221:
                # The server closes after its 221 (RFC 5321 §4.1.1.10); what comes first is
                # another reply, which the loop reads, or the close.
                deadline = min(deadline, loop.time() + min(self.timeout, 0.5))
        for reply in replies[:-1]:
            self._extra(reply, f"at the end of the session ({len(replies)} replies to QUIT)")
        if replies:
            self._note(replies[-1])

    def abort(self) -> None:
        if self._conn is not None:
            self._conn.abort()
            self._closing.append(self._conn)
        self._conn = None
        self._owed = 0

    def tls_details(self) -> dict[str, str]:
        """The TLS session's version, cipher and the peer certificate's subject, for reports."""
        ssl_object = self._conn.ssl_object if self._conn is not None and self.tls else None
        if ssl_object is None:
            return {}
        cipher = ssl_object.cipher()
        cert = ssl_object.getpeercert() or {}
        rdns = cert.get("subject", ())
        subject = ", ".join(
            f"{pair[0]}={pair[1]}"
            for rdn in (rdns if isinstance(rdns, tuple) else ())
            for pair in rdn
            if isinstance(pair, tuple) and len(pair) == 2
        )
        return {
            "version": str(ssl_object.version() or ""),
            "cipher": str(cipher[0]) if cipher else "",
            "certificate_subject": subject or "(not verified: insecure, subject not read)",
        }


async def settle(protocol: Any, timeout: float = 1.0) -> None:
    """Let a closed connection finish closing (a TLS close is a round trip), so no socket is
    left for the event loop's shutdown to complain about. ``protocol`` is any asyncio protocol
    with a ``transport`` attribute that turns None when it is lost (aiosmtplib's included)."""
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
    shown_lines = [shown(line, 200) for line in head.split(b"\r\n")[:30]] if sep else []
    summary = f"[message: {len(message)} octets{', sent verbatim' if verbatim else ''}]"
    return "\n  ".join([summary, *shown_lines]) if shown_lines else summary
