"""Points 7 and 10: the server as a process (its CLI, SIGTERM, kill -9 during a burst). Real
clients (swaks, curl, msmtp, smtplib) are in tests/interop/."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import smtplib
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from reference_server.spool import Spool, read_events

from ..interop.conftest import require
from ..support import KEYS, VERIFIED, message, plain_auth, raw_config, read_reply
from .test_message import ID


def _config(tmp_path: Path, **limits: Any) -> Path:
    path = tmp_path / "server.yaml"
    path.write_text(yaml.safe_dump(raw_config(tmp_path, **limits)))
    return path


class Process:
    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reference_server", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the server prints it as soon as it listens
        self.info = json.loads(line)

    @property
    def port(self) -> int:
        return int(self.info["ports"][0])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def process(tmp_path: Path) -> Iterator[Process]:
    proc = Process(_config(tmp_path))
    try:
        yield proc
    finally:
        proc.close()


def test_cli_prints_listening_line_and_stops_on_sigterm(process: Process, tmp_path: Path) -> None:
    info = process.info
    assert info["event"] == "listening" and len(info["ports"]) == 3
    assert Path(info["ca"]) == tmp_path / "ca.pem" and Path(info["ca"]).is_file()
    process.proc.send_signal(signal.SIGTERM)
    assert process.proc.wait(15) == 0
    assert process.proc.stdout is not None
    assert json.loads(process.proc.stdout.readline()) == {"event": "stopped"}


def test_cli_bad_config_exits_2_with_the_place(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("limits: {message_size: 10}\nteams: [{name: a, keys: [{id: k}]}]\n")
    done = subprocess.run(
        [sys.executable, "-m", "reference_server", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "teams[0].keys[0]" in done.stderr and "secret" in done.stderr


def _smtplib_submit(port: int, ca: str, body: str) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.starttls(context=ssl.create_default_context(cafile=ca))
        smtp.login("anypost", KEYS["send_only"])
        smtp.mail(f"probe@{VERIFIED}")
        smtp.rcpt("a@sink.test")
        return smtp.data(message(body=body))


def _require(tool: str) -> str:
    """A real tool for the tests here; missing, it fails the test (tests/interop/conftest.py)."""
    return require(tool)


def test_crash_kill_9_loses_no_accepted_message(tmp_path: Path) -> None:
    """Every message answered 250 before a kill -9 is in the Maildir and the event log."""
    proc = Process(_config(tmp_path))
    accepted: list[str] = []
    ca = proc.info["ca"]

    async def client(n: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)

        async def reply() -> bytes:
            return await read_reply(reader)

        try:
            await reply()
            writer.write(b"EHLO crash.test\r\n")
            await reply()
            writer.write(b"STARTTLS\r\n")
            await reply()
            await writer.start_tls(
                ssl.create_default_context(cafile=ca), server_hostname="localhost"
            )
            writer.write(
                b"EHLO crash.test\r\nAUTH PLAIN " + plain_auth(KEYS["send_only"]) + b"\r\n"
            )
            await reply()
            await reply()
            for i in range(1000):  # bounded: the kill comes long before
                writer.write(
                    f"MAIL FROM:<probe@{VERIFIED}>\r\nRCPT TO:<r{n}@sink.test>\r\nDATA\r\n".encode()
                )
                await reply()
                await reply()
                await reply()
                writer.write(
                    message(body=f"burst {n}/{i}\r\n" + ("x" * 76 + "\r\n") * 30) + b".\r\n"
                )
                answer = await reply()
                if answer.startswith(b"250"):
                    accepted.extend(re.findall(ID, answer.decode()))
        except (ConnectionError, OSError, asyncio.IncompleteReadError, TimeoutError, ssl.SSLError):
            pass  # the server died under us: that is the point
        finally:
            writer.close()

    async def burst() -> None:
        tasks = [asyncio.create_task(client(n)) for n in range(8)]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while len(accepted) < 60 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        os.kill(proc.proc.pid, signal.SIGKILL)
        await asyncio.gather(*tasks)

    try:
        asyncio.run(burst())
    finally:
        proc.close()
    assert len(accepted) >= 60
    events = {str(e["email_id"]): e for e in read_events(tmp_path / "spool" / "events.sqlite3")}
    missing = [i for i in accepted if i not in events]
    assert not missing, f"{len(missing)} of {len(accepted)} accepted messages lost"
    # The next start writes back from the journal any copy the kill came before.
    Spool(tmp_path / "spool").close()
    for email_id in accepted:
        assert Path(str(events[email_id]["path"])).is_file()


def test_cli_serve_runs_the_reference_server(tmp_path: Path) -> None:
    """`anypost-conformance serve` is the reference server in the foreground, SIGTERM included."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "conformance",
            "serve",
            "--config",
            str(_config(tmp_path)),
            "--ports",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["event"] == "listening" and len(info["ports"]) == 1
        code, _ = _smtplib_submit(info["ports"][0], info["ca"], "via serve\r\n")
        assert code == 250
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()
