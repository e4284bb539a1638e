"""The aiosmtpd handler: thin hooks that decode arguments, ask ``policy`` and ``headers``, and
answer from the reply catalogue."""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import Any

from aiosmtpd.smtp import MISSING, AuthResult, LoginPassword

from . import replies
from .addresses import Mailbox
from .config import ApiKey, ServerConfig
from .headers import (
    ControlValues,
    HeaderBlock,
    HeaderError,
    control_values,
    parse_header_block,
    sender_mailboxes,
    stripped_header_bytes,
)
from .limits import AuthFailureLimiter
from .message_ids import IdGenerator
from .method_tables import protocol_dir
from .policy import authenticate, domain_permitted, split_address
from .relay import Relayer
from .spool import Spool, Submission

log = logging.getLogger("reference_server")


@dataclass(frozen=True)
class PlainCredentials:
    """AUTH PLAIN's three fields (RFC 4616); aiosmtpd's own parser drops the authzid."""

    authzid: bytes
    login: bytes
    password: bytes


def peer_address(session: Any) -> str:
    peer = getattr(session, "peer", None)
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer)


class AnypostHandler:
    def __init__(
        self,
        config: ServerConfig,
        spool: Spool,
        limiter: AuthFailureLimiter,
        ids: IdGenerator | None = None,
        relayer: Relayer | None = None,
    ) -> None:
        self.config = config
        self.spool = spool
        self.limiter = limiter
        self.ids = ids or IdGenerator()
        self.relayer = relayer
        self.in_flight = 0

    def __dir__(self) -> list[str]:
        # aiosmtpd scans dir() of the handler for every session it opens (``method_tables``).
        return protocol_dir(self, ("handle_", "auth_"))

    # --- EHLO -----------------------------------------------------------------------------
    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        tls = session.ssl is not None
        lines = [
            self.config.hostname,
            f"SIZE {self.config.limits.message_size}",
            "8BITMIME",
            "PIPELINING",
            "ENHANCEDSTATUSCODES",
        ]
        # RFC 3207 §4.2: no STARTTLS after TLS; RFC 4954 §4: no plaintext mechanism before it.
        lines.append("AUTH PLAIN LOGIN" if tls else "STARTTLS")
        lines.append("HELP")
        return [("250 " if i == len(lines) - 1 else "250-") + t for i, t in enumerate(lines)]

    # aiosmtpd 1.4 reads this hook's signature on every connection, to tell its deprecated
    # four-argument form (44 µs with inspect's full derivation, 14 µs from one stored here).
    handle_EHLO.__signature__ = inspect.signature(handle_EHLO)  # type: ignore[attr-defined]

    # --- AUTH -----------------------------------------------------------------------------
    async def handle_AUTH(self, server: Any, session: Any, envelope: Any, args: list[str]) -> Any:
        if envelope.mail_from is not None:
            # RFC 4954 §4: "An AUTH command issued during a mail transaction MUST be rejected".
            return str(replies.AUTH_IN_TRANSACTION)
        return MISSING

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        address = peer_address(session)
        if self.limiter.is_blocked(address):
            server.close_after_reply = True
            return AuthResult(success=False, handled=False, message=str(replies.BLOCKED))
        if isinstance(auth_data, PlainCredentials):
            key = self.check_key(auth_data.login, auth_data.password, auth_data.authzid)
        elif isinstance(auth_data, LoginPassword):
            key = self.check_key(auth_data.login, auth_data.password, b"")
        else:
            key = None
        if key is not None:
            return AuthResult(success=True, auth_data=key, message=str(replies.AUTH_OK))
        if self.limiter.record_failure(address):
            log.warning("auth-failure block tripped for %s", address)
            server.close_after_reply = True
            return AuthResult(success=False, handled=False, message=str(replies.BLOCKED))
        return AuthResult(success=False, handled=False, message=str(replies.AUTH_INVALID))

    def check_key(self, login: bytes, password: bytes, authzid: bytes) -> ApiKey | None:
        return authenticate(self.config, login, password, authzid)

    def sender_allowed(self, key: ApiKey, domain: str) -> bool:
        """May this key use this domain in MAIL FROM (and, by default, in From)?"""
        return domain_permitted(self.config, key, domain)

    def author_allowed(self, key: ApiKey, domain: str) -> bool:
        return domain_permitted(self.config, key, domain)

    # --- envelope -------------------------------------------------------------------------
    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        key: ApiKey = session.auth_data
        parts = split_address(address)
        if parts is None:
            return str(replies.SENDER_SYNTAX)
        if not self.sender_allowed(key, parts[1]):
            # One generic text for unverified and not-permitted: never reveal another team's.
            return str(replies.SENDER_NOT_PERMITTED)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return str(replies.SENDER_OK)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        parts = split_address(address)
        if parts is None:
            return str(replies.RCPT_SYNTAX)
        # Accepted recipients already passed split_address, so they all have a domain.
        if any(split_address(a) == parts for a in envelope.rcpt_tos):
            # The same recipient twice is one recipient with one id (BRIEF §4).
            return str(replies.RCPT_OK)
        if len(envelope.rcpt_tos) >= self.config.limits.max_recipients:
            return str(replies.TOO_MANY_RCPTS)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return str(replies.RCPT_OK)

    def authors(self, block: HeaderBlock) -> list[Mailbox]:
        return sender_mailboxes(block)

    def read_control(self, block: HeaderBlock) -> ControlValues:
        return control_values(block)

    def delivered_headers(self, block: HeaderBlock) -> bytes:
        return stripped_header_bytes(block)

    def new_ids(self, count: int) -> tuple[str, ...]:
        return tuple(self.ids.new_id() for _ in range(count))

    def accepted_reply(self, ids: tuple[str, ...]) -> str:
        return replies.accepted(list(ids))

    # --- message --------------------------------------------------------------------------
    async def submit(self, session: Any, envelope: Any, data: bytearray) -> str:
        """Judge and store a complete message; the reply to the final dot."""
        key: ApiKey = session.auth_data
        block = parse_header_block(data)
        try:
            authors = self.authors(block)
        except HeaderError:
            return str(replies.BAD_FROM)
        if not all(self.author_allowed(key, a.domain) for a in authors):
            return str(replies.FROM_NOT_PERMITTED)
        try:
            control = self.read_control(block)
        except HeaderError:
            return str(replies.BAD_CONTROL_HEADER)
        recipients = tuple(envelope.rcpt_tos)
        ids = self.new_ids(len(recipients))
        submission = Submission(envelope.mail_from, recipients, ids, key.team, key.key_id, control)
        parts: list[bytes | memoryview] = [
            self.delivered_headers(block),
            memoryview(data)[block.body_offset :],
        ]
        self.in_flight += 1
        try:
            await self.spool.store_async(submission, parts)
        except Exception:
            log.exception("could not store a message; answering 451")
            return str(replies.STORAGE_FAILED)
        finally:
            self.in_flight -= 1
        if self.relayer is not None:
            self.relayer.relay(envelope.mail_from, recipients, b"".join(parts))
        return self.accepted_reply(ids)
