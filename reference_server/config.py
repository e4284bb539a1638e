"""The server's configuration: listeners, TLS, limits, spool, relay, and teams with keys.

Key secrets are never kept in the clear: a key is configured by the SHA-256 of its secret, or by
the name of an environment variable holding the secret, which is hashed at load time.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import idna
import yaml

PERMISSIONS = ("send_only", "full_access", "read_only")
# The contract's ports are 587, 2587 and 25; below 1024 a process needs root, so by default the
# server listens on unprivileged stand-ins (10587 for 587, 10025 for 25) and 2587 itself.
DEFAULT_PORTS = (10587, 2587, 10025)
CONTRACT_PORTS = (587, 2587, 25)


def default_state_dir(env: Mapping[str, str]) -> Path:
    """Where the spool (Maildirs, event log, CA) goes when the configuration does not say:
    the XDG state folder, never the checkout."""
    base = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local/state")
    return Path(base) / "anypost-reference-server"


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
    """Every limit's one default: the sample configuration and the README state the same
    values, and a test holds the three together."""

    message_size: int = 5 * 1024 * 1024  # "5 MB", counted as RFC 1870 §5 counts
    max_recipients: int = 100
    auth_failure_threshold: int = 5
    auth_failure_cooldown: float = 60.0
    idle_timeout: float = 300.0  # per read (RFC 5321 §4.5.3.2 suggests at least 5 minutes)


@dataclass(frozen=True)
class Relay:
    host: str
    port: int


@dataclass(frozen=True)
class ServerConfig:
    teams: tuple[Team, ...]
    hostname: str = "localhost"
    host: str = "127.0.0.1"
    ports: tuple[int, ...] = DEFAULT_PORTS
    tls_cert: Path | None = None
    tls_key: Path | None = None
    ca_out: Path | None = None
    spool: Path = field(default_factory=lambda: default_state_dir(os.environ))
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


_LDH_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def config_domain(value: Any, where: str) -> str:
    """A configured domain as clients send it: lower case, no trailing dot, A-labels (IDNA
    2008 with UTS 46 mapping, RFC 5891), so ``bücher.test`` matches ``xn--bcher-kva.test``."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: expected a domain name, got {value!r}")
    name = value.strip().rstrip(".").lower()
    try:
        if not name.isascii() or "xn--" in name:
            name = idna.encode(name, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise ConfigError(f"{where}: {value!r} is not a valid domain name (IDNA: {exc})") from None
    labels = name.split(".")
    if len(name) > 253 or not all(_LDH_LABEL.match(label) for label in labels):
        raise ConfigError(
            f"{where}: {value!r} is not a domain name (letters, digits and hyphens in labels of "
            "1 to 63 characters, or a Unicode name that has an A-label)"
        )
    return name


def _domains(raw: Any, where: str) -> frozenset[str]:
    _expect(raw, list, where, "a list of domains")
    return frozenset(config_domain(d, f"{where}[{i}]") for i, d in enumerate(raw))


def _check_keys(mapping: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(mapping) - allowed
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {sorted(unknown)}; expected some of {sorted(allowed)}"
        )


def _parse_key(
    raw: Any, team: str, where: str, env: Mapping[str, str], missing: list[tuple[str, str]]
) -> ApiKey:
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
            missing.append((f"{where}.secret_env", var))  # reported together, below
        digest = hash_secret(env.get(var, ""))
    allowed = raw.get("allowed_domains")
    allowed_set = None
    if allowed is not None:
        allowed_set = _domains(allowed, f"{where}.allowed_domains")
    revoked = _expect(raw.get("revoked", False), bool, f"{where}.revoked", "true or false")
    return ApiKey(key_id, team, digest, permission, allowed_set, revoked)


def parse_config(
    raw: Any, base: Path = Path("."), env: Mapping[str, str] | None = None
) -> ServerConfig:
    env = dict(os.environ) if env is None else env
    missing: list[tuple[str, str]] = []
    _expect(raw, dict, "config", "a mapping")
    _check_keys(raw, {"hostname", "listen", "tls", "limits", "spool", "relay", "teams"}, "config")
    teams: list[Team] = []
    for i, t in enumerate(_expect(raw.get("teams", []), list, "teams", "a list of teams")):
        where = f"teams[{i}]"
        _expect(t, dict, where, "a mapping")
        _check_keys(t, {"name", "verified_domains", "keys"}, where)
        name = _expect(t.get("name"), str, f"{where}.name", "a string")
        domains = _domains(t.get("verified_domains", []), f"{where}.verified_domains")
        keys = tuple(
            _parse_key(k, name, f"{where}.keys[{j}]", env, missing)
            for j, k in enumerate(_expect(t.get("keys", []), list, f"{where}.keys", "a list"))
        )
        teams.append(Team(name, domains, keys))
    if missing:
        names = ", ".join(var for _, var in missing)
        raise ConfigError(
            f"{missing[0][0]}: environment variable(s) not set: {names}. Each holds the secret of "
            f"one API key (for a try-out, any value: export {missing[0][1]}=ap_test_...)"
        )
    listen = _expect(raw.get("listen", {}), dict, "listen", "a mapping")
    _check_keys(listen, {"host", "ports"}, "listen")
    ports = tuple(_expect(listen.get("ports", list(DEFAULT_PORTS)), list, "listen.ports", "a list"))
    for p in ports:
        if not isinstance(p, int) or isinstance(p, bool) or not 0 <= p <= 65535:
            raise ConfigError(f"listen.ports: port={p!r} is not a port (0 picks a free one)")
    tls = _expect(raw.get("tls", {}), dict, "tls", "a mapping")
    _check_keys(tls, {"cert", "key", "ca_out"}, "tls")
    if ("cert" in tls) != ("key" in tls):
        raise ConfigError("tls: give both cert and key, or neither (a trustme CA is made)")
    lim = _expect(raw.get("limits", {}), dict, "limits", "a mapping")
    _check_keys(lim, set(Limits.__dataclass_fields__), "limits")
    for name, value in lim.items():
        whole = name in ("message_size", "max_recipients", "auth_failure_threshold")
        kind = "a whole number" if whole else "a number of seconds"
        if (
            isinstance(value, bool)
            or not isinstance(value, int if whole else (int, float))
            or value <= 0
        ):
            raise ConfigError(f"limits.{name}: expected {kind} above 0, got {value!r}")
    limits = Limits(**lim)
    relay_raw = raw.get("relay")
    relay = None
    if relay_raw is not None:
        _expect(relay_raw, dict, "relay", "a mapping with host and port")
        _check_keys(relay_raw, {"host", "port"}, "relay")
        port = relay_raw.get("port")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port <= 65535:
            raise ConfigError(f"relay.port: expected a port number, got {port!r}")
        relay = Relay(str(relay_raw.get("host", "127.0.0.1")), port)

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
        spool=path(raw.get("spool")) or default_state_dir(env),
        limits=limits,
        relay=relay,
    )


_PLACE = re.compile(r"^([A-Za-z_]\w*(?:\[\d+\]|\.\w+)*):")
_STEP = re.compile(r"\[(\d+)\]|\.?(\w+)")


def _line_of(text: str, place: str) -> int | None:
    """The line (1-based) of the YAML node at a dotted place such as ``teams[0].keys[1].id``,
    or of its nearest ancestor that exists."""
    try:
        node: Any = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    if node is None:
        return None
    line: int = node.start_mark.line + 1
    for index, key in _STEP.findall(place):
        if index and isinstance(node, yaml.SequenceNode) and int(index) < len(node.value):
            node = node.value[int(index)]
        elif key and isinstance(node, yaml.MappingNode):
            found = [v for k, v in node.value if getattr(k, "value", None) == key]
            if not found:
                break
            node = found[0]
        else:
            break
        line = node.start_mark.line + 1
    return line


def load_config(file: Path, env: Mapping[str, str] | None = None) -> ServerConfig:
    try:
        text = file.read_text(encoding="utf-8")
        raw = yaml.safe_load(text)
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the configuration: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from None
    try:
        return parse_config(raw, file.parent, env)
    except ConfigError as exc:
        message = str(exc)
        match = _PLACE.match(message)
        line = _line_of(text, match.group(1)) if match else None
        where = f"{file}:{line}" if line else str(file)
        raise ConfigError(f"{where}: {message}") from None
