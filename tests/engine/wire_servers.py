"""A small SMTP server written for the wire tests, that misbehaves on request: line ends, every
reply twice, a binary greeting, a close during the TLS handshake, and the smuggling bug (bare
LF dot ends DATA, what follows runs as commands) with its replies delayed.

It speaks just enough of the submission exchange for the catalogue's ordinary scenarios (EHLO,
STARTTLS, AUTH PLAIN, MAIL, RCPT, DATA, NOOP, RSET, QUIT), on its own loop in a thread, on
127.0.0.1 with an OS-chosen port.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme


@dataclass
class Behaviour:
    eol: bytes = b"\r\n"
    times: int = 1  # each reply sent this many times
    greeting: bytes | None = None  # instead of the 220 line (sent as it is)
    close_in_handshake: bool = False  # answer 220 to STARTTLS, then close
    lenient_end_of_data: bool = False  # <LF>.<LF> ends DATA; the rest runs as commands
    delay: float = 0.0  # seconds before each reply after a lenient end of data
    pipelining: bool = True
    writes: list[int] = field(default_factory=list)  # filled in: replies per write
    group: bool = False  # hold replies while more commands are buffered, then one write (Postfix)


class _Session:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        how: Behaviour,
        tls: ssl.SSLContext,
    ) -> None:
        self.reader, self.writer, self.how, self.tls = reader, writer, how, tls
        self.pending = b""  # bytes pushed back (the smuggled commands)
        self.secure = False
        self.smuggled = False
        self.held = b""  # replies held back to go out with the next ones (``group``)
        self.writes: list[int] = how.writes  # the number of replies in each write
        self.in_held = 0

    async def line(self) -> bytes:
        while b"\n" not in self.pending:
            chunk = await self.reader.read(65536)
            if not chunk:
                raise EOFError
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        return line + b"\n"

    async def send(self, *lines: str) -> None:
        if self.smuggled and self.how.delay:
            await asyncio.sleep(self.how.delay)
        data = b"".join(line.encode() + self.how.eol for line in lines) * self.how.times
        if self.how.group and b"\n" in self.pending:
            # RFC 2920 §3.1: a server may send the replies to a group together.
            self.held += data
            self.in_held += 1
            return
        self.writer.write(self.held + data)
        self.writes.append(self.in_held + 1)
        self.held, self.in_held = b"", 0
        await self.writer.drain()

    async def run(self) -> None:
        if self.how.greeting is not None:
            self.writer.write(self.how.greeting)
        else:
            await self.send("220 localhost wire test server")
        while True:
            raw = await self.line()
            verb = raw.decode("utf-8", "replace").strip().partition(" ")[0]
            verb = verb.upper()
            if verb == "EHLO":
                extra = ["250-AUTH PLAIN"] if self.secure else ["250-STARTTLS"]
                pipe = ["250-PIPELINING"] if self.how.pipelining else []
                await self.send(
                    "250-localhost", "250-SIZE 5242880", *pipe, *extra, "250 ENHANCEDSTATUSCODES"
                )
            elif verb == "STARTTLS":
                await self.send("220 2.0.0 Ready")
                if self.how.close_in_handshake:
                    self.writer.close()
                    return
                self.pending = b""
                await self.writer.start_tls(self.tls)
                self.secure = True
            elif verb == "AUTH":
                await self.send("235 2.7.0 OK")
            elif verb in ("MAIL", "RSET", "NOOP"):
                await self.send(f"250 2.{1 if verb == 'MAIL' else 0}.0 OK")
            elif verb == "RCPT":
                await self.send("250 2.1.5 OK")
            elif verb == "DATA":
                await self.send("354 go ahead")
                await self.data()
            elif verb == "QUIT":
                await self.send("221 2.0.0 Bye")
                self.writer.close()
                return
            else:
                await self.send("500 5.5.2 what?")

    async def data(self) -> None:
        markers = [b"\r\n.\r\n"] + ([b"\n.\n"] if self.how.lenient_end_of_data else [])
        body = b"\r\n"  # so a dot on the first line is found too
        while True:
            found = [(body.find(m), m) for m in markers if body.find(m) >= 0]
            if found:
                at, marker = min(found)
                self.pending = body[at + len(marker) :] + self.pending
                break
            body += self.pending or await self.reader.read(65536)
            self.pending = b""
        await self.send(f"250 2.0.0 OK ids=email_{_uuid7()}")
        self.smuggled = bool(self.pending)


def _uuid7() -> str:
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10)) & ((1 << 80) - 1)
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # variant 10
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class WireServer:
    def __init__(self, how: Behaviour, tmp: Path) -> None:
        self.how = how
        ca = trustme.CA()
        self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("localhost").configure_cert(self.tls)
        self.ca = str(tmp / "wire-ca.pem")
        ca.cert_pem.write_to_path(self.ca)
        self.loop = asyncio.new_event_loop()
        self.tasks: set[asyncio.Task[None]] = set()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await _Session(reader, writer, self.how, self.tls).run()
        except (EOFError, ConnectionError, ssl.SSLError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self.tasks.discard(task)

    @contextlib.contextmanager
    def running(self) -> Iterator[int]:
        server = self.loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        thread.start()
        try:
            yield server.sockets[0].getsockname()[1]
        finally:

            async def shutdown() -> None:
                server.close()
                for task in list(self.tasks):
                    task.cancel()
                await asyncio.sleep(0.05)

            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            thread.join(10)
            self.loop.close()


@contextlib.contextmanager
def wire_server(tmp: Path, **how: Any) -> Iterator[tuple[int, str]]:
    server = WireServer(Behaviour(**how), tmp)
    with server.running() as port:
        yield port, server.ca
