"""The capture sink: an SMTP server on loopback that the target relays delivered copies to.

It writes every message it receives into a Maildir-style folder (``new/``, atomic rename), which
the observer reads. It runs on its own event loop in a thread, so it serves while scenarios run.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP


class _Store:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        name = uuid.uuid4().hex
        tmp = self.folder / "tmp" / name
        tmp.write_bytes(envelope.original_content)
        os.replace(tmp, self.folder / "new" / name)
        return "250 2.0.0 Captured"


class CaptureSink:
    def __init__(self, folder: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.folder = folder
        self.host = host
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="capture-sink", daemon=True
        )

    def start(self) -> int:
        for sub in ("tmp", "new", "cur"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        store = _Store(self.folder)
        loop = self._loop

        def factory() -> SMTP:
            return SMTP(store, hostname="capture-sink", data_size_limit=None, loop=loop)

        self._server = loop.run_until_complete(loop.create_server(factory, self.host, self.port))
        self.port = self._server.sockets[0].getsockname()[1]
        self._thread.start()
        return self.port

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.run_until_complete(asyncio.sleep(0))
        self._loop.close()
