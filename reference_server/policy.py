"""Pure policy: who may authenticate and which sender domains a key may use.

Used by the SMTP hooks; no I/O here. The contract: "The domain of each must be both verified for
your team and permitted for the API key"; a subdomain is not its parent (BRIEF §4).
"""

from __future__ import annotations

import hmac

from .config import ApiKey, ServerConfig, hash_secret, normalize_domain

USERNAME = b"anypost"


def authenticate(
    config: ServerConfig, username: bytes, secret: bytes, authzid: bytes = b""
) -> ApiKey | None:
    """The key for these credentials, or None. One answer for every kind of refusal.

    Every configured key is compared, in constant time, so the time taken says nothing about
    which key came close.
    """
    digest = hash_secret(secret)
    found: ApiKey | None = None
    for key in config.keys:
        if hmac.compare_digest(digest, key.secret_sha256):
            found = key
    if username != USERNAME or authzid not in (b"", USERNAME):
        return None
    if found is None or not found.can_send:
        return None
    return found


def split_address(address: str) -> tuple[str, str] | None:
    """(local part, normalized domain) of an addr-spec, or None when it has no domain."""
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain.strip():
        return None
    return local, normalize_domain(domain)


def domain_permitted(config: ServerConfig, key: ApiKey, domain: str) -> bool:
    domain = normalize_domain(domain)
    if domain not in config.team(key.team).verified_domains:
        return False
    return key.allowed_domains is None or domain in key.allowed_domains
