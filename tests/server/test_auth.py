"""Point 2: authentication, and the auth-failure block."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import aiosmtplib
import pytest

from ..support import KEYS, VERIFIED, Client, ServerThread, make_config, plain_auth, run, running


async def _auth(
    server: ServerThread, blob: bytes, mechanism: str = "PLAIN"
) -> aiosmtplib.SMTPResponse:
    client = Client(server)
    await client.ready(key=None)
    reply = await client.cmd("AUTH", mechanism, blob.decode())
    await client.close()
    return reply


@pytest.mark.parametrize("role", ["send_only", "full_access", "restricted"])
def test_auth_plain_accepts_sending_keys(server: ServerThread, role: str) -> None:
    reply = run(_auth(server, plain_auth(KEYS[role])))
    assert (reply.code, reply.message) == (235, "2.7.0 Authentication successful")


def test_auth_login_accepts_send_only_key(server: ServerThread) -> None:
    async def go() -> int:
        client = Client(server)
        await client.ready(key=None)
        assert (await client.cmd("AUTH", "LOGIN")).code == 334
        assert (await client.cmd(base64.b64encode(b"anypost").decode())).code == 334
        reply = await client.cmd(base64.b64encode(KEYS["send_only"].encode()).decode())
        await client.close()
        return reply.code

    assert run(go()) == 235


@pytest.mark.parametrize(
    "blob",
    [
        plain_auth("ap_not_a_key"),
        plain_auth(KEYS["send_only"], username="apikey"),
        plain_auth(KEYS["send_only"], username="Anypost"),
        plain_auth(KEYS["send_only"], authzid="someone-else"),
        plain_auth(KEYS["no_send"]),
        plain_auth(KEYS["revoked"]),
    ],
    ids=[
        "bad-key",
        "wrong-username",
        "username-case",
        "foreign-authzid",
        "no-send-permission",
        "revoked",
    ],
)
def test_auth_refusals_share_one_reply(server: ServerThread, blob: bytes) -> None:
    reply = run(_auth(server, blob))
    assert (reply.code, reply.message) == (535, "5.7.8 Authentication credentials invalid")


def test_auth_authzid_equal_to_username_is_accepted(server: ServerThread) -> None:
    assert run(_auth(server, plain_auth(KEYS["send_only"], authzid="anypost"))).code == 235


@pytest.mark.parametrize(
    ("blob", "expected"),
    [(b"not*base64!", (501, "5.5.2")), (base64.b64encode(b"only-one-field"), (501, "5.5.2"))],
)
def test_auth_malformed_payload_is_501(
    server: ServerThread, blob: bytes, expected: tuple[int, str]
) -> None:
    reply = run(_auth(server, blob))
    assert (reply.code, reply.message[:5]) == expected


def test_auth_cancel_and_unknown_mechanism(server: ServerThread) -> None:
    async def go() -> tuple[int, str, int]:
        client = Client(server)
        await client.ready(key=None)
        await client.cmd("AUTH", "LOGIN")
        cancel = await client.cmd("*")
        unknown = await client.cmd("AUTH", "CRAM-MD5")
        await client.close()
        return cancel.code, cancel.message, unknown.code

    assert run(go()) == (501, "5.5.2 Authentication aborted", 504)


def test_auth_twice_is_503(server: ServerThread) -> None:
    async def go() -> tuple[int, bool]:
        client = Client(server)
        await client.ready()
        again = await client.cmd("AUTH", "PLAIN", plain_auth(KEYS["send_only"]).decode())
        await client.close()
        return again.code, again.message.startswith("5.5.1")

    assert run(go()) == (503, True)


def test_auth_never_authenticated_mail_is_refused(server: ServerThread) -> None:
    async def go() -> aiosmtplib.SMTPResponse:
        client = Client(server)
        await client.ready(key=None)
        reply = await client.cmd(f"MAIL FROM:<probe@{VERIFIED}>")
        await client.close()
        return reply

    reply = run(go())
    assert (reply.code, reply.message) == (530, "5.7.0 Authentication required")


def test_block_trips_at_threshold_and_refuses_valid_key(tmp_path: Path) -> None:
    config = make_config(tmp_path, auth_failure_threshold=3, auth_failure_cooldown=30)
    with running(config) as server:
        codes = [run(_auth(server, plain_auth("ap_wrong"))).code for _ in range(2)]

        async def trip() -> tuple[int, bool]:
            client = Client(server)
            await client.ready(key=None)
            protocol = client.smtp.protocol
            assert protocol is not None
            # The protocol level: aiosmtplib's client would close on a 421 by itself.
            reply = await protocol.execute_command(b"AUTH PLAIN " + plain_auth("ap_wrong"))
            for _ in range(100):  # the server closes right after its 421
                if not protocol.is_connected:
                    break
                await asyncio.sleep(0.02)
            closed = not protocol.is_connected
            client.smtp.close()
            return reply.code, closed

        assert codes == [535, 535]
        assert run(trip()) == (421, True)

        async def valid_key_while_blocked() -> int:
            client = Client(server)
            try:
                await client.connect()
            except aiosmtplib.SMTPConnectResponseError as exc:
                return exc.code
            finally:
                client.smtp.close()
            return 220

        assert run(valid_key_while_blocked()) == 421


class ManualClock:
    """The limiter's clock, moved by the test: the passing of the cooldown is what is under
    test, and a loaded machine must not make a failure age out before the next one."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _manual_clock(server: ServerThread) -> ManualClock:
    clock = ManualClock()
    assert server.server.handler is not None
    server.server.handler.limiter._clock = clock
    return clock


def test_block_expires_after_cooldown(tmp_path: Path) -> None:
    config = make_config(tmp_path, auth_failure_threshold=2, auth_failure_cooldown=30)
    with running(config) as server:
        clock = _manual_clock(server)
        assert run(_auth(server, plain_auth("ap_wrong"))).code == 535
        assert run(_auth(server, plain_auth("ap_wrong"))).code == 421
        clock.now += 29.9
        with pytest.raises(aiosmtplib.SMTPConnectResponseError) as still:
            run(_auth(server, plain_auth(KEYS["send_only"])))
        assert still.value.code == 421  # a blocked address is refused at the greeting
        clock.now += 0.1
        assert run(_auth(server, plain_auth(KEYS["send_only"]))).code == 235


def test_block_failures_outside_the_window_are_forgotten(tmp_path: Path) -> None:
    config = make_config(tmp_path, auth_failure_threshold=2, auth_failure_cooldown=30)
    with running(config) as server:
        clock = _manual_clock(server)
        assert run(_auth(server, plain_auth("ap_wrong"))).code == 535
        clock.now += 30  # the first failure ages out of the window
        assert run(_auth(server, plain_auth("ap_wrong"))).code == 535
        clock.now += 29.9  # the second has not: the third trips the block
        assert run(_auth(server, plain_auth("ap_wrong"))).code == 421


def test_auth_login_prompts(server: ServerThread) -> None:
    async def go() -> list[bytes]:
        client = Client(server)
        await client.ready(key=None)
        first = await client.cmd("AUTH", "LOGIN")
        second = await client.cmd(base64.b64encode(b"anypost").decode())
        await client.cmd(base64.b64encode(KEYS["send_only"].encode()).decode())
        await client.close()
        return [base64.b64decode(first.message), base64.b64decode(second.message)]

    assert run(go()) == [b"Username:", b"Password:"]
