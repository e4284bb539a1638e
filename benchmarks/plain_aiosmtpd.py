"""Plain aiosmtpd doing the same STARTTLS + AUTH exchange with no policy: the baseline.

With ``--fsync`` it also makes each message durable before its 250 the cheapest way there is:
one write into a preallocated log file and one ``fdatasync``, in a thread so the event loop
goes on. That is the floor of what "every 250 follows a sync" costs on this machine, with
nothing else of a real store (no Maildir, no event log, no recovery).

Prints one JSON line with its port and CA file, then serves until killed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import sys
import threading
from pathlib import Path
from typing import Any

import trustme
from aiosmtpd.smtp import SMTP, AuthResult

LOG_SIZE = 8 * 1024 * 1024


class Accept:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


class SyncedAccept(Accept):
    """Each message into a ring of allocated blocks, then ``fdatasync`` (overwriting allocated
    blocks syncs data only, as a write-ahead log does once it has wrapped)."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(self._fd, bytes(LOG_SIZE))
        os.fsync(self._fd)
        self._offset = 0
        self._lock = threading.Lock()

    def _append(self, data: bytes) -> None:
        with self._lock:
            if self._offset + len(data) > LOG_SIZE:
                self._offset = 0
            offset = self._offset
            self._offset += len(data)
        os.pwrite(self._fd, data, offset)
        os.fdatasync(self._fd)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.get_running_loop().run_in_executor(None, self._append, envelope.content)
        return "250 OK"


def accept_all(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    return AuthResult(success=True)


async def main(folder: Path, fsync: bool) -> None:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    ca_path = folder / "plain-ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    loop = asyncio.get_running_loop()
    handler = SyncedAccept(folder / "plain.log") if fsync else Accept()

    def factory() -> SMTP:
        return SMTP(
            handler,
            tls_context=context,
            require_starttls=True,
            auth_required=True,
            authenticator=accept_all,
            data_size_limit=5 * 1024 * 1024,
            hostname="localhost",
            loop=loop,
        )

    server = await loop.create_server(factory, "127.0.0.1", 0)
    print(
        json.dumps({"ports": [server.sockets[0].getsockname()[1]], "ca": str(ca_path)}), flush=True
    )
    await asyncio.Event().wait()


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)  # as quiet as the reference server's CLI
    asyncio.run(main(Path(sys.argv[1]), "--fsync" in sys.argv[2:]))
