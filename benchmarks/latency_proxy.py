"""A TCP relay that delays every chunk by a fixed time each way: a target at a network distance
(a staging server a CI job reaches over the internet), made from one on loopback.

TLS passes through untouched (STARTTLS is the client's and the server's business); order is
kept because every chunk of a direction is delayed by the same time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading


class LatencyProxy:
    """Listens on a free loopback port per upstream port; ``delay`` seconds each way."""

    def __init__(self, upstream: list[int], delay: float, host: str = "127.0.0.1") -> None:
        self.upstream = upstream
        self.delay = delay
        self.host = host
        self.ports: list[int] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._servers: list[asyncio.Server] = []

    def start(self) -> list[int]:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        self.ports = future.result(timeout=10)
        return self.ports

    async def _start(self) -> list[int]:
        ports = []
        for port in self.upstream:
            server = await asyncio.start_server(
                functools.partial(self._relay, port=port), self.host, 0
            )
            self._servers.append(server)
            ports.append(server.sockets[0].getsockname()[1])
        return ports

    async def _relay(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, port: int
    ) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(self.host, port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(
            self._pipe(client_r, server_w), self._pipe(server_r, client_w), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()

        def send(chunk: bytes) -> None:
            if not writer.is_closing():
                writer.write(chunk)

        def close() -> None:
            with contextlib.suppress(OSError):
                writer.close()

        try:
            while chunk := await reader.read(65536):
                loop.call_later(self.delay, send, chunk)
        except OSError:
            pass
        loop.call_later(self.delay, close)

    def stop(self) -> None:
        async def close() -> None:
            for server in self._servers:
                server.close()
                await server.wait_closed()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
