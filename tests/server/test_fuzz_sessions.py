"""Fuzzing: hypothesis-generated command lines and DATA streams, before TLS and after login,
never crash the server, leak a traceback or internal text, hang a session, or keep sessions
(and their memory) alive; the server keeps serving.

Bounded for CI: each example is at most a few dozen lines and some tens of kilobytes, and the
number of examples is fixed (ANYPOST_FUZZ_EXAMPLES raises it for a longer local run).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import re
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..support import VERIFIED, ServerThread, make_config, message, running
from .test_rfc_behaviour import Raw

EXAMPLES = int(os.environ.get("ANYPOST_FUZZ_EXAMPLES", "60"))

_VERBS = st.sampled_from(
    [b"EHLO", b"HELO", b"MAIL FROM:", b"RCPT TO:", b"RSET", b"NOOP", b"AUTH", b"AUTH PLAIN",
     b"AUTH LOGIN", b"auth login", b"STARTTLS", b"VRFY", b"EXPN", b"HELP", b"BDAT", b"DATA",
     b"QUIT", b"", b"X" * 3000]
)  # fmt: skip
_ARGS = st.one_of(
    st.binary(max_size=48),
    st.sampled_from(
        [b"<probe@acme.test>", b"<a@sink.test>", b"<>", b"<@x:y@z>", b"SIZE=99999999999999999",
         b"AUTH=<>", b"AUTH=", b"BODY=8BITMIME", b"SMTPUTF8", b"\x00", b"*", b"=?utf-8?q?x?=",
         b"AGFueXBvc3QAeA==", b"x" * 1200]
    ),
)  # fmt: skip
_ENDINGS = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b""])
_COMMAND = st.builds(lambda v, a, e: v + (b" " + a if a else b"") + e, _VERBS, _ARGS, _ENDINGS)
_DATA_PIECES = st.one_of(
    st.binary(max_size=300),
    st.sampled_from(
        [b".\r\n", b"\r\n.\r\n", b"\n.\n", b"\r.\r", b"\r\n.\n", b"..", b"\r\n", b"\n",
         b"From: x@other.test\r\n", b"From: probe@acme.test\r\n\r\n", b"y" * 5000,
         b"MAIL FROM:<x@other.test>\r\nRCPT TO:<a@sink.test>\r\nDATA\r\n"]
    ),
)  # fmt: skip
_DATA = st.lists(_DATA_PIECES, max_size=20).map(lambda parts: b"DATA\r\n" + b"".join(parts))
_SESSION = st.tuples(
    st.sampled_from(["plaintext", "authenticated"]),
    st.lists(st.one_of(_COMMAND, _DATA), min_size=1, max_size=10),
)

# A reply line: three digits, then a space, a hyphen or the end.
_REPLY_LINE = re.compile(rb"^\d{3}(?:[ -].*)?$")
_INTERNAL = re.compile(rb"Traceback|\(\w*(?:Error|Exception)\)|Separator is|chunk is longer")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _fuzz_one(server: ServerThread, mode: str, pieces: list[bytes]) -> bytes:
    session = Raw(server)
    await session.open(tls=mode == "authenticated", auth=mode == "authenticated")
    for piece in pieces:
        session.writer.write(piece)
    # End whatever state the input left: a line, a DATA body, a prompt; then QUIT.
    session.writer.write(b"\r\n.\r\nQUIT\r\n")
    try:
        received = await asyncio.wait_for(session.reader.read(), 30)
    except (ConnectionError, OSError):
        received = b""  # the server closed first (a failed nested handshake, say)
    await session.close()
    return received


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc for the RSS")
def test_fuzzed_sessions_never_crash_leak_or_hang(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with running(make_config(tmp_path, idle_timeout=5)) as server:
        rss_before = _rss_bytes()

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(_SESSION)
        def one_session(session: tuple[str, list[bytes]]) -> None:
            mode, pieces = session
            started = time.monotonic()
            received = asyncio.run(_fuzz_one(server, mode, pieces))
            assert time.monotonic() - started < 40
            for line in received.split(b"\r\n")[:-1]:
                assert _REPLY_LINE.match(line), line[:120]
            assert not _INTERNAL.search(received), received[-400:]

        one_session()

        # Every session the fuzzing opened has ended, and none is kept alive.
        # (A session's task may take a few loop turns to finish after its connection ends;
        # one parked for good would keep its session, and all it holds, forever.)
        sessions = server.server._sessions
        deadline = time.monotonic() + 30  # well past the idle timeout
        while time.monotonic() < deadline:
            gc.collect()
            if not sessions:
                break
            time.sleep(0.1)
        assert not sessions, f"{len(sessions)} sessions outlive their connections"
        growth = _rss_bytes() - rss_before
        assert growth < 150 * 1024 * 1024, f"RSS grew by {growth // 2**20} MiB"

        # The server still serves a whole submission.
        async def submit() -> bytes:
            session = await Raw(server).open()
            await session.expect(f"MAIL FROM:<probe@{VERIFIED}>".encode(), b"250")
            await session.expect(b"RCPT TO:<a@sink.test>", b"250")
            await session.expect(b"DATA", b"354")
            session.writer.write(message())
            final = await session.send(b".")
            await session.close()
            return final

        assert asyncio.run(submit()).startswith(b"250 2.0.0 OK ids=")

    bad = [
        r
        for r in caplog.records
        if r.exc_info or r.levelno >= logging.ERROR or "Traceback" in r.getMessage()
    ]
    assert not bad, [(r.name, r.getMessage()) for r in bad[:5]]
