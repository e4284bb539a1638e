"""Point 3: teams, keys and domains: the envelope sender and every From mailbox are checked."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from reference_server.config import ConfigError, load_config

from ..support import (
    KEYS,
    OTHER_TEAM,
    OUTSIDE_ALLOWED,
    UNVERIFIED,
    VERIFIED,
    Client,
    ServerThread,
    message,
    plain_auth,
    run,
)


async def _mail(server: ServerThread, sender: str, key: str = "send_only") -> tuple[int, str]:
    client = Client(server)
    await client.ready(key)
    reply = await client.cmd(f"MAIL FROM:{sender}")
    await client.close()
    return reply.code, reply.message


@pytest.mark.parametrize(
    ("sender", "key", "code"),
    [
        (f"<probe@{VERIFIED}>", "send_only", 250),
        (f"<probe@{OUTSIDE_ALLOWED}>", "send_only", 250),
        (f"<probe@{VERIFIED.upper()}>", "send_only", 250),
        (f"<probe@{VERIFIED}.>", "send_only", 250),
        (f"<probe@{VERIFIED}>", "restricted", 250),
        (f"<probe@{OUTSIDE_ALLOWED}>", "restricted", 550),
        (f"<probe@{UNVERIFIED}>", "send_only", 550),
        (f"<probe@{OTHER_TEAM}>", "send_only", 550),
        (f"<probe@sub.{VERIFIED}>", "send_only", 550),
        (f"<probe@{VERIFIED}.evil.test>", "send_only", 550),
        (f"<probe@evil{VERIFIED}>", "send_only", 550),
        (f"<@{VERIFIED}:probe@{UNVERIFIED}>", "send_only", 550),
        (f'<"probe@{VERIFIED}"@{UNVERIFIED}>', "send_only", 550),
        ("<>", "send_only", 550),
        ("<probe>", "send_only", 501),
    ],
)
def test_policy_envelope_sender(server: ServerThread, sender: str, key: str, code: int) -> None:
    got, text = run(_mail(server, sender, key))
    assert got == code, text
    if code == 550:
        # One generic text whatever the reason: never reveal another team's domains.
        assert text == "5.7.1 Sender address not permitted for this API key"


async def _submit(server: ServerThread, data: bytes, key: str = "send_only") -> tuple[int, str]:
    client = Client(server)
    await client.ready(key)
    reply = await client.submit(data)
    await client.close()
    return reply.code, reply.message


@pytest.mark.parametrize(
    ("from_", "extra", "key", "code"),
    [
        (f"Probe <probe@{VERIFIED}>", (), "send_only", 250),
        (f"probe@{OUTSIDE_ALLOWED}", (), "send_only", 250),
        (f"probe@{OUTSIDE_ALLOWED}", (), "restricted", 550),
        (f"Probe <probe@{UNVERIFIED}>", (), "send_only", 550),
        (f'"probe@{VERIFIED}" <x@{UNVERIFIED}>', (), "send_only", 550),
        (f"x@{UNVERIFIED} (probe@{VERIFIED})", (), "send_only", 550),
        (f"=?utf-8?q?probe=40{VERIFIED}?= <x@{UNVERIFIED}>", (), "send_only", 550),
        (f"probe@{VERIFIED}, x@{UNVERIFIED}", (f"Sender: probe@{VERIFIED}",), "send_only", 550),
        (f"probe@{VERIFIED}, y@{VERIFIED}", (f"Sender: probe@{VERIFIED}",), "send_only", 250),
        (f"probe@{VERIFIED}, y@{VERIFIED}", (), "send_only", 554),
        (f"probe@{VERIFIED}", (f"Sender: x@{UNVERIFIED}",), "send_only", 550),
        (f"probe@{VERIFIED}", (f"From: x@{UNVERIFIED}",), "send_only", 554),
        ("", (), "send_only", 554),
        ("undisclosed:;", (), "send_only", 554),
    ],
    ids=[
        "verified",
        "other-verified",
        "restricted-outside",
        "unverified",
        "display-name",
        "comment",
        "encoded-word",
        "second-mailbox",
        "two-verified-with-sender",
        "two-without-sender",
        "sender-unverified",
        "two-from",
        "missing",
        "empty-group",
    ],
)
def test_policy_from_header(
    server: ServerThread, from_: str, extra: tuple[str, ...], key: str, code: int
) -> None:
    got, text = run(_submit(server, message(from_=from_, headers=extra), key))
    assert got == code, text


def test_policy_from_inside_attached_message_is_not_checked(server: ServerThread) -> None:
    body = (
        "--b\r\nContent-Type: message/rfc822\r\n\r\n"
        f"From: x@{UNVERIFIED}\r\nX-Anypost-Topic: a\r\nX-Anypost-Topic: b\r\n\r\ninner\r\n--b--\r\n"
    )
    data = message(
        headers=("MIME-Version: 1.0", 'Content-Type: multipart/mixed; boundary="b"'), body=body
    )
    assert run(_submit(server, data))[0] == 250


def test_policy_secrets_hashed_and_never_logged(
    server: ServerThread, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    for key in server.config.keys:
        assert not hasattr(key, "secret")
        assert all(secret.encode() not in key.secret_sha256 for secret in KEYS.values())
    run(_mail(server, f"<probe@{VERIFIED}>"))
    log_text = caplog.text
    assert "AUTH" in log_text  # the session was logged at DEBUG, AUTH line included
    for secret in KEYS.values():
        assert secret not in log_text
    assert plain_auth(KEYS["send_only"]).decode() not in log_text


def test_policy_config_errors_name_the_place(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "teams:\n  - name: a\n    keys:\n      - {id: k, permission: root, secret_env: X}\n"
    )
    with pytest.raises(ConfigError, match=r"teams\[0\]\.keys\[0\]\.permission"):
        load_config(bad, env={"X": "ap_x"})
    bad.write_text("listen: {ports: [70000]}\n")
    with pytest.raises(ConfigError, match="70000 is not a port"):
        load_config(bad, env={})
