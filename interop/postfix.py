"""Postfix as an Anypost look-alike: a private instance on loopback, and its target profile.

Debian's ``postfix`` with ``dovecot-core`` as its SASL backend, each with its own configuration,
queue, sockets and logs under one temporary folder; nothing of the system's mail setup is read
or touched. Three high ports are three identical submission services (the contract's 587, 2587
and 25). Postfix's master and Dovecot run in the foreground as our children and are stopped by
their pids (and their process groups), also when starting fails half way.

    python -m interop.postfix run [anypost-conformance run options]   # the catalogue against it
    python -m interop.postfix serve                                   # keep it up, print the profile

Needs root (Postfix's master and Dovecot drop privileges themselves), as in CI.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme
import yaml

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "profiles" / "postfix.yaml"
PORT_NAMES = ("submission", "alternate", "smtp")
VERIFIED = ("acme.test", "billing.acme.test")
RESTRICTED_ALLOWED = ("acme.test",)
RECIPIENT_DOMAIN = "sink.test"
MESSAGE_SIZE = 5 * 1024 * 1024
MAX_RECIPIENTS = 100
# Keys by role: every one logs in as the literal user "anypost"; Dovecot tries one passwd-file
# after the other (result_failure = continue) and the restricted key's file renames the login,
# so Postfix's sender login map can tell it apart.
KEY_ENV = {
    "send_only": "POSTFIX_LOOKALIKE_KEY_SEND_ONLY",
    "full_access": "POSTFIX_LOOKALIKE_KEY_FULL_ACCESS",
    "restricted": "POSTFIX_LOOKALIKE_KEY_RESTRICTED",
}
RESTRICTED_LOGIN = "anypost-restricted"
# Debian's layout; PATH rarely holds the daemons.
MASTER = Path("/usr/lib/postfix/sbin/master")
DOVECOT = "dovecot"
REQUIRED_PACKAGES: dict[str, Path | str] = {"postfix": MASTER, "dovecot-core": DOVECOT}


class LookalikeError(Exception):
    """The look-alike could not be started; the message says what is missing or what failed."""


def check_installed() -> None:
    """Fail loudly (never skip) when Postfix or Dovecot is missing, saying what to install."""
    missing = [
        pkg
        for pkg, exe in REQUIRED_PACKAGES.items()
        if not (exe.is_file() if isinstance(exe, Path) else shutil.which(exe))
    ]
    if missing:
        raise LookalikeError(
            f"the Postfix look-alike needs the Debian packages {', '.join(missing)}: "
            f"apt-get install {' '.join(missing)} (as root; .ci/run does this in CI)"
        )
    if os.geteuid() != 0:
        raise LookalikeError(
            "the Postfix look-alike runs Postfix's master and Dovecot: run as root"
        )


def free_ports(count: int) -> list[int]:
    """Loopback ports free now (the OS chooses them); Postfix binds them a moment later."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


def _sha256_hex(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _regex_alternatives(domains: tuple[str, ...]) -> str:
    return "|".join(d.replace(".", r"\.") for d in domains)


def header_checks() -> str:
    """Strip the four Anypost headers; refuse a From or Sender outside the verified domains.

    Postfix's regexp tables are POSIX ERE (no look-ahead; Debian's postfix-pcre is a separate
    package), so the rule says what a good header is: text without '@', then one or more
    ``@verified-domain`` each followed by a character that cannot continue a domain. Every
    mailbox is thereby checked, and ``acme.test.evil.example`` is not ``acme.test``.
    """
    domains = _regex_alternatives(VERIFIED)
    good = rf"^(From|Sender):[^@]*(@({domains})([^-.a-z0-9@][^@]*)?)+$"
    return "\n".join(
        [
            "# The Anypost control headers are read by Anypost and never delivered.",
            "/^X-Anypost-Tags:/ IGNORE",
            "/^X-Anypost-Tag:/ IGNORE",
            "/^X-Anypost-Topic:/ IGNORE",
            "/^X-Campaign:/ IGNORE",
            "# A From (or Sender) mailbox outside the team's verified domains is refused.",
            "if /^(From|Sender):/",
            f"!/{good}/ REJECT From or Sender address not on a verified domain",
            "endif",
            "",
        ]
    )


def main_cf(base: Path, ports: list[int], cert: Path, key: Path) -> str:
    pw = pwd.getpwnam("postfix")
    settings: dict[str, str] = {
        "compatibility_level": "3.6",
        "queue_directory": str(base / "queue"),
        "data_directory": str(base / "data"),
        "mail_owner": "postfix",
        "setgid_group": "postdrop",
        "maillog_file_prefixes": str(base),
        "maillog_file": str(base / "postfix.log"),
        "myhostname": "postfix-lookalike.test",
        "mydomain": "postfix-lookalike.test",
        "mydestination": "",
        "inet_interfaces": "127.0.0.1",
        "inet_protocols": "ipv4",
        "biff": "no",
        "disable_vrfy_command": "yes",
        "smtpd_discard_ehlo_keywords": "etrn",
        "alias_maps": "",
        "alias_database": "",
        "smtputf8_enable": "no",
        # Nothing ever leaves this instance: every domain is delivered into the one Maildir,
        # and anything else would be an error, not a relay.
        "default_transport": "error:the look-alike never relays",
        "relay_transport": "error:the look-alike never relays",
        "virtual_mailbox_domains": "static:all",
        "virtual_mailbox_base": str(base),
        "virtual_mailbox_maps": "static:Maildir/",
        "virtual_uid_maps": f"static:{pw.pw_uid}",
        "virtual_gid_maps": f"static:{pw.pw_gid}",
        "virtual_minimum_uid": str(pw.pw_uid),
        # The contract: 5 MB (5,242,880 octets), at most 100 recipients.
        "message_size_limit": str(MESSAGE_SIZE),
        "smtpd_recipient_limit": str(MAX_RECIPIENTS),
        # STARTTLS is mandatory, AUTH only after it.
        "smtpd_tls_security_level": "encrypt",
        "smtpd_tls_auth_only": "yes",
        "smtpd_tls_cert_file": str(cert),
        "smtpd_tls_key_file": str(key),
        "smtpd_tls_protocols": ">=TLSv1.2",
        "smtpd_tls_mandatory_protocols": ">=TLSv1.2",
        "smtpd_tls_loglevel": "0",
        "smtpd_sasl_auth_enable": "yes",
        "smtpd_sasl_type": "dovecot",
        "smtpd_sasl_path": "private/auth",
        "smtpd_sasl_security_options": "noanonymous",
        "smtpd_sasl_tls_security_options": "noanonymous",
        "broken_sasl_auth_clients": "no",
        # Sender checks at MAIL, not delayed to RCPT: an unauthenticated session is refused
        # at MAIL FROM, and the envelope domain must be owned by the login (verified domains
        # for every key, only its allowed_domains for the restricted one).
        "smtpd_delay_reject": "no",
        # RFC 3207 §4.2: what the client said before TLS is forgotten; without this Postfix
        # would take AUTH and MAIL on a TLS session that never sent EHLO again.
        "smtpd_helo_required": "yes",
        "smtpd_sender_login_maps": f"texthash:{base / 'etc' / 'sender_logins'}",
        "smtpd_null_access_lookup_key": "<>",
        "smtpd_sender_restrictions": (
            "check_sender_access inline:{{<>=550 5.7.1 Sender address rejected: a verified "
            "domain is required}}, reject_authenticated_sender_login_mismatch, "
            "permit_sasl_authenticated, "
            "check_client_access static:{530 5.7.0 Authentication required}"
        ),
        "smtpd_relay_restrictions": "permit_sasl_authenticated, reject",
        "smtpd_recipient_restrictions": "permit_sasl_authenticated, reject",
        # Only top-level headers are control headers (BRIEF §4); Postfix would otherwise apply
        # header_checks to MIME part headers and attached messages too.
        "header_checks": f"regexp:{base / 'etc' / 'header_checks'}",
        "mime_header_checks": "",
        "nested_header_checks": "",
        "body_checks": "",
    }
    lines = [
        "# Generated by interop/postfix.py: an Anypost look-alike on loopback.",
        *(f"{k} = {v}" for k, v in settings.items()),
    ]
    return "\n".join(lines) + "\n"


def master_cf(ports: list[int]) -> str:
    # service type private unpriv chroot wakeup maxproc command: no chroot (our own paths).
    services = [f"127.0.0.1:{port} inet n - n - - smtpd" for port in ports]
    services += [
        "cleanup unix n - n - 0 cleanup",
        "qmgr unix n - n 300 1 qmgr",
        "tlsmgr unix - - n 1000? 1 tlsmgr",
        "rewrite unix - - n - - trivial-rewrite",
        "bounce unix - - n - 0 bounce",
        "defer unix - - n - 0 bounce",
        "trace unix - - n - 0 bounce",
        "verify unix - - n - 1 verify",
        "flush unix n - n 1000? 0 flush",
        "proxymap unix - - n - - proxymap",
        "showq unix n - n - - showq",
        "error unix - - n - - error",
        "retry unix - - n - - error",
        "discard unix - - n - - discard",
        "virtual unix - n n - - virtual",
        "anvil unix - - n - 1 anvil",
        "scache unix - - n - 1 scache",
        "postlog unix-dgram n - n - 1 postlogd",
    ]
    return "# Generated by interop/postfix.py.\n" + "\n".join(services) + "\n"


def dovecot_conf(base: Path, passwd_files: list[Path]) -> str:
    passdbs = "\n".join(
        "passdb {\n  driver = passwd-file\n"
        f"  args = scheme=SHA256.HEX username_format=%u {path}\n}}"
        for path in passwd_files
    )
    return f"""# Generated by interop/postfix.py: Dovecot as Postfix's SASL backend, nothing else.
base_dir = {base / "dovecot" / "run"}
state_dir = {base / "dovecot" / "state"}
log_path = {base / "dovecot.log"}
protocols =
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
# The username is exactly "anypost": no lower-casing (Dovecot's default format is %Lu).
auth_username_format = %u
# Dovecot's default failure delay (2 s) can outlast Postfix's wait for the SASL server on a
# loaded machine, turning a bad key into "454 4.7.0 Temporary authentication failure".
auth_failure_delay = 0
auth_cache_size = 0
default_internal_user = dovecot
default_login_user = dovenull
{passdbs}
userdb {{
  driver = static
  args = uid=postfix gid=postfix home=/nonexistent
}}
# No auth penalty either: Dovecot would otherwise delay every login from 127.0.0.1 by up to
# 15 s after failed ones (anvil's auth-penalty), which Postfix also reports as 454.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service auth {{
  unix_listener {base / "queue" / "private" / "auth"} {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}
"""


@dataclass
class Lookalike:
    """One running instance. ``start()`` writes everything and starts both daemons."""

    base: Path
    ports: list[int] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    profile_path: Path | None = None
    _master: subprocess.Popen[bytes] | None = None
    _dovecot: subprocess.Popen[bytes] | None = None

    @property
    def maildir(self) -> Path:
        return self.base / "Maildir"

    @property
    def log(self) -> Path:
        return self.base / "postfix.log"

    def start(self, timeout: float = 60.0, attempts: int = 3) -> Path:
        check_installed()
        try:
            self._prepare()
            for attempt in range(attempts):
                # A port chosen free may be taken before master binds it: choose again.
                self.ports = free_ports(len(PORT_NAMES))
                self._write_postfix_config()
                self._postfix_check(timeout)
                if self._dovecot is None:
                    self._start_dovecot(timeout)  # its socket goes in the queue's private/
                if self._start_master(timeout, last=attempt == attempts - 1):
                    break
            self.profile_path = self._write_profile()
            return self.profile_path
        except BaseException:
            self.stop()
            raise

    def _prepare(self) -> None:
        pw = pwd.getpwnam("postfix")
        self.base.mkdir(parents=True, exist_ok=True)
        self.base.chmod(0o755)  # the virtual delivery agent (uid postfix) walks into Maildir
        for sub in ("etc", "queue", "data", "dovecot/run", "dovecot/state"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        os.chown(self.base / "data", pw.pw_uid, pw.pw_gid)
        for part in ("new", "cur", "tmp"):
            (self.maildir / part).mkdir(parents=True, exist_ok=True)
        for path in [self.maildir, *(self.maildir / p for p in ("new", "cur", "tmp"))]:
            os.chown(path, pw.pw_uid, pw.pw_gid)
        etc = self.base / "etc"
        ca = trustme.CA()
        server = ca.issue_cert("localhost", "127.0.0.1")
        ca.cert_pem.write_to_path(str(self.base / "ca.pem"))
        server.private_key_pem.write_to_path(str(etc / "key.pem"))
        (etc / "key.pem").chmod(0o600)
        server.cert_chain_pems[0].write_to_path(str(etc / "cert.pem"))
        for blob in server.cert_chain_pems[1:]:
            blob.write_to_path(str(etc / "cert.pem"), append=True)
        dovecot = pwd.getpwnam("dovecot")
        self.env = {env: "ap_" + secrets.token_urlsafe(24) for env in KEY_ENV.values()}
        passwd_files = []
        for role, env in KEY_ENV.items():
            path = self.base / "dovecot" / f"keys-{role}"
            extra = f"user={RESTRICTED_LOGIN}" if role == "restricted" else ""
            # user:password:uid:gid:gecos:home:shell:extra fields (Dovecot passwd-file).
            path.write_text(f"anypost:{{SHA256.HEX}}{_sha256_hex(self.env[env])}::::::{extra}\n")
            path.chmod(0o600)
            os.chown(path, dovecot.pw_uid, dovecot.pw_gid)  # its auth worker reads it
            passwd_files.append(path)
        (self.base / "dovecot" / "dovecot.conf").write_text(dovecot_conf(self.base, passwd_files))
        owners = {d: ["anypost"] for d in VERIFIED}
        for d in RESTRICTED_ALLOWED:
            owners[d].append(RESTRICTED_LOGIN)
        (etc / "sender_logins").write_text(
            "".join(f"@{d} {', '.join(o)}\n" for d, o in owners.items())
        )
        (etc / "header_checks").write_text(header_checks())

    def _write_postfix_config(self) -> None:
        etc = self.base / "etc"
        (etc / "main.cf").write_text(
            main_cf(self.base, self.ports, etc / "cert.pem", etc / "key.pem")
        )
        (etc / "master.cf").write_text(master_cf(self.ports))

    def _start_dovecot(self, timeout: float) -> None:
        conf = self.base / "dovecot" / "dovecot.conf"
        with open(self.base / "dovecot.stderr", "wb") as stderr:
            self._dovecot = subprocess.Popen(
                [DOVECOT, "-F", "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,  # its own process group, stopped as one
            )
        socket_path = self.base / "queue" / "private" / "auth"
        deadline = time.monotonic() + timeout
        while not socket_path.exists():
            if self._dovecot.poll() is not None:
                raise LookalikeError(
                    f"dovecot exited with {self._dovecot.returncode}: {self._tail('dovecot.stderr')}"
                    f"{self._tail('dovecot.log')}"
                )
            if time.monotonic() > deadline:
                raise LookalikeError(f"dovecot made no auth socket within {timeout:g}s")
            time.sleep(0.05)

    def _postfix_check(self, timeout: float) -> None:
        # Creates the queue's folders with Postfix's own ownership and modes.
        done = subprocess.run(
            ["postfix", "-c", str(self.base / "etc"), "check"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise LookalikeError(f"postfix check failed: {done.stderr.strip()}")

    def _start_master(self, timeout: float, last: bool) -> bool:
        config = str(self.base / "etc")
        # -d: master stays in the foreground as our child (its pid is ours to stop).
        with open(self.base / "master.stderr", "wb") as stderr:
            self._master = subprocess.Popen(
                [str(MASTER), "-c", config, "-d"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        pending = list(self.ports)
        while pending:
            if self._master.poll() is not None:
                message = f"postfix's master exited with {self._master.returncode}: "
                message += self._tail("master.stderr") + self._tail("postfix.log")
                self._master = None
                if last:
                    raise LookalikeError(message)
                return False
            if time.monotonic() > deadline:
                raise LookalikeError(f"postfix did not greet on {pending} within {timeout:g}s")
            if _greets(pending[0]):
                pending.pop(0)
            else:
                time.sleep(0.1)
        return True

    def _tail(self, name: str, lines: int = 20) -> str:
        path = self.base / name
        if not path.is_file():
            return ""
        text = path.read_text(errors="replace").splitlines()[-lines:]
        return f"\n--- {name} ---\n" + "\n".join(text)

    def _write_profile(self) -> Path:
        profile: dict[str, Any] = yaml.safe_load(TEMPLATE.read_text())
        profile["target"]["ports"] = dict(zip(PORT_NAMES, self.ports, strict=True))
        profile["target"]["tls"] = {
            "ca_file": str(self.base / "ca.pem"),
            "server_name": "localhost",
        }
        profile["observer"] = {"kind": "maildir", "path": str(self.maildir)}
        path = self.base / "postfix-profile.yaml"
        path.write_text(yaml.safe_dump(profile, sort_keys=False))
        return path

    def stop(self) -> None:
        """Stop master (it takes its children down) and Dovecot, by pid; then their groups."""
        for proc in (self._master, self._dovecot):
            if proc is None:
                continue
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
            # Anything left in its process group (a smtpd still closing) goes too.
            deadline = time.monotonic() + 10
            while living_in_group(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if living_in_group(proc.pid):
                    os.killpg(proc.pid, signal.SIGKILL)
        self._master = None
        self._dovecot = None

    def __enter__(self) -> Lookalike:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def living_in_group(pgid: int) -> list[int]:
    """The processes of a process group that still run (zombies left to init do not count)."""
    living = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # it ended while we looked
        # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ")".
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            living.append(int(text.split(" ", 1)[0]))
    return living


def _greets(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.settimeout(10)
            banner = sock.recv(512)
            sock.sendall(b"QUIT\r\n")
            return banner.startswith(b"220")
    except OSError:
        return False


def _cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m interop.postfix", description=__doc__)
    parser.add_argument("command", choices=["run", "serve"])
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, queue)")
    args, rest = parser.parse_known_args(argv)
    base = Path(tempfile.mkdtemp(prefix="anypost-postfix-"))
    lookalike = Lookalike(base)
    try:
        try:
            profile = lookalike.start()
        except LookalikeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"postfix look-alike on 127.0.0.1 ports {lookalike.ports}; profile {profile}")
        env = {**os.environ, **lookalike.env}
        if args.command == "serve":
            for name, value in lookalike.env.items():
                print(f"export {name}={value}")
            print("Ctrl-C stops it.", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
            return 0
        command = [sys.executable, "-m", "conformance", "run", "--target", str(profile), *rest]
        return subprocess.run(command, env=env, check=False).returncode
    finally:
        lookalike.stop()
        if args.keep:
            print(f"kept {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(_cli())
