"""The capture sink and the observer that reads what it captured."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib

from conformance.observer import delivered_copy
from conformance.sink import CaptureSink


def test_sink_captures_and_observer_finds_by_message_id(tmp_path: Path) -> None:
    sink = CaptureSink(tmp_path / "sink")
    port = sink.start()
    try:

        async def go() -> tuple[EmailMessage | None, EmailMessage | None]:
            message = b"From: a@acme.test\r\nMessage-ID: <one@conformance.test>\r\nX-Kept: yes\r\n\r\nhello\r\n"
            await aiosmtplib.send(
                message,
                sender="a@acme.test",
                recipients=["r@sink.test"],
                hostname="127.0.0.1",
                port=port,
                start_tls=False,
            )
            found = await delivered_copy(tmp_path / "sink", "<one@conformance.test>", 5)
            missing = await delivered_copy(tmp_path / "sink", "<two@conformance.test>", 0.2)
            return found, missing

        found, missing = asyncio.run(go())
    finally:
        sink.stop()
    assert found is not None and found["X-Kept"] == "yes"
    assert missing is None
