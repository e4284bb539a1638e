"""Server variants that each break one rule of the contract, to prove the scenarios can fail.

Each variant is the reference server with one overridden method or option. ``VARIANTS`` maps a
variant's name to its classes and options; ``CATALOGUE_PROOF`` maps every scenario of the
catalogue to the variant it must fail against.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import AuthResult

from reference_server import replies
from reference_server.config import ApiKey
from reference_server.handler import AnypostHandler
from reference_server.headers import ControlValues, HeaderBlock, HeaderError, sender_mailboxes
from reference_server.limits import AuthFailureLimiter
from reference_server.session import AnypostSMTP

SMTP_OPTIONS = {"require_starttls", "auth_required", "auth_require_tls", "auth_exclude_mechanism"}


@dataclass(frozen=True)
class Variant:
    handler: type[AnypostHandler] = AnypostHandler
    smtp: type[AnypostSMTP] = AnypostSMTP
    options: dict[str, Any] = field(default_factory=dict)


def smtp_with(**options: Any) -> type[AnypostSMTP]:
    class Configured(AnypostSMTP):
        def __init__(self, handler: AnypostHandler, **kwargs: Any) -> None:
            kwargs.update(options)
            super().__init__(handler, **kwargs)

    return Configured


# --- TLS -----------------------------------------------------------------------------------
class NoStarttlsOffered(AnypostHandler):
    """A port set up without its certificate: EHLO does not offer STARTTLS."""

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        lines = await super().handle_EHLO(server, session, envelope, hostname, responses)
        kept = [line for line in lines if "STARTTLS" not in line.upper()]
        return [*[line.replace("250 ", "250-", 1) for line in kept[:-1]], kept[-1]]


class AdvertisesStarttlsAfterTls(AnypostHandler):
    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        lines = await super().handle_EHLO(server, session, envelope, hostname, responses)
        return [*lines[:-1], "250-STARTTLS", lines[-1]] if session.ssl else lines


class KeepsSessionAcrossTls(AnypostSMTP):
    def _create_session(self) -> Any:
        # RFC 3207 §4.2 broken: the pre-TLS session (its EHLO) survives the handshake.
        return self.session if self.session is not None else super()._create_session()


class JudgesCredentialsBeforeTls(AnypostSMTP):
    """Refuses MAIL until AUTH, but evaluates AUTH in clear (535 to a bad secret): STARTTLS
    merely offered, as aiosmtpd does with ``auth_require_tls=False``."""

    def __init__(self, handler: AnypostHandler, **kwargs: Any) -> None:
        kwargs.update(require_starttls=False, auth_require_tls=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # aiosmtpd warns of exactly this configuration
            super().__init__(handler, **kwargs)


class RunsInjectedCommands(AnypostSMTP):
    def connection_made(self, transport: Any) -> None:
        pending = bytes(self._reader._buffer) if self.transport is not None else b""
        super().connection_made(transport)
        if pending:
            self._reader._buffer.extend(pending)  # plaintext read before TLS, run inside it


# --- AUTH ----------------------------------------------------------------------------------
class OnlyFullAccess(AnypostHandler):
    def check_key(self, login: bytes, password: bytes, authzid: bytes) -> ApiKey | None:
        key = super().check_key(login, password, authzid)
        return key if key is not None and key.permission == "full_access" else None


class OnlySendOnly(AnypostHandler):
    def check_key(self, login: bytes, password: bytes, authzid: bytes) -> ApiKey | None:
        key = super().check_key(login, password, authzid)
        return key if key is not None and key.permission == "send_only" else None


class AcceptsAnyKey(AnypostHandler):
    def check_key(self, login: bytes, password: bytes, authzid: bytes) -> ApiKey | None:
        return self.config.keys[0]


class IgnoresUsername(AnypostHandler):
    def check_key(self, login: bytes, password: bytes, authzid: bytes) -> ApiKey | None:
        return super().check_key(b"anypost", password, authzid)


class IgnoresAuthzid(AnypostHandler):
    def check_key(self, login: bytes, password: bytes, authzid: bytes) -> ApiKey | None:
        return super().check_key(login, password, b"")


class IgnoresPermission(AnypostHandler):
    def check_key(self, login: bytes, password: bytes, authzid: bytes) -> ApiKey | None:
        from reference_server.config import hash_secret

        digest = hash_secret(password)
        return next((k for k in self.config.keys if k.secret_sha256 == digest), None)


class AnonymousIsFirstKey(AnypostHandler):
    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if session.auth_data is None:
            session.auth_data = self.config.keys[0]  # mail without AUTH goes through
        return await super().handle_MAIL(server, session, envelope, address, options)


class PlainNeedsInitialResponse(AnypostSMTP):
    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        if len(args) == 1:
            await self.push("535 5.7.8 Authentication credentials invalid")
            return AuthResult(success=False, handled=True)
        return await super().auth_PLAIN(_, args)


class BadBase64Is535(AnypostSMTP):
    async def push(self, status: Any) -> None:
        if isinstance(status, str) and status.startswith("501 5.5.2"):
            status = str(replies.AUTH_INVALID)
        await super().push(status)


class AllowsSecondAuth(AnypostSMTP):
    async def smtp_AUTH(self, arg: str) -> None:
        assert self.session is not None
        self.session.authenticated = False
        await super().smtp_AUTH(arg)


# --- block ---------------------------------------------------------------------------------
class _NeverTrips(AuthFailureLimiter):
    def record_failure(self, address: str) -> bool:
        return False


class _NeverExpires(AuthFailureLimiter):
    def record_failure(self, address: str) -> bool:
        tripped = super().record_failure(address)
        if tripped:
            self._blocked_until[address] = self._clock() + 3600  # "temporarily" broken
        return tripped


class NeverBlocks(AnypostHandler):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limiter = _NeverTrips(self.limiter.threshold, self.limiter.cooldown)


class BlocksForever(AnypostHandler):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limiter = _NeverExpires(self.limiter.threshold, self.limiter.cooldown)


# --- senders -------------------------------------------------------------------------------
class EnvelopeUnchecked(AnypostHandler):
    def sender_allowed(self, key: ApiKey, domain: str) -> bool:
        return True


class RefusesEverySender(AnypostHandler):
    def sender_allowed(self, key: ApiKey, domain: str) -> bool:
        return False


class AllowedDomainsIgnored(AnypostHandler):
    def sender_allowed(self, key: ApiKey, domain: str) -> bool:
        return domain in self.config.team(key.team).verified_domains

    author_allowed = sender_allowed


class OnlyPrimaryDomain(AnypostHandler):
    def sender_allowed(self, key: ApiKey, domain: str) -> bool:
        return domain == min(self.config.team(key.team).verified_domains, key=len)

    author_allowed = sender_allowed


class SuffixMatching(AnypostHandler):
    def sender_allowed(self, key: ApiKey, domain: str) -> bool:
        return any(
            domain.startswith(d) or domain.endswith(d)
            for d in self.config.team(key.team).verified_domains
        )


class SubdomainsAllowed(AnypostHandler):
    def sender_allowed(self, key: ApiKey, domain: str) -> bool:
        return any(
            domain == d or domain.endswith("." + d)
            for d in self.config.team(key.team).verified_domains
        )


class AcceptsNullSender(AnypostSMTP):
    async def smtp_MAIL(self, arg: str | None) -> None:
        if arg is not None and re.match(r"\s*FROM:\s*<>", arg, re.I):
            assert self.envelope is not None
            self.envelope.mail_from = ""
            await self.push("250 2.1.0 Sender OK")
            return
        await super().smtp_MAIL(arg)


class TrustsSourceRoute(AnypostSMTP):
    async def smtp_MAIL(self, arg: str | None) -> None:
        if arg is not None:
            arg = re.sub(r"<@([^:,>]+)[^:]*:[^@>]+@[^>]+>", r"<probe@\1>", arg)
        await super().smtp_MAIL(arg)


# --- From ----------------------------------------------------------------------------------
class FromUnchecked(AnypostHandler):
    def author_allowed(self, key: ApiKey, domain: str) -> bool:
        return True


class FromAllowedDomainsIgnored(AnypostHandler):
    def author_allowed(self, key: ApiKey, domain: str) -> bool:
        return domain in self.config.team(key.team).verified_domains


class FromSuffixMatching(AnypostHandler):
    """Checks the envelope exactly but matches the From domain by suffix or prefix."""

    def author_allowed(self, key: ApiKey, domain: str) -> bool:
        return any(
            domain.startswith(d) or domain.endswith(d)
            for d in self.config.team(key.team).verified_domains
        )


class FromSubdomainsAllowed(AnypostHandler):
    """Checks the envelope exactly but lets a From on any subdomain of a verified one."""

    def author_allowed(self, key: ApiKey, domain: str) -> bool:
        return any(
            domain == d or domain.endswith("." + d)
            for d in self.config.team(key.team).verified_domains
        )


class NaiveFromParser(AnypostHandler):
    """Takes the first thing that looks like an address in the first From line."""

    def authors(self, block: HeaderBlock) -> list[Any]:
        froms = block.named("from")
        match = re.search(r"[\w.+-]+@([\w-]+(?:\.[\w-]+)+)", froms[0].value) if froms else None
        if match is None:
            return []

        class Found:
            domain = match.group(1)

        return [Found()]


class AcceptsTwoFrom(AnypostHandler):
    """Checks the mailboxes of every From header, but lets a message have several."""

    def authors(self, block: HeaderBlock) -> list[Any]:
        froms = block.named("from")
        if len(froms) < 2:
            return super().authors(block)
        found: list[Any] = []
        for header in froms:
            found += super().authors(HeaderBlock((header,), block.body_offset))
        return found


class AcceptsMissingFrom(AnypostHandler):
    """Lets a message without From through, adding nothing (the policy declared: refuse)."""

    def authors(self, block: HeaderBlock) -> list[Any]:
        return super().authors(block) if block.named("from") else []


class IgnoresSenderHeader(AnypostHandler):
    def authors(self, block: HeaderBlock) -> list[Any]:
        without = HeaderBlock(
            tuple(f for f in block.fields if f.name != "sender"), block.body_offset
        )
        return list(sender_mailboxes(without))


# --- size ----------------------------------------------------------------------------------
class OffByOne(AnypostSMTP):
    def __init__(self, handler: AnypostHandler, **kwargs: Any) -> None:
        kwargs["data_size_limit"] = kwargs["data_size_limit"] - 1
        super().__init__(handler, **kwargs)


class SizeUnenforced(AnypostSMTP):
    def __init__(self, handler: AnypostHandler, **kwargs: Any) -> None:
        kwargs["data_size_limit"] = kwargs["data_size_limit"] * 2
        super().__init__(handler, **kwargs)


class SizeNotAdvertised(AnypostHandler):
    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        lines = await super().handle_EHLO(server, session, envelope, hostname, responses)
        return [line for line in lines if "SIZE" not in line]


# --- headers -------------------------------------------------------------------------------
class NoHeaderRules(AnypostHandler):
    def read_control(self, block: HeaderBlock) -> ControlValues:
        try:
            return super().read_control(block)
        except HeaderError:
            return ControlValues()


class RefusesControlHeaders(AnypostHandler):
    def read_control(self, block: HeaderBlock) -> ControlValues:
        if any(f.name.startswith("x-anypost") or f.name == "x-campaign" for f in block.fields):
            raise HeaderError("control", "no control headers here")
        return ControlValues()


class TagOnlyOnce(AnypostHandler):
    def read_control(self, block: HeaderBlock) -> ControlValues:
        if len(block.named("x-anypost-tag")) > 1:
            raise HeaderError("control", "one tag only")
        return super().read_control(block)


class NoUnfolding(AnypostHandler):
    def read_control(self, block: HeaderBlock) -> ControlValues:
        import json

        for f in block.named("x-anypost-tags"):
            raw = f.raw.split(b":", 1)[1].decode().strip()
            try:
                json.loads(raw)
            except ValueError:
                raise HeaderError("control", "not JSON as it stands") from None
        return super().read_control(block)


class NoStripping(AnypostHandler):
    def delivered_headers(self, block: HeaderBlock) -> bytes:
        return b"".join(f.raw for f in block.fields)


# --- ids -----------------------------------------------------------------------------------
class NoIds(AnypostHandler):
    def accepted_reply(self, ids: tuple[str, ...]) -> str:
        return "250 2.0.0 OK"


class OneIdPerMessage(AnypostHandler):
    def accepted_reply(self, ids: tuple[str, ...]) -> str:
        return f"250 2.0.0 OK ids={ids[0]}"


class OneLongLine(AnypostHandler):
    def accepted_reply(self, ids: tuple[str, ...]) -> str:
        return "250 2.0.0 OK ids=" + " ".join(ids)


class RepeatsIds(AnypostHandler):
    """Treats a resubmission as a replay (idempotency the contract rules out): it stores the
    message, but answers with the ids it first gave for that many recipients."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._first: dict[int, tuple[str, ...]] = {}

    def accepted_reply(self, ids: tuple[str, ...]) -> str:
        return super().accepted_reply(self._first.setdefault(len(ids), ids))


class CountsDuplicateRcpts(AnypostHandler):
    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        envelope.rcpt_tos.append(address)
        return str(replies.RCPT_OK)


# --- sessions ------------------------------------------------------------------------------
class OneMessagePerConnection(AnypostSMTP):
    async def smtp_DATA(self, arg: str) -> None:
        await super().smtp_DATA(arg)
        if self.transport is not None:
            self.transport.close()


class RcptWithoutMailIs550(AnypostSMTP):
    async def smtp_RCPT(self, arg: str | None) -> None:
        assert self.envelope is not None
        if (
            self.envelope.mail_from is None
            and self.session is not None
            and self.session.authenticated
        ):
            await self.push("550 5.7.1 No")
            return
        await super().smtp_RCPT(arg)


class NoEnhancedCodes(AnypostSMTP):
    async def push(self, status: Any) -> None:
        if isinstance(status, str) and self._greeted:
            status = replies.enhance(status)
            status = re.sub(r"^(\d{3}[ -])[245]\.\d{1,3}\.\d{1,3} ", r"\1", status, flags=re.M)
            self._verbatim = True
            try:
                await super().push(status)
            finally:
                self._verbatim = False
            return
        await super().push(status)


class LenientEndOfData(AnypostSMTP):
    """Takes <LF>.<LF> and <CR>.<CR> as end of data: the smuggling bug of CVE-2023-51764."""

    async def smtp_DATA(self, arg: str) -> None:
        original = self._reader.readuntil

        async def readuntil(separator: bytes = b"\n") -> bytes:
            line: bytes = await original(separator)
            for marker in (b"\n.\n", b"\r.\r"):
                at = line.find(marker)
                if at >= 0:
                    rest = line[at + len(marker) :]
                    self._reader._buffer[:0] = rest  # what follows is read as commands
                    return b".\r\n"  # the end of data, as the buggy server sees it
            return line

        # The bug lives in how lines are read, so the variant has to replace the reader's.
        self._reader.readuntil = readuntil  # type: ignore[method-assign,assignment]
        try:
            await super().smtp_DATA(arg)
        finally:
            self._reader.readuntil = original  # type: ignore[method-assign]


# --- the wire ------------------------------------------------------------------------------
class BareLfReplies(AnypostSMTP):
    """Ends every reply line with a bare LF (RFC 5321 §2.3.8 wants CRLF)."""

    async def push(self, status: Any) -> None:
        writer = self._writer
        original = writer.write

        def write(data: bytes) -> None:
            original(data[:-2] + b"\n" if data.endswith(b"\r\n") else data)

        writer.write = write  # type: ignore[method-assign]
        try:
            await super().push(status)
        finally:
            writer.write = original  # type: ignore[method-assign]


class _Verbatim(AnypostSMTP):
    async def push_verbatim(self, status: str) -> None:
        self._verbatim = True
        try:
            await self.push(status)
        finally:
            self._verbatim = False


class NoopWithoutSeparator(_Verbatim):
    async def smtp_NOOP(self, arg: str) -> None:
        await self.push_verbatim("250OK")  # RFC 5321 §4.2: the code, then SP or "-"


class NoopWithoutSpace(_Verbatim):
    async def smtp_NOOP(self, arg: str) -> None:
        await self.push_verbatim("250")  # §4.2.1: servers SHOULD send the SP anyway


class NoopAnsweredTwice(AnypostSMTP):
    async def smtp_NOOP(self, arg: str) -> None:
        await super().smtp_NOOP(arg)
        await super().smtp_NOOP(arg)  # §4.2: exactly one reply per command


class LosesPipelinedCommands(AnypostSMTP):
    """Drops what the client sent after MAIL before answering it (RFC 2920 §3.2: never flush
    the input buffer)."""

    async def smtp_MAIL(self, arg: str) -> None:
        self._reader._buffer.clear()
        await super().smtp_MAIL(arg)


class MixedCodesInEhlo(AnypostHandler):
    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        lines = await super().handle_EHLO(server, session, envelope, hostname, responses)
        return [*lines[:-1], "251-X-MIXED", lines[-1]]  # §4.2.1: one code on every line


VARIANTS: dict[str, Variant] = {
    "plaintext-open": Variant(
        handler=AnonymousIsFirstKey,
        options={"require_starttls": False, "auth_required": False, "auth_require_tls": False},
    ),
    "no-starttls-offered": Variant(handler=NoStarttlsOffered),
    "judges-credentials-before-tls": Variant(smtp=JudgesCredentialsBeforeTls),
    "advertises-starttls-after-tls": Variant(handler=AdvertisesStarttlsAfterTls),
    "keeps-session-across-tls": Variant(smtp=KeepsSessionAcrossTls),
    "runs-injected-commands": Variant(smtp=RunsInjectedCommands),
    "no-ids": Variant(handler=NoIds),
    "only-full-access": Variant(handler=OnlyFullAccess),
    "only-send-only": Variant(handler=OnlySendOnly),
    "no-auth-login": Variant(options={"auth_exclude_mechanism": ["LOGIN"]}),
    "plain-needs-initial-response": Variant(smtp=PlainNeedsInitialResponse),
    "accepts-any-key": Variant(handler=AcceptsAnyKey),
    "ignores-username": Variant(handler=IgnoresUsername),
    "ignores-authzid": Variant(handler=IgnoresAuthzid),
    "ignores-permission": Variant(handler=IgnoresPermission),
    "auth-not-required": Variant(handler=AnonymousIsFirstKey, options={"auth_required": False}),
    "bad-base64-is-535": Variant(smtp=BadBase64Is535),
    "allows-second-auth": Variant(smtp=AllowsSecondAuth),
    "never-blocks": Variant(handler=NeverBlocks),
    "blocks-forever": Variant(handler=BlocksForever),
    "envelope-unchecked": Variant(handler=EnvelopeUnchecked),
    "refuses-every-sender": Variant(handler=RefusesEverySender),
    "allowed-domains-ignored": Variant(handler=AllowedDomainsIgnored),
    "only-primary-domain": Variant(handler=OnlyPrimaryDomain),
    "suffix-matching": Variant(handler=SuffixMatching),
    "subdomains-allowed": Variant(handler=SubdomainsAllowed),
    "from-suffix-matching": Variant(handler=FromSuffixMatching),
    "from-subdomains-allowed": Variant(handler=FromSubdomainsAllowed),
    "accepts-null-sender": Variant(smtp=AcceptsNullSender),
    "trusts-source-route": Variant(smtp=TrustsSourceRoute),
    "from-unchecked": Variant(handler=FromUnchecked),
    "from-allowed-domains-ignored": Variant(handler=FromAllowedDomainsIgnored),
    "naive-from-parser": Variant(handler=NaiveFromParser),
    "accepts-two-from": Variant(handler=AcceptsTwoFrom),
    "accepts-missing-from": Variant(handler=AcceptsMissingFrom),
    "ignores-sender-header": Variant(handler=IgnoresSenderHeader),
    "size-off-by-one": Variant(smtp=OffByOne),
    "size-unenforced": Variant(smtp=SizeUnenforced),
    "size-not-advertised": Variant(handler=SizeNotAdvertised),
    "no-header-rules": Variant(handler=NoHeaderRules),
    "refuses-control-headers": Variant(handler=RefusesControlHeaders),
    "tag-only-once": Variant(handler=TagOnlyOnce),
    "no-unfolding": Variant(handler=NoUnfolding),
    "no-stripping": Variant(handler=NoStripping),
    "one-id-per-message": Variant(handler=OneIdPerMessage),
    "one-long-line": Variant(handler=OneLongLine),
    "repeats-ids": Variant(handler=RepeatsIds),
    "counts-duplicate-rcpts": Variant(handler=CountsDuplicateRcpts),
    "one-message-per-connection": Variant(smtp=OneMessagePerConnection),
    "rcpt-without-mail-is-550": Variant(smtp=RcptWithoutMailIs550),
    "no-enhanced-codes": Variant(smtp=NoEnhancedCodes),
    "lenient-end-of-data": Variant(smtp=LenientEndOfData),
    "bare-lf-replies": Variant(smtp=BareLfReplies),
    "noop-without-separator": Variant(smtp=NoopWithoutSeparator),
    "noop-without-space": Variant(smtp=NoopWithoutSpace),
    "noop-answered-twice": Variant(smtp=NoopAnsweredTwice),
    "mixed-codes-in-ehlo": Variant(handler=MixedCodesInEhlo),
    "loses-pipelined-commands": Variant(smtp=LosesPipelinedCommands),
}

CATALOGUE_PROOF: dict[str, str] = {
    "starttls/plaintext-greeting-offers-starttls": "no-starttls-offered",
    "starttls/upgrade-succeeds": "advertises-starttls-after-tls",
    "starttls/auth-refused-before-tls": "judges-credentials-before-tls",
    "starttls/auth-login-refused-before-tls": "plaintext-open",
    "starttls/mail-refused-before-tls": "plaintext-open",
    "starttls/rcpt-and-data-refused-before-tls": "plaintext-open",
    "starttls/ehlo-required-after-tls": "keeps-session-across-tls",
    "starttls/injected-commands-discarded": "runs-injected-commands",
    "starttls/authenticated-submission": "no-ids",
    "auth/send-only-key-plain": "only-full-access",
    "auth/send-only-key-login": "no-auth-login",
    "auth/plain-without-initial-response": "plain-needs-initial-response",
    "auth/full-access-key": "only-send-only",
    "auth/bad-key-refused-at-auth": "accepts-any-key",
    "auth/bad-key-refused-login-mechanism": "accepts-any-key",
    "auth/wrong-username-refused": "ignores-username",
    "auth/username-is-exact": "ignores-username",
    "auth/foreign-authzid-refused": "ignores-authzid",
    "auth/key-without-send-permission-refused": "ignores-permission",
    "auth/unauthenticated-mail-refused": "auth-not-required",
    "auth/malformed-payload-refused": "bad-base64-is-535",
    "auth/second-auth-refused": "allows-second-auth",
    "block/repeated-failures-blocked": "never-blocks",
    "block/block-expires": "blocks-forever",
    "sender/verified-domain-accepted": "refuses-every-sender",
    "sender/unverified-domain-refused": "envelope-unchecked",
    "sender/outside-allowed-domains-refused": "allowed-domains-ignored",
    "sender/restricted-key-allowed-domain-accepted": "refuses-every-sender",
    "sender/unrestricted-key-any-verified-domain": "only-primary-domain",
    "sender/suffix-is-not-the-domain": "suffix-matching",
    "sender/subdomain-is-not-the-parent": "subdomains-allowed",
    "sender/null-sender-refused": "accepts-null-sender",
    "sender/source-route-checks-real-domain": "trusts-source-route",
    "from/unverified-domain-refused": "from-unchecked",
    "from/outside-allowed-domains-refused": "from-allowed-domains-ignored",
    "from/other-verified-domain-accepted": "only-primary-domain",
    "from/suffix-is-not-the-domain": "from-suffix-matching",
    "from/subdomain-is-not-the-parent": "from-subdomains-allowed",
    "from/display-name-is-not-an-address": "naive-from-parser",
    "from/every-mailbox-checked": "naive-from-parser",
    "from/missing-from-refused": "accepts-missing-from",
    "from/second-from-header-checked": "naive-from-parser",
    "from/two-from-headers-refused": "accepts-two-from",
    "from/sender-header-checked": "ignores-sender-header",
    "size/advertised": "size-not-advertised",
    "size/at-limit-accepted": "size-off-by-one",
    "size/over-limit-refused": "size-unenforced",
    "size/declared-over-limit-refused-at-mail": "size-unenforced",
    "size/encoded-attachments-count": "size-unenforced",
    "headers/all-valid-accepted": "refuses-control-headers",
    "headers/repeated-tag-accepted": "tag-only-once",
    "headers/folded-tags-accepted": "no-unfolding",
    "headers/tags-not-an-array-refused": "no-header-rules",
    "headers/tags-not-strings-refused": "no-header-rules",
    "headers/tags-bad-json-refused": "no-header-rules",
    "headers/tag-with-tags-refused": "no-header-rules",
    "headers/topic-twice-refused": "no-header-rules",
    "headers/campaign-twice-refused": "no-header-rules",
    "headers/tags-twice-refused": "no-header-rules",
    "headers/names-case-insensitive": "no-header-rules",
    "headers/empty-topic-refused": "no-header-rules",
    "headers/stripped-before-delivery": "no-stripping",
    "ids/one-recipient": "no-ids",
    "ids/several-recipients": "one-id-per-message",
    "ids/many-recipients-fit-reply-lines": "one-long-line",
    "ids/resubmission-is-a-new-send": "repeats-ids",
    "ids/duplicate-recipient-one-id": "counts-duplicate-rcpts",
    "session/messages-on-one-connection": "one-message-per-connection",
    "session/rcpt-before-mail-refused": "rcpt-without-mail-is-550",
    "session/enhanced-status-codes": "no-enhanced-codes",
    "security/bare-lf-dot-does-not-end-data": "lenient-end-of-data",
    "security/bare-cr-dot-does-not-end-data": "lenient-end-of-data",
    "wire/replies-end-with-crlf": "bare-lf-replies",
    "wire/reply-lines-well-formed": "noop-without-separator",
    "wire/multiline-codes-agree": "mixed-codes-in-ehlo",
    "wire/one-reply-per-command": "noop-answered-twice",
    "wire/space-after-code": "noop-without-space",
    "wire/pipelined-transaction": "loses-pipelined-commands",
    "wire/pipelined-refusals-in-order": "loses-pipelined-commands",
}

# The variants of the scenarios that read the whole contract live in their own module.
from .variants_catalogue import EXTRA_PROOF, EXTRA_VARIANTS  # noqa: E402  # needs Variant above
from .variants_from import FROM_PROOF, FROM_VARIANTS  # noqa: E402  # needs Variant above

VARIANTS.update(EXTRA_VARIANTS | FROM_VARIANTS)
CATALOGUE_PROOF.update(EXTRA_PROOF | FROM_PROOF)
