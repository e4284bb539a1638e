"""What a careful MSA does where aiosmtpd departs from the RFCs, driven by hand over loopback:
STARTTLS inside TLS, per-read timeouts during DATA, SASL names in any case, the AUTH= MAIL
parameter, control characters, over-long lines at every prompt, and no traceback from any way a
client can end a session."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from reference_server.spool import read_events

from ..support import KEYS, VERIFIED, ServerThread, make_config, message, plain_auth, run, running


class Raw:
    """A hand-driven session: bytes out as given, whole replies in."""

    def __init__(self, server: ServerThread) -> None:
        self.server = server
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter

    async def open(self, tls: bool = True, auth: bool = True) -> Raw:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.server.port)
        assert (await self.reply()).startswith(b"220")
        await self.expect(b"EHLO raw.test", b"250")
        if tls:
            await self.expect(b"STARTTLS", b"220")
            await self.writer.start_tls(self.server.tls_context(), server_hostname="localhost")
            await self.expect(b"EHLO raw.test", b"250")
        if auth:
            await self.expect(b"AUTH PLAIN " + plain_auth(KEYS["send_only"]), b"235")
        return self

    async def reply(self, timeout: float = 15) -> bytes:
        out = b""
        while True:
            line = await asyncio.wait_for(self.reader.readline(), timeout)
            if not line:
                raise ConnectionError(f"closed by the server after {out!r}")
            out += line
            if line[3:4] != b"-":
                return out

    async def send(self, line: bytes) -> bytes:
        self.writer.write(line + b"\r\n")
        return await self.reply()

    async def start_data(self) -> None:
        """A transaction for one recipient, up to the 354 of DATA."""
        await self.expect(f"MAIL FROM:<probe@{VERIFIED}>".encode(), b"250")
        await self.expect(b"RCPT TO:<a@sink.test>", b"250")
        await self.expect(b"DATA", b"354")

    async def expect(self, line: bytes, prefix: bytes) -> bytes:
        answer = await self.send(line)
        assert answer.startswith(prefix), (line[:60], answer)
        return answer

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, TimeoutError, ConnectionError):
            await asyncio.wait_for(self.writer.wait_closed(), 5)


Problems = Callable[[], list[logging.LogRecord]]


@pytest.fixture
def problems(caplog: pytest.LogCaptureFixture) -> Problems:
    """The log records so far that a client should never be able to cause: tracebacks and
    errors, from the server, aiosmtpd or asyncio."""
    caplog.set_level(logging.INFO)

    def found() -> list[logging.LogRecord]:
        return [
            r
            for r in caplog.records
            if r.exc_info or r.levelno >= logging.ERROR or "Traceback" in r.getMessage()
        ]

    return found


# --- STARTTLS ------------------------------------------------------------------------------
def test_starttls_inside_tls_is_refused_and_the_session_goes_on(server: ServerThread) -> None:
    async def go() -> tuple[bytes, bytes]:
        raw = await Raw(server).open(auth=False)
        again = await raw.send(b"STARTTLS")
        auth = await raw.send(b"AUTH PLAIN " + plain_auth(KEYS["send_only"]))
        await raw.close()
        return again, auth

    again, auth = run(go())
    assert again == b"503 5.5.1 TLS already active\r\n"
    assert auth.startswith(b"235")  # the one TLS layer still carries the session


@pytest.mark.parametrize(
    "how", ["close-after-220", "reset-after-220", "garbage-handshake", "close-mid-session"]
)
def test_no_traceback_whatever_the_client_does_around_starttls(
    server: ServerThread, problems: Problems, how: str
) -> None:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    stream = sock.makefile("rb")
    stream.readline()
    sock.sendall(b"EHLO x.test\r\nSTARTTLS\r\n")
    while not stream.readline().startswith(b"220 "):
        pass
    if how == "reset-after-220":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    elif how == "garbage-handshake":
        sock.sendall(b"\x16\x03\x01\x00\x05hello")
    elif how == "close-mid-session":
        tls = server.tls_context().wrap_socket(sock, server_hostname="localhost")
        tls.sendall(b"EHLO y.test\r\nMAIL FROM:<probe@acme.test>\r\n")
        tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        tls.close()
    stream.close()
    sock.close()
    # The server is still serving, and it logged no traceback for any of it.
    deadline = time.monotonic() + 10
    sessions = server.server._sessions
    while time.monotonic() < deadline and any(s.transport is not None for s in sessions):
        time.sleep(0.05)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as probe:
        assert probe.makefile("rb").readline().startswith(b"220")
    assert not problems()


# --- timeouts ------------------------------------------------------------------------------
def test_data_slow_but_steady_client_is_never_cut(tmp_path: Path) -> None:
    """RFC 5321 §4.5.3.2: the timeout is per read. A client sending a line (in two halves)
    every 0.3 s for three times the idle timeout is accepted."""
    with running(make_config(tmp_path, idle_timeout=1.0)) as server:

        async def go() -> bytes:
            raw = await Raw(server).open()
            await raw.start_data()
            head = message(body="").rstrip(b"\r\n") + b"\r\n\r\n"
            raw.writer.write(head)
            started = time.monotonic()
            while time.monotonic() - started < 3.0:
                raw.writer.write(b"a slow line, ")
                await asyncio.sleep(0.15)
                raw.writer.write(b"in two halves\r\n")
                await asyncio.sleep(0.15)
            final = await raw.send(b".")
            await raw.close()
            return final

        assert run(go()).startswith(b"250 2.0.0 OK ids=")


def test_data_stalled_client_is_cut_with_421(tmp_path: Path) -> None:
    with running(make_config(tmp_path, idle_timeout=1.0)) as server:

        async def go() -> tuple[bytes, float]:
            raw = await Raw(server).open()
            await raw.start_data()
            raw.writer.write(b"Subject: stalls\r\n\r\nand then nothing")
            started = time.monotonic()
            answer = await raw.reply(timeout=20)
            waited = time.monotonic() - started
            rest = await asyncio.wait_for(raw.reader.read(), 10)
            await raw.close()
            return answer + rest, waited

        answer, waited = run(go())
        assert answer == b"421 4.4.2 Idle timeout, closing connection\r\n"
        assert waited >= 0.9
        assert read_events(server.config.spool / "events.sqlite3") == []


def test_idle_timer_runs_from_the_last_command(tmp_path: Path) -> None:
    """A client sending a command every 0.4 s for twice the idle timeout is served; once it
    stops, it is cut one idle timeout after its last command, not after its first."""
    with running(make_config(tmp_path, idle_timeout=1.0)) as server:

        async def go() -> tuple[bytes, float]:
            raw = await Raw(server).open()
            started = time.monotonic()
            while time.monotonic() - started < 2.0:
                await raw.expect(b"NOOP", b"250")
                await asyncio.sleep(0.4)
            await raw.expect(b"NOOP", b"250")
            last = time.monotonic()
            answer = await raw.reply(timeout=20)
            waited = time.monotonic() - last
            await raw.close()
            return answer, waited

        answer, waited = run(go())
        assert answer == b"421 4.4.2 Idle timeout, closing connection\r\n"
        assert 0.9 <= waited < 2.0, waited


def test_idle_timer_runs_from_the_end_of_a_long_upload(tmp_path: Path) -> None:
    """A client idle after a DATA upload longer than the idle timeout is cut one idle timeout
    after the reply to its data, not sooner (the timer set at the DATA command has long run
    out by then)."""
    with running(make_config(tmp_path, idle_timeout=1.0)) as server:

        async def go() -> tuple[bytes, bytes, float]:
            raw = await Raw(server).open()
            await raw.start_data()
            raw.writer.write(message(body="").rstrip(b"\r\n") + b"\r\n\r\n")
            started = time.monotonic()
            while time.monotonic() - started < 2.2:
                raw.writer.write(b"a line\r\n")
                await asyncio.sleep(0.35)
            accepted = await raw.send(b".")
            after = time.monotonic()
            answer = await raw.reply(timeout=20)
            waited = time.monotonic() - after
            await raw.close()
            return accepted, answer, waited

        accepted, answer, waited = run(go())
        assert accepted.startswith(b"250 2.0.0 OK ids=")
        assert answer == b"421 4.4.2 Idle timeout, closing connection\r\n"
        assert 0.9 <= waited < 2.0, waited


def test_a_client_gone_during_data_leaves_no_timer_behind(
    tmp_path: Path, problems: Problems
) -> None:
    """A client that drops the connection in the middle of its data: the session ends, and no
    idle timer fires later on a session without a connection (which would log an error)."""
    with running(make_config(tmp_path, idle_timeout=0.5)) as server:

        async def go() -> None:
            raw = await Raw(server).open()
            await raw.start_data()
            raw.writer.write(b"Subject: gone\r\n\r\nhalf a line")
            await raw.writer.drain()
            await asyncio.sleep(0.1)  # the server is waiting for the rest of the line
            # A reset, not a close: the server learns the connection is lost before its
            # reading of the data ends.
            sock = raw.writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raw.writer.transport.abort()
            await asyncio.sleep(1.5)  # three idle timeouts

        run(go())
        assert not problems()
        assert read_events(server.config.spool / "events.sqlite3") == []


# --- HELP ----------------------------------------------------------------------------------
def test_help_lists_the_commands_and_gives_their_syntax(server: ServerThread) -> None:
    """Every command goes through a guard against control characters; the guard keeps the
    syntax aiosmtpd's HELP reads from each command's method."""

    async def go() -> list[bytes]:
        raw = await Raw(server).open()
        answers = [await raw.send(b"HELP"), await raw.send(b"HELP mail")]
        await raw.close()
        return answers

    listing, mail = run(go())
    assert listing.startswith(b"250 ")
    commands = listing.split(b"Supported commands:")[1].split()
    assert {b"DATA", b"EHLO", b"MAIL", b"QUIT", b"RCPT", b"RSET"} <= set(commands), listing
    assert mail.startswith(b"250 ") and b"Syntax: MAIL FROM: <address>" in mail, mail


# --- AUTH ----------------------------------------------------------------------------------
@pytest.mark.parametrize("mechanism", [b"plain", b"Plain", b"PLAIN"])
def test_auth_plain_mechanism_name_in_any_case(server: ServerThread, mechanism: bytes) -> None:
    async def go() -> bytes:
        raw = await Raw(server).open(auth=False)
        answer = await raw.send(b"AUTH " + mechanism + b" " + plain_auth(KEYS["send_only"]))
        await raw.close()
        return answer

    assert run(go()).startswith(b"235 2.7.0")


def test_auth_login_mechanism_name_in_lower_case(server: ServerThread) -> None:
    async def go() -> list[bytes]:
        raw = await Raw(server).open(auth=False)
        answers = [
            await raw.send(b"AUTH login"),
            await raw.send(base64.b64encode(b"anypost")),
            await raw.send(base64.b64encode(KEYS["send_only"].encode())),
        ]
        await raw.close()
        return answers

    prompts = run(go())
    assert [a[:3] for a in prompts] == [b"334", b"334", b"235"]


def test_auth_unknown_mechanism_still_504(server: ServerThread) -> None:
    async def go() -> bytes:
        raw = await Raw(server).open(auth=False)
        answer = await raw.send(b"AUTH cram-md5")
        await raw.close()
        return answer

    assert run(go()).startswith(b"504 5.5.4")


@pytest.mark.parametrize(
    ("params", "prefix"),
    [
        (b" AUTH=<>", b"250 2.1.0"),
        (b" auth=<>", b"250 2.1.0"),
        (b" AUTH=probe+40acme.test", b"250 2.1.0"),
        (b" AUTH=<> SIZE=1000", b"250 2.1.0"),
        (b" SIZE=1000 AUTH=probe@acme.test", b"250 2.1.0"),
        (b" AUTH=<> SIZE=99999999", b"552 5.3.4"),  # the other parameters still count
        (b" AUTH=", b"501 5.5.4"),
        (b" AUTH=a=b", b"501 5.5.4"),
        (b" AUTH=a+4", b"501 5.5.4"),
        (b" AUTH=<> AUTH=<>", b"501 5.5.4"),
        (b" NOTAUTH=<>", b"555"),
    ],
)
def test_mail_auth_parameter_accepted_and_ignored(
    server: ServerThread, params: bytes, prefix: bytes
) -> None:
    async def go() -> bytes:
        raw = await Raw(server).open()
        answer = await raw.send(f"MAIL FROM:<probe@{VERIFIED}>".encode() + params)
        await raw.close()
        return answer

    assert run(go()).startswith(prefix)


def test_mail_auth_parameter_message_goes_through(server: ServerThread) -> None:
    async def go() -> bytes:
        raw = await Raw(server).open()
        await raw.expect(f"MAIL FROM:<probe@{VERIFIED}> AUTH=<>".encode(), b"250")
        await raw.expect(b"RCPT TO:<a@sink.test>", b"250")
        await raw.expect(b"DATA", b"354")
        raw.writer.write(message())
        final = await raw.send(b".")
        await raw.close()
        return final

    assert run(go()).startswith(b"250 2.0.0 OK ids=")
    event = read_events(server.config.spool / "events.sqlite3")[-1]
    assert event["mail_from"] == f"probe@{VERIFIED}"


# --- control characters --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("line", "prefix"),
    [
        (b"RCPT TO:<r\x00x@example.org>", b"501 5.5.2"),
        (b"RCPT TO:<r\x01x@example.org>", b"501 5.5.2"),
        (b"RCPT TO:<rx@exam\x7fple.org>", b"501 5.5.2"),
        (b"RCPT TO:<rx@example.org>\x00", b"501 5.5.2"),
        (b"RCPT TO:<r\tx@example.org>", b"501 5.5.2"),
        (b"RCPT TO:<r\rx@example.org>", b"501 5.5.2"),
        (b"NO\x00OP", b"500 5.5.2 Command not recognized\r\n"),
        (b"RCPT TO:<rx@example.org>", b"250 2.1.5"),  # the nearest line that must pass
    ],
)
def test_control_characters_refused_in_commands_and_addresses(
    server: ServerThread, line: bytes, prefix: bytes
) -> None:
    async def go() -> tuple[bytes, bytes]:
        raw = await Raw(server).open()
        await raw.expect(f"MAIL FROM:<probe@{VERIFIED}>".encode(), b"250")
        answer = await raw.send(line)
        after = await raw.send(b"NOOP")
        await raw.close()
        return answer, after

    answer, after = run(go())
    assert answer.startswith(prefix), answer
    assert after.startswith(b"250"), after  # one reply per line, and the session goes on
    assert b"\x00" not in answer and b"\x7f" not in answer


def test_control_character_in_sender_and_helo_refused(server: ServerThread) -> None:
    async def go() -> tuple[bytes, bytes]:
        raw = await Raw(server).open()
        mail = await raw.send(f"MAIL FROM:<pro\x00be@{VERIFIED}>".encode())
        ehlo = await raw.send(b"EHLO bad\x00host")
        await raw.close()
        return mail, ehlo

    mail, ehlo = run(go())
    assert mail.startswith(b"501 5.5.2") and ehlo.startswith(b"501 5.5.2")


# --- over-long lines -----------------------------------------------------------------------
_INTERNAL = (b"Error:", b"ValueError", b"Separator", b"chunk", b"Traceback", b"limit")


@pytest.mark.parametrize("size", [1100, 70_000, 300_000])
@pytest.mark.parametrize("prompt", [b"AUTH LOGIN", b"AUTH PLAIN"])
def test_overlong_answer_at_auth_prompt_refused_cleanly(
    server: ServerThread, problems: Problems, size: int, prompt: bytes
) -> None:
    """The whole line is one refusal (RFC 4954 §6: 500 5.5.6); nothing of it runs as a
    command; the next command gets the next reply."""

    async def go() -> list[bytes]:
        raw = await Raw(server).open(auth=False)
        assert (await raw.send(prompt)).startswith(b"334")
        # A line that, cut anywhere, would read as commands.
        junk = (b"NOOP\x20" * (size // 5 + 1))[:size]
        raw.writer.write(junk + b"\r\n")
        answers = [await raw.reply(), await raw.send(b"RSET")]
        answers.append(await raw.send(b"QUIT"))
        tail = await asyncio.wait_for(raw.reader.read(), 10)
        await raw.close()
        return [*answers, tail]

    too_long, rset, quit_, tail = run(go())
    assert too_long == b"500 5.5.6 Authentication exchange line is too long\r\n"
    assert rset.startswith(b"250") and quit_.startswith(b"221") and tail == b""
    assert not problems()


@pytest.mark.parametrize("where", ["command", "auth-command", "data"])
def test_overlong_lines_anywhere_refused_without_internal_text(
    server: ServerThread, problems: Problems, where: str
) -> None:
    async def go() -> tuple[bytes, bytes]:
        raw = await Raw(server).open(auth=where != "auth-command")
        if where == "command":
            answer = await raw.send(b"NOOP " + b"x" * 200_000)
        elif where == "auth-command":
            answer = await raw.send(b"AUTH PLAIN " + b"A" * 200_000)
        else:
            await raw.start_data()
            raw.writer.write(message(body="y" * 200_000 + "\r\n"))
            answer = await raw.send(b".")
        after = await raw.send(b"NOOP")
        await raw.close()
        return answer, after

    answer, after = run(go())
    assert answer[:1] == b"5" and answer[4:6] == b"5." and answer.count(b"\r\n") == 1, answer
    assert not any(word in answer for word in _INTERNAL), answer
    assert after.startswith(b"250")
    assert not problems()
