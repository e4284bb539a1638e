"""Real clients against the reference server: swaks, curl (with and without --mail-auth), msmtp
and Python's smtplib each submit over STARTTLS with AUTH PLAIN and AUTH LOGIN, to three
recipients, and get one ``ids=`` id per recipient back in the reply to DATA."""

from __future__ import annotations

import re
import smtplib
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ..server.test_message import ID
from ..support import KEYS, VERIFIED, message
from .conftest import ReferenceProcess, require

pytestmark = [pytest.mark.interop]

RECIPIENTS = ("a@sink.test", "b@sink.test", "c@sink.test")
MECHANISMS = ("PLAIN", "LOGIN")
# The reply to DATA, as each tool prints the server's lines: a 250 carrying ids=.
DATA_REPLY = re.compile(r"250[ -]2\.0\.0 OK ids=(?P<ids>[^\r\n]*)")
SEEN: set[str] = set()


def _ids(text: str) -> list[str]:
    """The ids of the one reply to DATA in a tool's output; fails unless there is exactly one."""
    replies = [m.group("ids") for m in DATA_REPLY.finditer(text)]
    assert len(replies) == 1, f"expected one 250 ... ids= reply to DATA, got {replies}:\n{text}"
    return re.findall(ID, replies[0])


def _check(ids: list[str]) -> None:
    # One id per recipient, all different, none seen in an earlier submission of this module.
    assert len(ids) == len(RECIPIENTS) and len(set(ids)) == len(RECIPIENTS), ids
    assert not SEEN & set(ids), "an id came back twice across submissions"
    SEEN.update(ids)


def _run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, timeout=60, check=False, **kwargs
    )


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_interop_swaks(reference: ReferenceProcess, mechanism: str) -> None:
    swaks = require("swaks")
    done = _run(
        [
            swaks,
            *("--server", "127.0.0.1", "--port", str(reference.port)),
            *("--tls", "--tls-verify", "--tls-ca-path", reference.ca),
            *("--auth", mechanism, "--auth-user", "anypost"),
            *("--auth-password", KEYS["send_only"]),
            *("--from", f"probe@{VERIFIED}", "--to", ",".join(RECIPIENTS)),
            *("--header", "Subject: Hello from swaks", "--body", "It worked."),
        ]
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # swaks marks lines read inside TLS with "<~"; the AUTH it used is in the transcript.
    assert f"~> AUTH {mechanism}" in done.stdout, done.stdout
    assert re.search(r"<~\s+235 ", done.stdout), done.stdout
    _check(_ids(done.stdout))


@pytest.mark.parametrize("mail_auth", [False, True], ids=["plain-mail", "mail-auth"])
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_interop_curl(
    reference: ReferenceProcess, tmp_path: Path, mechanism: str, mail_auth: bool
) -> None:
    curl = require("curl")
    mail = tmp_path / "mail.eml"
    mail.write_bytes(message(body="Hello from curl.\r\n"))
    command = [
        curl,
        *("--silent", "--show-error", "--verbose", "--ssl-reqd", "--cacert", reference.ca),
        *("--url", f"smtp://localhost:{reference.port}"),
        *("--user", f"anypost:{KEYS['send_only']}", "--login-options", f"AUTH={mechanism}"),
        *("--mail-from", f"probe@{VERIFIED}"),
        *(arg for rcpt in RECIPIENTS for arg in ("--mail-rcpt", rcpt)),
        *("--upload-file", str(mail)),
    ]
    if mail_auth:
        # RFC 4954 §5: MAIL FROM:<...> AUTH=<...>, which a submission server must accept.
        command += ["--mail-auth", f"probe@{VERIFIED}"]
    done = _run(command)
    assert done.returncode == 0, done.stderr
    assert f"> AUTH {mechanism}" in done.stderr, done.stderr
    if mail_auth:
        assert re.search(r"> MAIL FROM:<probe@[^>]+> AUTH=", done.stderr), done.stderr
    _check(_ids(done.stderr))


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_interop_msmtp(reference: ReferenceProcess, tmp_path: Path, mechanism: str) -> None:
    msmtp = require("msmtp")
    config = tmp_path / "msmtprc"
    config.write_text(
        "\n".join(
            [
                "account anypost",
                "host localhost",
                f"port {reference.port}",
                "tls on",
                "tls_starttls on",
                f"tls_trust_file {reference.ca}",
                f"auth {mechanism.lower()}",
                "user anypost",
                f"password {KEYS['send_only']}",
                f"from probe@{VERIFIED}",
                "",
            ]
        )
    )
    config.chmod(0o600)  # msmtp refuses a password in a file others can read
    done = _run(
        [msmtp, "--debug", "-C", str(config), "-a", "anypost", *RECIPIENTS],
        input=message(body="Hello from msmtp.\r\n").decode(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"--> AUTH {mechanism}" in done.stdout, done.stdout
    _check(_ids(done.stdout))


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_interop_python_smtplib(reference: ReferenceProcess, mechanism: str) -> None:
    with smtplib.SMTP("127.0.0.1", reference.port, timeout=10) as smtp:
        smtp.starttls(context=ssl.create_default_context(cafile=reference.ca))
        smtp.ehlo()
        smtp.user, smtp.password = "anypost", KEYS["send_only"]
        authobject = smtp.auth_plain if mechanism == "PLAIN" else smtp.auth_login
        code, _ = smtp.auth(mechanism, authobject, initial_response_ok=mechanism == "PLAIN")
        assert code == 235
        smtp.mail(f"probe@{VERIFIED}")
        for rcpt in RECIPIENTS:
            assert smtp.rcpt(rcpt)[0] == 250
        code, reply = smtp.data(message(body="Hello from smtplib.\r\n"))
    assert code == 250
    _check(_ids(f"{code} {reply.decode()}"))
