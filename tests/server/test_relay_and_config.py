"""The optional relay to a smart host, the sample configuration, and command limits."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import replace
from email import message_from_bytes
from pathlib import Path
from typing import Any

from reference_server.config import Relay, load_config

from ..support import Client, ServerThread, make_config, message, run, running

SAMPLE = Path(__file__).resolve().parents[2] / "reference_server" / "sample-config.yaml"


class Sink:
    """A capture SMTP server on loopback (aiosmtpd), the smart host the reference relays to."""

    def __init__(self) -> None:
        from aiosmtpd.smtp import SMTP

        self.messages: list[tuple[str, list[str], bytes]] = []
        self.loop = asyncio.new_event_loop()
        sink = self

        class Capture:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                sink.messages.append(
                    (envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
                )
                return "250 OK"

        handler = Capture()
        self.server = self.loop.run_until_complete(
            self.loop.create_server(lambda: SMTP(handler, loop=self.loop), "127.0.0.1", 0)
        )
        self.port = self.server.sockets[0].getsockname()[1]
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        async def shutdown() -> None:
            self.server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()


def test_relay_forwards_the_stripped_message(tmp_path: Path) -> None:
    sink = Sink()
    try:
        config = replace(make_config(tmp_path), relay=Relay("127.0.0.1", sink.port))
        with running(config) as server:

            async def go() -> int:
                client = Client(server)
                await client.ready()
                reply = await client.submit(
                    message(headers=("X-Anypost-Tag: a", "X-Campaign: c")),
                    rcpts=("a@sink.test", "b@sink.test"),
                )
                await client.close()
                return reply.code

            assert run(go()) == 250
            deadline = time.monotonic() + 10
            while not sink.messages and time.monotonic() < deadline:
                time.sleep(0.02)  # the relay runs after the 250, in the background
    finally:
        sink.close()
    [(sender, rcpts, data)] = sink.messages
    assert sender == "probe@acme.test" and rcpts == ["a@sink.test", "b@sink.test"]
    parsed = message_from_bytes(data)
    assert (
        parsed["X-Anypost-Tag"] is None
        and parsed["X-Campaign"] is None
        and parsed["Subject"] == "test"
    )


def test_sample_config_loads_with_its_environment() -> None:
    env = {
        "ANYPOST_KEY_SEND_ONLY": "ap_a1",
        "ANYPOST_KEY_FULL_ACCESS": "ap_b2",
        "ANYPOST_KEY_RESTRICTED": "ap_c3",
        "ANYPOST_KEY_NO_SEND": "ap_d4",
    }
    config = load_config(SAMPLE, env=env)
    assert config.ports == (10587, 2587, 10025)  # unprivileged stand-ins (README)
    assert {k.permission for k in config.keys} == {"send_only", "full_access", "read_only"}
    assert config.limits.message_size == 5242880


def test_command_line_limit(server: ServerThread) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.recv(1024)
        sock.sendall(b"NOOP " + b"x" * 600 + b"\r\n")
        answer = sock.recv(1024)
        sock.sendall(b"NOOP\r\n")
        after = sock.recv(1024)
    assert answer.startswith(b"500 5.5.2") and after.startswith(b"250")
