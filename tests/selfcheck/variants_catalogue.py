"""Variants for the scenarios that read the whole contract (issue: the catalogue): each is the
most plausible wrong server for the behaviour its scenarios check, not a server broken at random.

Merged into ``VARIANTS`` and ``CATALOGUE_PROOF`` by ``variants.py``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from typing import Any

from aiosmtpd.smtp import MISSING

from reference_server import replies
from reference_server.config import ApiKey
from reference_server.handler import AnypostHandler
from reference_server.headers import ControlValues, HeaderBlock, HeaderError
from reference_server.message_ids import IdGenerator
from reference_server.session import AnypostSMTP

from .variants import Variant

_DOMAIN = re.compile(r"[a-z0-9.-]+")


def _raw_domain(address: str) -> str:
    return address.rpartition("@")[2]


class CaseSensitiveDomains(AnypostHandler):
    """Compares the domain as sent with the lower-case verified list."""

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        domain = _raw_domain(address)
        if domain != domain.lower():
            return str(replies.SENDER_NOT_PERMITTED)
        return await super().handle_MAIL(server, session, envelope, address, options)

    def author_allowed(self, key: ApiKey, domain: str) -> bool:
        return domain == domain.lower() and super().author_allowed(key, domain)


class LowerCaseOnlyDomainCheck(AnypostHandler):
    """Pulls the domain out with a lower-case pattern and lets through what it cannot read."""

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if _DOMAIN.fullmatch(_raw_domain(address)) is None:
            envelope.mail_from = address
            envelope.mail_options.extend(options)
            return str(replies.SENDER_OK)
        return await super().handle_MAIL(server, session, envelope, address, options)

    def author_allowed(self, key: ApiKey, domain: str) -> bool:
        return _DOMAIN.fullmatch(domain) is None or super().author_allowed(key, domain)


class AnyTeamsDomain(AnypostHandler):
    """One global table of verified domains: another team's domain passes for this key."""

    def _verified_anywhere(self, key: ApiKey, domain: str) -> bool:
        domain = domain.lower().rstrip(".")
        teams = [t for t in self.config.teams if domain in t.verified_domains]
        return bool(teams) and (key.allowed_domains is None or domain in key.allowed_domains)

    def sender_allowed(self, key: ApiKey, domain: str) -> bool:
        return self._verified_anywhere(key, domain)

    def author_allowed(self, key: ApiKey, domain: str) -> bool:
        return self._verified_anywhere(key, domain)


class PerConnectionIds(AnypostHandler):
    """An id generator per connection, seeded alike: every connection repeats the same ids.

    (The copies are stored under fresh ids, since the event log refuses a repeated one; the
    reply, which is what a client sees, carries the repeated ones.)"""

    async def submit(self, session: Any, envelope: Any, data: bytearray) -> str:
        generator = session.__dict__.setdefault(
            "variant_ids", IdGenerator(clock_ms=lambda: 1_764_547_200_000, random_bytes=bytes)
        )
        reply = await super().submit(session, envelope, data)
        stored = re.findall(r"email_[0-9a-f-]+", reply)
        if not stored:
            return reply
        return self.accepted_reply(tuple(generator.new_id() for _ in stored))


class DedupsMessageId(AnypostHandler):
    """Carries the HTTP API's idempotency over to SMTP: the same Message-ID, the same ids."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: dict[bytes, str] = {}

    async def submit(self, session: Any, envelope: Any, data: bytearray) -> str:
        found = re.search(rb"(?im)^message-id:\s*(\S+)", bytes(data))
        key = found.group(1) if found else None
        if key is not None and key in self.seen:
            return self.seen[key]
        reply = await super().submit(session, envelope, data)
        if key is not None and reply.startswith("250"):
            self.seen[key] = reply
        return reply


class RsetKeepsRecipients(AnypostSMTP):
    """RSET forgets the sender but keeps the recipients for the next transaction."""

    async def smtp_RSET(self, arg: str) -> None:
        kept = list(self.envelope.rcpt_tos) if self.envelope is not None else []
        await super().smtp_RSET(arg)
        if self.envelope is not None:
            self.envelope.rcpt_tos.extend(kept)


class CountsRcptCommands(AnypostSMTP):
    """Counts every RCPT command of the transaction, refused ones included."""

    async def smtp_RCPT(self, arg: str | None) -> None:
        before = len(self.envelope.rcpt_tos) if self.envelope is not None else 0
        await super().smtp_RCPT(arg)
        envelope = self.envelope
        if envelope is not None and envelope.mail_from and len(envelope.rcpt_tos) == before:
            envelope.__dict__["variant_refused"] = envelope.__dict__.get("variant_refused", 0) + 1


class IdPerRcptCommand(AnypostHandler):
    """Gives an id to every RCPT command, refused ones included."""

    async def submit(self, session: Any, envelope: Any, data: bytearray) -> str:
        extra = envelope.__dict__.get("variant_refused", 0)
        reply = await super().submit(session, envelope, data)
        if reply.startswith("250") and extra:
            return self.accepted_reply(
                (*re.findall(r"email_[0-9a-f-]+", reply), *self.new_ids(extra))
            )
        return reply


class ChecksEveryAddressHeader(AnypostHandler):
    """Treats Reply-To and Cc like From: a reply address on another domain is refused."""

    def authors(self, block: HeaderBlock) -> list[Any]:
        from email.headerregistry import AddressHeader

        found = super().authors(block)
        for name in ("reply-to", "cc"):
            for field in block.named(name):
                parsed: Any = {}
                AddressHeader.parse(field.value, parsed)
                for group in parsed["groups"]:
                    found += list(group.addresses)
        return found


class RendersTemplates(AnypostHandler):
    """Runs the message through the HTTP API's template renderer: unknown variables vanish."""

    async def submit(self, session: Any, envelope: Any, data: bytearray) -> str:
        rendered = bytearray(re.sub(rb"\{\{[^{}]*\}\}", b"", bytes(data)))
        return await super().submit(session, envelope, rendered)


class MechanismPrefixMatch(AnypostSMTP):
    """Matches the mechanism by its first letters: PLAINX is taken for PLAIN."""

    async def smtp_AUTH(self, arg: str) -> None:
        name, _, rest = (arg or "").partition(" ")
        for known in ("PLAIN", "LOGIN"):
            if name.upper().startswith(known):
                arg = f"{known} {rest}".strip()
        await super().smtp_AUTH(arg)


class TrustsAuthParameter(AnypostSMTP):
    """Takes MAIL FROM's AUTH=<mailbox> as the sender to check, as if it vouched for it."""

    async def smtp_MAIL(self, arg: str | None) -> None:
        found = re.search(r"(?i)\s+AUTH=(\S+)", arg or "")
        if arg and found:
            vouched = found.group(1)
            arg = f"FROM:<{vouched}>" if vouched != "<>" else arg.replace(found.group(0), "")
        await super().smtp_MAIL(arg)


class ReadsAnyAuthAnswer(AnypostSMTP):
    """Reads an AUTH answer of any length and takes it as the user name."""

    async def challenge_auth(
        self, challenge: str | bytes, encode_to_b64: bool = True, log_client_response: bool = False
    ) -> Any:
        raw = challenge.encode() if isinstance(challenge, str) else challenge
        await self.push(b"334 " + (base64.b64encode(raw) if encode_to_b64 else raw))
        line = bytearray()
        while not line.endswith(b"\n"):
            try:
                line += await self._reader.readuntil(b"\n")
            except asyncio.LimitOverrunError as exc:
                line += await self._reader.read(exc.consumed)
        try:
            return base64.b64decode(bytes(line).strip(), validate=True)
        except binascii.Error:
            await self.push("501 5.5.2 Cannot decode the answer")
            return MISSING


class RefusesBodyParameter(AnypostSMTP):
    """Knows SIZE but no other MAIL FROM parameter, BODY=8BITMIME included."""

    async def smtp_MAIL(self, arg: str | None) -> None:
        if arg and re.search(r"(?i)\sBODY=", arg):
            await self.push("555 5.5.4 MAIL FROM parameters not recognized or not implemented")
            return
        await super().smtp_MAIL(arg)


class DecimalMegabytes(AnypostSMTP):
    """Checks a declared SIZE against 5,000,000 octets: "5 MB" read as decimal megabytes."""

    async def smtp_MAIL(self, arg: str | None) -> None:
        found = re.search(r"(?i)\sSIZE=(\d+)", arg or "")
        if found and int(found.group(1)) > 5_000_000:
            await self.push("552 5.3.4 Message size exceeds fixed maximum message size")
            return
        await super().smtp_MAIL(arg)


class TagsReadAsYaml(AnypostHandler):
    """Reads X-Anypost-Tags with a YAML loader, which takes ['a'] and [a, b] for arrays."""

    def read_control(self, block: HeaderBlock) -> ControlValues:
        import yaml

        fields = block.named("x-anypost-tags")
        if len(fields) != 1:
            return super().read_control(block)
        try:
            parsed = yaml.safe_load(fields[0].value)
        except yaml.YAMLError:
            raise HeaderError("control", "X-Anypost-Tags is not YAML") from None
        if not isinstance(parsed, list):
            raise HeaderError("control", "X-Anypost-Tags is not a list")
        return ControlValues(tags=tuple(str(t) for t in parsed))


class CaseSensitiveMechanisms(AnypostSMTP):
    """Matches SASL mechanism names as sent (aiosmtpd's own behaviour): "plain" is unknown."""

    async def smtp_AUTH(self, arg: str) -> None:
        name = (arg or "").partition(" ")[0]
        if name != name.upper():
            await self.push("504 5.5.4 Unrecognized authentication type")
            return
        await super().smtp_AUTH(arg)


class RefusesAuthParameter(AnypostSMTP):
    """Does not know MAIL FROM's AUTH= parameter (aiosmtpd's own behaviour: 555)."""

    async def smtp_MAIL(self, arg: str | None) -> None:
        if arg and re.search(r"(?i)\sAUTH=", arg):
            await self.push("555 5.5.4 MAIL FROM parameters not recognized or not implemented")
            return
        await super().smtp_MAIL(arg)


class StarttlsInsideTls(AnypostSMTP):
    """Answers 220 to STARTTLS on a session already in TLS (aiosmtpd's own behaviour)."""

    async def smtp_STARTTLS(self, arg: str) -> None:
        if self._tls_protocol is not None:
            await self.push("220 2.0.0 Ready to start TLS")
            return
        await super().smtp_STARTTLS(arg)


class WholeDataTimeout(AnypostSMTP):
    """Times the whole DATA upload against the idle timeout, from the DATA command on."""

    def data_received(self, data: bytes) -> None:
        super(AnypostSMTP, self).data_received(data)  # skips the per-read bookkeeping


class NulPassesInMail(AnypostSMTP):
    """Hands MAIL's argument on with a NUL in it (aiosmtpd's own behaviour)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._smtp_methods["MAIL"] = self.smtp_MAIL


EXTRA_VARIANTS: dict[str, Variant] = {
    "case-sensitive-domains": Variant(handler=CaseSensitiveDomains),
    "lower-case-only-domain-check": Variant(handler=LowerCaseOnlyDomainCheck),
    "any-teams-domain": Variant(handler=AnyTeamsDomain),
    "per-connection-ids": Variant(handler=PerConnectionIds),
    "dedups-message-id": Variant(handler=DedupsMessageId),
    "rset-keeps-recipients": Variant(smtp=RsetKeepsRecipients),
    "id-per-rcpt-command": Variant(handler=IdPerRcptCommand, smtp=CountsRcptCommands),
    "checks-every-address-header": Variant(handler=ChecksEveryAddressHeader),
    "renders-templates": Variant(handler=RendersTemplates),
    "mechanism-prefix-match": Variant(smtp=MechanismPrefixMatch),
    "trusts-auth-parameter": Variant(smtp=TrustsAuthParameter),
    "reads-any-auth-answer": Variant(smtp=ReadsAnyAuthAnswer),
    "refuses-body-parameter": Variant(smtp=RefusesBodyParameter),
    "decimal-megabytes": Variant(smtp=DecimalMegabytes),
    "tags-read-as-yaml": Variant(handler=TagsReadAsYaml),
    "case-sensitive-mechanisms": Variant(smtp=CaseSensitiveMechanisms),
    "refuses-auth-parameter": Variant(smtp=RefusesAuthParameter),
    "starttls-inside-tls": Variant(smtp=StarttlsInsideTls),
    "whole-data-timeout": Variant(smtp=WholeDataTimeout),
    "nul-passes-in-mail": Variant(smtp=NulPassesInMail),
}

EXTRA_PROOF: dict[str, str] = {
    "sender/upper-case-verified-domain-accepted": "case-sensitive-domains",
    "sender/upper-case-unverified-domain-refused": "lower-case-only-domain-check",
    "from/upper-case-unverified-domain-refused": "lower-case-only-domain-check",
    "sender/other-team-domain-refused": "any-teams-domain",
    "from/other-team-domain-refused": "any-teams-domain",
    "ids/unique-across-connections": "per-connection-ids",
    "ids/identical-resubmission-new-ids": "dedups-message-id",
    "ids/rset-discards-recipients": "rset-keeps-recipients",
    "ids/refused-recipient-gets-no-id": "id-per-rcpt-command",
    "session/ordinary-mime-parts-accepted": "checks-every-address-header",
    "session/no-template-rendering": "renders-templates",
    "clients/unknown-mechanism-refused": "mechanism-prefix-match",
    "clients/auth-param-does-not-vouch-for-sender": "trusts-auth-parameter",
    "clients/over-long-auth-answer-refused": "reads-any-auth-answer",
    "clients/mail-body-8bitmime": "refuses-body-parameter",
    "clients/mail-size-under-limit-accepted": "decimal-megabytes",
    "headers/generated-tags-values": "tags-read-as-yaml",
    "clients/lower-case-plain-mechanism": "case-sensitive-mechanisms",
    "clients/lower-case-login-mechanism": "case-sensitive-mechanisms",
    "clients/mail-auth-param-empty": "refuses-auth-parameter",
    "clients/mail-auth-param-address": "refuses-auth-parameter",
    "clients/starttls-inside-tls-refused": "starttls-inside-tls",
    "clients/slow-steady-upload-accepted": "whole-data-timeout",
    "clients/nul-in-address-refused": "nul-passes-in-mail",
}
