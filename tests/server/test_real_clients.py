"""The server as real mail software meets it: curl with --mail-auth (the AUTH= MAIL parameter,
RFC 4954 §5) and msmtp, against the server run as a process."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from reference_server.spool import read_events

from ..support import KEYS, VERIFIED, delivered, message
from .test_message import ID
from .test_process import Process, _config, _require


@pytest.fixture
def process(tmp_path: Path) -> Iterator[Process]:
    proc = Process(_config(tmp_path))
    try:
        yield proc
    finally:
        proc.close()


def test_mail_auth_parameter_from_curl_mail_auth(process: Process, tmp_path: Path) -> None:
    curl = _require("curl")
    mail = tmp_path / "mail.eml"
    mail.write_bytes(message(body="Hello from curl --mail-auth.\r\n"))
    done = subprocess.run(
        [
            curl,
            "--silent",
            "--show-error",
            "--verbose",
            "--ssl-reqd",
            "--cacert",
            process.info["ca"],
            "--url",
            f"smtp://localhost:{process.port}",
            "--user",
            f"anypost:{KEYS['send_only']}",
            "--mail-from",
            f"probe@{VERIFIED}",
            "--mail-auth",
            f"probe@{VERIFIED}",
            "--mail-rcpt",
            "a@sink.test",
            "--upload-file",
            str(mail),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # curl did send the parameter, and the server accepted it and the message.
    assert re.search(r"> MAIL FROM:<probe@acme\.test> AUTH=\S+", done.stderr), done.stderr
    assert re.search(r"< 250 2\.0\.0 OK ids=" + ID, done.stderr), done.stderr


def test_msmtp_submits_with_starttls_and_auth(process: Process, tmp_path: Path) -> None:
    msmtp = _require("msmtp")
    rc = tmp_path / "msmtprc"
    rc.write_text(
        "account default\n"
        "host 127.0.0.1\n"
        f"port {process.port}\n"
        "tls on\ntls_starttls on\n"
        f"tls_trust_file {process.info['ca']}\n"
        "auth plain\nuser anypost\n"
        f"password {KEYS['send_only']}\n"
        f"from probe@{VERIFIED}\n"
    )
    rc.chmod(0o600)  # msmtp refuses a readable file holding a password
    body = message(body="Hello from msmtp.\r\n").decode().replace("\r\n", "\n")
    done = subprocess.run(
        [msmtp, "-C", str(rc), "a@sink.test"],
        input=body,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    events = read_events(tmp_path / "spool" / "events.sqlite3")
    assert [e["recipient"] for e in events] == ["a@sink.test"]
    stored = delivered(str(events[0]["path"])).read_bytes()
    assert b"Hello from msmtp.\r\n" in stored
