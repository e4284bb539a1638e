"""``AnypostSMTP``: aiosmtpd's SMTP protocol with the contract's framing and replies.

What it changes in aiosmtpd, and why:
- every 2xx/4xx/5xx line carries an enhanced code (``replies.enhance``), greeting and EHLO aside;
- a blocked client address is greeted with 421 and dropped;
- an idle client gets ``421 4.4.2`` before the close (RFC 5321 §4.5.3.2);
- AUTH PLAIN keeps the authzid, so a foreign identity can be refused (RFC 4616 §2);
- ``MAIL FROM:<>`` is refused with 550 5.7.1: the contract requires a verified domain;
- DATA counts size as RFC 1870 §5 does (no stuffed dots), buffers at most the limit, ends only
  at <CRLF>.<CRLF>, takes a bare LF as a line end (stored as CRLF), and refuses a message with
  a bare CR or a smuggling-shaped dot line (RFC 5321 §4.1.1.4; see ``_receive_data``);
- ``dir()`` of a session lists the protocol's names only, which aiosmtpd scans on every
  connection (``method_tables``).

Where aiosmtpd 1.4 spends per connection or command what a busy server need not (same
behaviour, less CPU; each named where it is done):
- ``_getaddr`` defines a ``typing.Protocol`` class on every call and reads the usual
  ``<local@domain>`` with the email package's header parser (``simple_path``);
- ``inspect.signature`` of the ``handle_EHLO`` hook on every connection (the handler stores it);
- a cancelled timer and a new one for every command (``_reset_timeout``); and this class's own
  control-character guard is made once per command method (``_guarded``).

Where aiosmtpd 1.4 departs from the RFCs a careful MSA follows (each named where it is fixed):
- STARTTLS on a TLS session is answered 220 and a second handshake is nested in the first;
- the idle timer is reset per command only, so it cuts a slow but steady DATA upload, and a
  client idle after a long upload sooner than its timeout;
- SASL mechanism names are matched case-sensitively (RFC 4954 §8: case-insensitive);
- the ``AUTH=`` MAIL parameter is refused with 555 (RFC 4954 §5: accepted);
- NUL and other control characters pass in command arguments and addresses;
- an over-long line at an AUTH prompt leaks ``(ValueError) Separator is found...`` into the
  reply and leaves the rest of the line to be run as a command;
- a client closing during STARTTLS puts a traceback in the log (``handle_exception``), and the
  reply to an unexpected exception carries its class and message.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import logging
import re
import ssl
import types
from collections.abc import Awaitable, Callable
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError
from typing import Any, AnyStr

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, TLSSetupException, syntax

from . import replies
from .handler import AnypostHandler, PlainCredentials, peer_address
from .method_tables import protocol_dir

_NULL_PATH = re.compile(r"^\s*FROM:\s*<>", re.IGNORECASE)
# aiosmtpd's address parser refuses a root-label trailing dot, which the contract ignores.
_TRAILING_DOT = re.compile(r"(@[^\s<>@]+?)\.+>")
# C0 controls and DEL: never part of an SMTP command (RFC 5321 §4.1.2 is printable ASCII and SP).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# RFC 4954 §5: AUTH=<> or an xtext mailbox (RFC 3461 §4: printable ASCII but "+" and "=",
# which appear only as "+" and two upper-case hex digits).
_AUTH_VALUE = re.compile(r"<>|(?:[!-*,-<>-~]|\+[0-9A-F]{2})+")
# What a client's disconnect or failed handshake looks like from inside a session.
# A CRLF line with no other CR or LF in it (the fast path of DATA).
_PLAIN_LINE = re.compile(rb"[^\r\n]*\r\n")
_CLIENT_FAULTS = (TLSSetupException, ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)
# The usual path, <local@domain> with both parts dot-atoms of ASCII atext (RFC 5322 §3.2.3),
# then nothing, or white space and a parameter: here the email package's reading is the text
# between the brackets, so it is taken as it stands (``simple_path``).
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_SIMPLE_PATH = re.compile(rf"<({_ATOM}(?:\.{_ATOM})*@{_ATOM}(?:\.{_ATOM})*)>(?:[ \t]+([^\s(]))?")

log = logging.getLogger("reference_server")


def _guard(func: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """A command method (the function, taking the session first) with its argument checked
    first: one holding a control character is refused without the command being run."""

    @functools.wraps(func)  # HELP reads each command's syntax from attributes of its method
    async def guarded(session: AnypostSMTP, arg: str | None) -> None:
        if arg is not None and _CONTROL.search(arg):
            await session.push(str(replies.CONTROL_CHARACTER))
            return
        await func(session, arg)

    return guarded


# Each command method of a session class, behind the guard: made once, bound per session.
_GUARDED: dict[Callable[..., Any], Callable[..., Any]] = {}


def simple_path(arg: str) -> tuple[str, str] | None:
    """The address and the rest of a MAIL or RCPT argument in the usual form
    (``_SIMPLE_PATH``), exactly as ``get_angle_addr`` reads them; None for any other form."""
    match = _SIMPLE_PATH.match(arg)
    if match is None or "=?" in match[1]:
        return None  # "=?" may start an encoded-word, which the email package decodes
    if match[2] is None:
        if match.end() != len(arg):
            return None  # white space, a comment or anything else after the path
        return match[1], ""
    return match[1], arg[match.start(2) :]


class AnypostSMTP(SMTP):
    # The usual LOGIN prompts (draft-murchison-sasl-login); aiosmtpd's own end in a NUL.
    AuthLoginUsernameChallenge = "Username:"
    AuthLoginPasswordChallenge = "Password:"

    def __init__(self, handler: AnypostHandler, **kwargs: Any) -> None:
        super().__init__(handler, authenticator=handler.authenticate, **kwargs)
        self.anypost = handler
        self.close_after_reply = False
        self._greeted = False
        self._verbatim = False
        self._in_data = False
        self._last_read = 0.0
        self._deadline = 0.0  # when an idle client is cut (``_reset_timeout``)
        self._timer_set = False  # the timer is scheduled and has not fired yet
        self._corked: list[bytes] | None = None  # reply lines held back to go out in one write
        # aiosmtpd hands command arguments on with NUL and other controls in them: every
        # command goes through the guard first.
        self._smtp_methods = {
            name: self._guarded(method) for name, method in self._smtp_methods.items()
        }

    def _guarded(self, method: Callable[[str | None], Awaitable[None]]) -> Callable[..., Any]:
        """``method`` behind the control-character guard. A method of the session's class is
        wrapped once per function and bound to each session: wrapping every command anew for
        each connection cost more than the rest of opening one."""
        func: Callable[..., Awaitable[None]] | None = getattr(method, "__func__", None)
        in_class = func is not None and getattr(type(self), func.__name__, None) is func
        if func is not None and in_class and getattr(method, "__self__", None) is self:
            guarded = _GUARDED.get(func)
            if guarded is None:  # two sessions racing here make the same wrapper: no lock
                guarded = _GUARDED[func] = _guard(func)
            return types.MethodType(guarded, self)

        # Not a method of this session's class (one set on the session itself, say): wrapped
        # for this session alone, so the shared table never holds a session's own.
        @functools.wraps(method)
        async def guarded_once(arg: str | None) -> None:
            if arg is not None and _CONTROL.search(arg):
                await self.push(str(replies.CONTROL_CHARACTER))
                return
            await method(arg)

        return guarded_once

    def __dir__(self) -> list[str]:
        # aiosmtpd scans dir() of every session as it opens: the protocol's names are enough.
        return protocol_dir(self, ("smtp_", "auth_"))

    # --- reading ----------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._in_data:
            self._last_read = self.loop.time()
        super().data_received(data)

    async def _read_line(self, separator: bytes = b"\n") -> tuple[bytes, bool]:
        """One line and whether it was longer than the reader's limit (then it is read to its
        end and returned truncated, so nothing of it is ever taken for a command)."""
        too_long = False
        head = b""
        while True:
            try:
                line: bytes = await self._reader.readuntil(separator)
            except asyncio.LimitOverrunError as exc:
                chunk = await self._reader.read(exc.consumed)
                head = head or chunk
                too_long = True
                continue
            return (head if too_long else line), too_long

    async def push(self, status: AnyStr) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            # The client is gone. aiosmtpd would write anyway, and asyncio's TLS transport
            # (3.11) then raises AttributeError from a protocol it has already let go of.
            return
        # The first line of a connection is the greeting, which carries no enhanced code.
        if isinstance(status, str) and self._greeted and not self._verbatim:
            status = replies.enhance(status)
        self._greeted = True
        if self._corked is not None:
            self._corked.append(status.encode("ascii") if isinstance(status, str) else status)
            return
        await super().push(status)

    async def _handle_client(self) -> None:
        if self.anypost.limiter.is_blocked(peer_address(self.session)):
            # A blocked address is refused before the greeting, even with a valid key.
            self._greeted = True
            await self.push(str(replies.BLOCKED))
            if self.transport is not None:
                self.transport.close()
            return
        try:
            await super()._handle_client()
        except _CLIENT_FAULTS as exc:
            # aiosmtpd re-raises a reset (or a write to a closed connection) out of the
            # session's task; nobody awaits that task, so asyncio would log "Task exception
            # was never retrieved" with a traceback (holding the session alive in the record).
            log.info("%s: connection ended: %s", peer_address(self.session), type(exc).__name__)

    def _reset_timeout(self, duration: float | None = None) -> None:
        # aiosmtpd cancels its timer and schedules a new one for every command. One timer
        # serves here: a later deadline is only noted, and the timer, when it fires, sets
        # itself again for what is left (``_timeout_cb``).
        deadline = self.loop.time() + (duration or self._timeout_duration)
        self._deadline = deadline
        handle = self._timeout_handle
        if (
            handle is not None
            and self._timer_set
            and not handle.cancelled()  # aiosmtpd cancels it when the connection is lost
            and handle.when() <= deadline
        ):
            return
        if handle is not None:
            handle.cancel()
        self._timeout_handle = self.loop.call_at(deadline, self._timeout_cb)
        self._timer_set = True

    def _timeout_cb(self) -> None:
        self._timer_set = False
        deadline = self._deadline
        if self._in_data:
            # RFC 5321 §4.5.3.2: the timeouts are per read. aiosmtpd's timer runs from the
            # last command, so during DATA every read that brought data pushes it back.
            deadline = max(deadline, self._last_read + self._timeout_duration)
        if self.loop.time() < deadline:
            self._timeout_handle = self.loop.call_at(deadline, self._timeout_cb)
            self._timer_set = True
            return
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            transport.write(f"{replies.TIMEOUT}\r\n".encode("ascii"))
        super()._timeout_cb()  # type: ignore[no-untyped-call]  # aiosmtpd leaves it untyped

    @syntax("EHLO hostname")  # aiosmtpd's HELP lists a command by this mark on its method
    async def smtp_EHLO(self, hostname: str) -> None:
        # aiosmtpd writes (and drains) each line of the EHLO reply on its own: over TLS, a
        # record and a send per line. The lines are gathered and go out in one write.
        self._verbatim = True
        self._corked = []
        try:
            await super().smtp_EHLO(hostname)
        finally:
            lines, self._corked = self._corked, None
            self._verbatim = False
        if lines:
            await self.push(b"\r\n".join(lines))

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str) -> None:
        self._verbatim = True
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._verbatim = False

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        # RFC 3207 §4.2: STARTTLS is not offered once TLS is up; aiosmtpd still answers 220 and
        # runs a second handshake inside the first.
        if self._tls_protocol is not None:
            await self.push(str(replies.TLS_ALREADY_ACTIVE))
            return
        await super().smtp_STARTTLS(arg)

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd logs a traceback for every exception and replies with its class and text.
        # A client that closes or fails during STARTTLS is not a server fault: one line.
        peer = peer_address(self.session)
        transport = self.transport
        gone = transport is None or transport.is_closing()
        # Once the client has gone, asyncio's TLS transport (3.11) raises AttributeError from
        # reads and writes: that is the disconnect too, not a fault of the server.
        if gone or isinstance(error, _CLIENT_FAULTS):
            log.info("%s: TLS or connection failure: %s", peer, type(error).__name__)
            if gone and not isinstance(error, TLSSetupException):
                # aiosmtpd's loop runs while ``transport`` is set, and every read of a closing
                # TLS transport fails again: end the session (and its sockets) here.
                self._end_session()
            return str(replies.TLS_FAILED)
        log.error("%s: unexpected error in the SMTP session", peer, exc_info=error)
        return str(replies.INTERNAL_ERROR)

    def _end_session(self) -> None:
        for transport in (self.transport, getattr(self, "_original_transport", None)):
            if isinstance(transport, asyncio.Transport):
                transport.abort()
        task = self._handler_coroutine
        if task is not None and not task.done():
            task.cancel()  # its next await raises CancelledError, which aiosmtpd lets end it

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        # RFC 4954 §8: mechanism names are case-insensitive; aiosmtpd matches them as sent.
        if arg:
            mechanism, sep, rest = arg.partition(" ")
            arg = mechanism.upper() + sep + rest
        await super().smtp_AUTH(arg)
        if self.close_after_reply and self.transport is not None:
            self.transport.close()

    async def challenge_auth(
        self,
        challenge: str | bytes,
        encode_to_b64: bool = True,
        log_client_response: bool = False,
    ) -> Any:
        # aiosmtpd reads the answer with readline(), whose ValueError on an over-long line
        # reached the client as "(ValueError) Separator is found..." and left the rest of the
        # line to be run as a command. The answer is read here to its end whatever its length.
        raw = challenge.encode() if isinstance(challenge, str) else challenge
        await self.push(b"334 " + (base64.b64encode(raw) if encode_to_b64 else raw))
        line, too_long = await self._read_line()
        if too_long:
            await self.push(str(replies.AUTH_LINE_TOO_LONG))
            return MISSING
        blob = line.strip()
        if blob == b"*":  # RFC 4954 §4: the client cancels
            await self.push(str(replies.AUTH_ABORTED))
            return MISSING
        try:
            return base64.b64decode(blob, validate=True)
        except (binascii.Error, ValueError):
            await self.push(str(replies.AUTH_MALFORMED))
            return MISSING

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        if len(args) == 1:
            blob = await self.challenge_auth("")
            if not isinstance(blob, bytes):
                return AuthResult(success=False, handled=True)
        else:
            try:
                blob = base64.b64decode(args[1].encode(), validate=True)
            except (binascii.Error, ValueError):
                await self.push(str(replies.AUTH_MALFORMED))
                return AuthResult(success=False, handled=True)
        fields = blob.split(b"\x00")
        if len(fields) != 3:
            await self.push(str(replies.AUTH_MALFORMED))
            return AuthResult(success=False, handled=True)
        result: AuthResult = self._authenticate("PLAIN", PlainCredentials(*fields))
        return result

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        assert self.session is not None and self.envelope is not None
        ready = (
            self.session.host_name
            and self.session.authenticated
            and self.envelope.mail_from is None
        )
        if ready and arg is not None and _NULL_PATH.match(arg):
            await self.push(str(replies.SENDER_NOT_PERMITTED))
            return
        if arg is not None:
            arg = _TRAILING_DOT.sub(r"\1>", arg, count=1)
            without = self._without_auth_parameter(arg)
            if without is None:
                await self.push(str(replies.BAD_AUTH_PARAM))
                return
            arg = without
        await super().smtp_MAIL(arg)

    def _without_auth_parameter(self, arg: str) -> str | None:
        """MAIL's argument without its ``AUTH=`` parameter, or None when that one is malformed.

        RFC 4954 §5: a server that advertises AUTH accepts the parameter; one that does not
        trust the client's claim acts as if it were ``AUTH=<>``, which is what ignoring it does
        here (nothing is relayed onwards with it). aiosmtpd refuses it with 555.
        """
        if arg[:5].upper() != "FROM:" or "AUTH=" not in arg.upper():
            return arg
        rest = arg[5:].strip()
        address, params = self._getaddr(rest)
        if not address or not params:
            return arg
        tokens = params.split()
        auth = [t for t in tokens if t[:5].upper() == "AUTH="]
        if not auth:
            return arg
        if len(auth) > 1 or not _AUTH_VALUE.fullmatch(auth[0][5:]):
            return None
        kept = [t for t in tokens if t[:5].upper() != "AUTH="]
        return " ".join(["FROM:" + rest[: len(rest) - len(params)].rstrip(), *kept])

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's address parse, unchanged in what it accepts, without its cost.

        aiosmtpd 1.4 defines a ``typing.Protocol`` class inside ``_getaddr`` on every call (a
        new ABC per MAIL and RCPT), which was the largest single cost of a submission here;
        the email package's reading of the usual ``<local@domain>`` costs 45 µs more, which
        ``simple_path`` spares.
        """
        if not arg:
            return "", ""
        simple = simple_path(arg)
        if simple is not None:
            addr, rest = simple
        else:
            try:
                parsed, rest = (
                    get_angle_addr(arg) if arg.lstrip().startswith("<") else get_addr_spec(arg)
                )
            except HeaderParseError:
                return None, None
            addr = parsed.addr_spec
        local = addr.rpartition("@")[0]
        if self.local_part_limit and len(local) > self.local_part_limit:
            return None, None
        return addr, rest

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        self._in_data = True
        self._last_read = self.loop.time()
        try:
            await self._receive_data()
        finally:
            self._in_data = False
            # The client is idle from the end of its data on, not from the DATA command: the
            # timer aiosmtpd set then would otherwise cut it soon after a long upload. Not
            # once the connection is lost (the data ended with it): no timer for a session
            # that has none.
            if self.transport is not None:
                self._reset_timeout()

    async def _receive_data(self) -> None:
        """Read the message up to <CRLF>.<CRLF>, the only end of data (RFC 5321 §4.1.1.4).

        Bare line endings, as Postfix >= 3.9 does by default (smtpd_forbid_bare_newline =
        normalize): a line ending in a bare LF is taken as ending in CRLF and stored so, so
        neither the stored nor a relayed copy ever holds a bare LF. A line of a lone dot next
        to a bare LF (<LF>.<LF>, <CRLF>.<LF>, <LF>.<CRLF>) is what an SMTP smuggling attempt
        looks like, and would end the message for a lenient reader: the whole message is
        refused. A bare CR (no client needs one; <CR>.<CR> is a smuggling form) is refused too.
        """
        assert self.envelope is not None
        limit: int = self.data_size_limit or 0
        line_limit = self.line_length_limit
        data = bytearray()
        size = 0
        failure: replies.Reply | None = None
        pending = b""  # the start of a line whose end has not arrived yet
        overlong = False  # pending belongs to a line already refused as too long
        while self.transport is not None:
            try:
                chunk: bytes = await self._reader.readuntil(b"\r\n")
            except asyncio.LimitOverrunError as exc:
                chunk = await self._reader.read(exc.consumed)
            if chunk == b".\r\n" and not pending and not overlong:
                break
            if not pending and chunk.endswith(b"\r\n") and _PLAIN_LINE.fullmatch(chunk):
                lines = [chunk]  # the usual case: one CRLF line, nothing else in it
            else:
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                lines = [line + b"\n" for line in lines]
            for line in lines:
                content = line[:-2] if line.endswith(b"\r\n") else line[:-1]
                if overlong:
                    overlong = False
                    continue
                if content[:1] == b".":
                    if content == b"." and failure is None:
                        failure = replies.SMUGGLING  # a lone dot next to a bare LF
                    content = content[1:]  # RFC 5321 §4.5.2 transparency
                if failure is None and b"\r" in content:
                    failure = replies.BARE_CR
                if failure is None and len(content) > line_limit:
                    failure = replies.LINE_TOO_LONG
                size += len(content) + 2
                if failure is None and limit and size > limit:
                    failure = replies.TOO_BIG
                if failure is None:
                    data += content
                    data += b"\r\n"
                elif data:
                    data = bytearray()  # release the buffer: the message is refused anyway
            if len(pending) > line_limit:
                # A line longer than any allowed: drop what came of it, refuse the message.
                failure = failure or replies.LINE_TOO_LONG
                size += len(pending)
                pending = b""
                overlong = True
        if failure is not None:
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            await self.push(str(failure))
            return
        status = await self.anypost.submit(self.session, self.envelope, data)
        del data
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push(status)
