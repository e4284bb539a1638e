"""``AnypostSMTP``: aiosmtpd's SMTP protocol with the contract's framing and replies.

What it changes in aiosmtpd, and why:
- every 2xx/4xx/5xx line carries an enhanced code (``replies.enhance``), greeting and EHLO aside;
- a blocked client address is greeted with 421 and dropped;
- an idle client gets ``421 4.4.2`` before the close (RFC 5321 §4.5.3.2);
- AUTH PLAIN keeps the authzid, so a foreign identity can be refused (RFC 4616 §2);
- ``MAIL FROM:<>`` is refused with 550 5.7.1: the contract requires a verified domain;
- DATA counts size as RFC 1870 §5 does (no stuffed dots), buffers at most the limit, and refuses
  bare CR or LF so ``<LF>.<LF>`` can never end or smuggle a message (RFC 5321 §4.1.1.4).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP, AuthResult

from . import replies
from .handler import AnypostHandler, PlainCredentials, peer_address

_NULL_PATH = re.compile(r"^\s*FROM:\s*<>", re.IGNORECASE)
# aiosmtpd's address parser refuses a root-label trailing dot, which the contract ignores.
_TRAILING_DOT = re.compile(r"(@[^\s<>@]+?)\.+>")


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

    async def push(self, status: AnyStr) -> None:
        # The first line of a connection is the greeting, which carries no enhanced code.
        if isinstance(status, str) and self._greeted and not self._verbatim:
            status = replies.enhance(status)
        self._greeted = True
        await super().push(status)

    async def _handle_client(self) -> None:
        if self.anypost.limiter.is_blocked(peer_address(self.session)):
            # A blocked address is refused before the greeting, even with a valid key.
            self._greeted = True
            await self.push(str(replies.BLOCKED))
            if self.transport is not None:
                self.transport.close()
            return
        await super()._handle_client()

    def _timeout_cb(self) -> None:
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            transport.write(f"{replies.TIMEOUT}\r\n".encode("ascii"))
        super()._timeout_cb()  # type: ignore[no-untyped-call]  # aiosmtpd leaves it untyped

    async def smtp_EHLO(self, hostname: str) -> None:
        self._verbatim = True
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._verbatim = False

    async def smtp_HELO(self, hostname: str) -> None:
        self._verbatim = True
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._verbatim = False

    async def smtp_AUTH(self, arg: str) -> None:
        await super().smtp_AUTH(arg)
        if self.close_after_reply and self.transport is not None:
            self.transport.close()

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
        await super().smtp_MAIL(arg)

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
        limit: int = self.data_size_limit or 0
        data = bytearray()
        size = 0
        failure: replies.Reply | None = None
        mid_line = False  # inside a line longer than the reader's limit
        while self.transport is not None:
            try:
                line: bytes = await self._reader.readuntil(b"\r\n")
                continues = False
            except asyncio.LimitOverrunError as exc:
                line = await self._reader.read(exc.consumed)
                continues = True
                failure = failure or replies.LINE_TOO_LONG
            if not mid_line and line == b".\r\n":
                break
            if not mid_line and line[:1] == b".":
                line = line[1:]  # RFC 5321 §4.5.2 transparency
            mid_line = continues
            size += len(line)
            if failure is None and limit and size > limit:
                failure = replies.TOO_BIG
            if failure is None and (line.count(b"\n") != 1 or line.count(b"\r") != 1):
                failure = replies.BARE_LINE_ENDING
            if failure is None:
                data += line
            elif data:
                data = bytearray()  # release the buffer: the message is refused anyway
        if failure is not None:
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            await self.push(str(failure))
            return
        status = await self.anypost.submit(self.session, self.envelope, data)
        del data
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push(status)
