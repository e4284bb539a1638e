"""The server's configuration: listeners, TLS, limits, spool, relay, and teams with keys.

Key secrets are never kept in the clear: a key is configured by the SHA-256 of its secret, or by
the name of an environment variable holding the secret, which is hashed at load time.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import idna
import yaml

PERMISSIONS = ("send_only", "full_access", "read_only")
SEND_PERMISSIONS = ("send_only", "full_access")


class ConfigError(Exception):
    """The configuration file is wrong; the message says where and what was expected."""


def normalize_domain(domain: str) -> str:
    """Domains compare case-insensitively and a trailing dot is ignored (RFC 5321 §2.4); a
    Unicode domain compares as its A-label (RFC 5890 §2.3.2.1), which is what clients send.

    A domain that has no A-label is returned lower-cased: it can then never equal a configured
    domain, which ``idna_domain`` checked at load.
    """
    name = domain.strip().rstrip(".").lower()
    if name.isascii():
        return name
    try:
        return idna.encode(name, uts46=True).decode("ascii")
    except idna.IDNAError:
        return name


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    team: str
    secret_sha256: bytes
    permission: str
    allowed_domains: frozenset[str] | None = None
    revoked: bool = False

    @property
    def can_send(self) -> bool:
        return self.permission in SEND_PERMISSIONS and not self.revoked


@dataclass(frozen=True)
class Team:
    name: str
    verified_domains: frozenset[str]
    keys: tuple[ApiKey, ...]


@dataclass(frozen=True)
class Limits:
    message_size: int = 5 * 1024 * 1024
    max_recipients: int = 100
    auth_failure_threshold: int = 3
    auth_failure_cooldown: float = 60.0
    idle_timeout: float = 300.0


@dataclass(frozen=True)
class Relay:
    host: str
    port: int


@dataclass(frozen=True)
class ServerConfig:
    teams: tuple[Team, ...]
    hostname: str = "localhost"
    host: str = "127.0.0.1"
    ports: tuple[int, ...] = (587, 2587, 25)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    ca_out: Path | None = None
    spool: Path = Path("spool")
    limits: Limits = field(default_factory=Limits)
    relay: Relay | None = None

    @property
    def keys(self) -> tuple[ApiKey, ...]:
        return tuple(k for t in self.teams for k in t.keys)

    def team(self, name: str) -> Team:
        return next(t for t in self.teams if t.name == name)


def hash_secret(secret: str | bytes) -> bytes:
    raw = secret.encode("utf-8") if isinstance(secret, str) else secret
    return hashlib.sha256(raw).digest()


def _expect(value: Any, kind: type | tuple[type, ...], where: str, what: str) -> Any:
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        raise ConfigError(f"{where}: expected {what}, got {value!r}")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _check_keys(mapping: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(mapping) - allowed
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {sorted(unknown)}; expected some of {sorted(allowed)}"
        )


def _parse_key(raw: Any, team: str, where: str, env: dict[str, str]) -> ApiKey:
    _expect(raw, dict, where, "a mapping with id, permission and a secret")
    _check_keys(
        raw,
        {"id", "secret_sha256", "secret_env", "permission", "allowed_domains", "revoked"},
        where,
    )
    key_id = _expect(raw.get("id"), str, f"{where}.id", "a string")
    permission = raw.get("permission", "send_only")
    if permission not in PERMISSIONS:
        raise ConfigError(f"{where}.permission: expected one of {PERMISSIONS}, got {permission!r}")
    if ("secret_sha256" in raw) == ("secret_env" in raw):
        raise ConfigError(f"{where}: give exactly one of secret_sha256 or secret_env")
    if "secret_sha256" in raw:
        hexdigest = _expect(raw["secret_sha256"], str, f"{where}.secret_sha256", "64 hex digits")
        try:
            digest = bytes.fromhex(hexdigest)
        except ValueError:
            digest = b""
        if len(digest) != 32:
            raise ConfigError(f"{where}.secret_sha256: expected 64 hex digits")
    else:
        var = _expect(raw["secret_env"], str, f"{where}.secret_env", "an environment variable")
        if var not in env:
            raise ConfigError(f"{where}.secret_env: environment variable {var} is not set")
        digest = hash_secret(env[var])
    allowed = raw.get("allowed_domains")
    allowed_set = None
    if allowed is not None:
        _expect(allowed, list, f"{where}.allowed_domains", "a list of domains")
        allowed_set = frozenset(normalize_domain(str(d)) for d in allowed)
    revoked = _expect(raw.get("revoked", False), bool, f"{where}.revoked", "true or false")
    return ApiKey(key_id, team, digest, permission, allowed_set, revoked)


def parse_config(
    raw: Any, base: Path = Path("."), env: dict[str, str] | None = None
) -> ServerConfig:
    env = dict(os.environ) if env is None else env
    _expect(raw, dict, "config", "a mapping")
    _check_keys(raw, {"hostname", "listen", "tls", "limits", "spool", "relay", "teams"}, "config")
    teams: list[Team] = []
    for i, t in enumerate(_expect(raw.get("teams", []), list, "teams", "a list of teams")):
        where = f"teams[{i}]"
        _expect(t, dict, where, "a mapping")
        _check_keys(t, {"name", "verified_domains", "keys"}, where)
        name = _expect(t.get("name"), str, f"{where}.name", "a string")
        domains = _expect(
            t.get("verified_domains", []), list, f"{where}.verified_domains", "a list"
        )
        keys = tuple(
            _parse_key(k, name, f"{where}.keys[{j}]", env)
            for j, k in enumerate(_expect(t.get("keys", []), list, f"{where}.keys", "a list"))
        )
        teams.append(Team(name, frozenset(normalize_domain(str(d)) for d in domains), keys))
    listen = _expect(raw.get("listen", {}), dict, "listen", "a mapping")
    _check_keys(listen, {"host", "ports"}, "listen")
    ports = tuple(_expect(listen.get("ports", [587, 2587, 25]), list, "listen.ports", "a list"))
    for p in ports:
        if not isinstance(p, int) or isinstance(p, bool) or not 0 <= p <= 65535:
            raise ConfigError(f"listen.ports: port={p!r} is not a port (0 picks a free one)")
    tls = _expect(raw.get("tls", {}), dict, "tls", "a mapping")
    _check_keys(tls, {"cert", "key", "ca_out"}, "tls")
    if ("cert" in tls) != ("key" in tls):
        raise ConfigError("tls: give both cert and key, or neither (a trustme CA is made)")
    lim = _expect(raw.get("limits", {}), dict, "limits", "a mapping")
    _check_keys(lim, set(Limits.__dataclass_fields__), "limits")
    limits = Limits(**lim)
    relay_raw = raw.get("relay")
    relay = None
    if relay_raw is not None:
        _expect(relay_raw, dict, "relay", "a mapping with host and port")
        _check_keys(relay_raw, {"host", "port"}, "relay")
        relay = Relay(str(relay_raw.get("host", "127.0.0.1")), int(relay_raw["port"]))

    def path(value: Any) -> Path | None:
        return None if value is None else (base / str(value))

    return ServerConfig(
        teams=tuple(teams),
        hostname=str(raw.get("hostname", "localhost")),
        host=str(listen.get("host", "127.0.0.1")),
        ports=ports,
        tls_cert=path(tls.get("cert")),
        tls_key=path(tls.get("key")),
        ca_out=path(tls.get("ca_out")),
        spool=path(raw.get("spool", "spool")) or Path("spool"),
        limits=limits,
        relay=relay,
    )


def load_config(file: Path, env: dict[str, str] | None = None) -> ServerConfig:
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the configuration: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from None
    try:
        return parse_config(raw, file.parent, env)
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None
    except TypeError as exc:
        raise ConfigError(f"{file}: limits: {exc}") from None
