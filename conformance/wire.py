"""The socket of a session: an asyncio protocol that keeps every byte the server sends, in
order, and hands complete replies out of the strict reader (``framing``).

aiosmtplib's ``SMTPProtocol`` is not used here: it drops bytes that arrive while no command is
waiting, parses its buffer only when new bytes arrive (so a second reply already received is
never handed out), and reads bare-LF and malformed lines as if they were correct. A judge must
see exactly what came. What aiosmtplib adds over asyncio for connecting and upgrading to TLS is
a thin wrapper over ``loop.create_connection`` and ``loop.start_tls``, which are used directly.
"""

from __future__ import annotations

import asyncio
import ssl

from .framing import FramingError, ReplyReader
from .reply import Reply


class Closed(Exception):
    """The connection is gone (the server closed it, or it was reset)."""


class _Protocol(asyncio.Protocol):
    def __init__(self, reader: ReplyReader) -> None:
        self.reader = reader
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.lost_reason: BaseException | None = None
        self._wake: asyncio.Future[None] | None = None
        self._paused = False
        self._drained: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        self._notify()

    def eof_received(self) -> bool:
        self.lost = True
        self._notify()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.lost_reason = exc
        self.transport = None
        self._notify()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _notify(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def changed(self) -> asyncio.Future[None]:
        """A future done when bytes arrive or the connection ends. Made here, before anyone
        awaits it, so nothing that arrives in between is missed."""
        if self._wake is None or self._wake.done():
            self._wake = asyncio.get_running_loop().create_future()
        return self._wake

    async def drain(self) -> None:
        if self._paused and not self.lost:
            self._drained = asyncio.get_running_loop().create_future()
            try:
                await self._drained
            finally:
                self._drained = None


class Connection:
    """One TCP connection to the target, optionally upgraded to TLS."""

    def __init__(self, protocol: _Protocol) -> None:
        self._protocol = protocol

    @classmethod
    async def open(cls, host: str, port: int, timeout: float) -> Connection:
        """Connect; raises ``TimeoutError`` or ``OSError``."""
        loop = asyncio.get_running_loop()
        protocol = _Protocol(ReplyReader())
        async with asyncio.timeout(timeout):
            await loop.create_connection(lambda: protocol, host, port)
        return cls(protocol)

    @property
    def reader(self) -> ReplyReader:
        return self._protocol.reader

    @property
    def open_(self) -> bool:
        transport = self._protocol.transport
        return transport is not None and not transport.is_closing() and not self._protocol.lost

    @property
    def ssl_object(self) -> ssl.SSLObject | None:
        """The TLS session, for reports (cipher, peer certificate); None before STARTTLS."""
        transport = self._protocol.transport
        found = transport.get_extra_info("ssl_object") if transport is not None else None
        return found if isinstance(found, ssl.SSLObject) else None

    @property
    def tls_version(self) -> str | None:
        transport = self._protocol.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        return ssl_object.version() if isinstance(ssl_object, ssl.SSLObject) else None

    def certificate_names(self) -> list[str]:
        """The DNS names and IP addresses of the server's certificate (verified sessions)."""
        transport = self._protocol.transport
        cert = transport.get_extra_info("peercert") if transport is not None else None
        if not isinstance(cert, dict):
            return []
        names = [
            value for kind, value in cert.get("subjectAltName", ()) if kind in ("DNS", "IP Address")
        ]
        return [str(n) for n in names]

    def write(self, data: bytes) -> None:
        transport = self._protocol.transport
        if transport is None or transport.is_closing() or self._protocol.lost:
            raise Closed("the connection is closed")
        transport.write(data)

    async def drain(self) -> None:
        await self._protocol.drain()

    def buffered_reply(self) -> Reply | None:
        """A complete reply already received, without waiting (raises ``FramingError``)."""
        return self._protocol.reader.next_reply()

    async def next_reply(self, timeout: float) -> Reply:
        """The next reply, waiting at most ``timeout`` seconds for it to be complete.

        Raises ``TimeoutError``, ``Closed`` (with nothing complete left) or ``FramingError``.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            reply = self._protocol.reader.next_reply()
            if reply is not None:
                return reply
            if self._protocol.lost:
                raise Closed(self._lost_text())
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            try:
                # Awaited in this task (asyncio.timeout): wait_for would wake it through a
                # second future, one more turn of the event loop for every reply.
                async with asyncio.timeout(remaining):
                    await self._protocol.changed()
            except TimeoutError:
                reply = self._protocol.reader.next_reply()
                if reply is not None:
                    return reply
                raise

    def _lost_text(self) -> str:
        reason = self._protocol.lost_reason
        if reason is None:
            return "the server closed the connection"
        return f"the connection was lost ({reason.__class__.__name__}: {reason})".replace(
            ": )", ")"
        )

    async def wait_lost(self, timeout: float) -> bool:
        """True once the server has closed within ``timeout`` (replies keep being buffered)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._protocol.lost:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                async with asyncio.timeout(remaining):
                    await self._protocol.changed()
            except TimeoutError:
                return self._protocol.lost
        return True

    async def start_tls(
        self, context: ssl.SSLContext, server_hostname: str | None, timeout: float
    ) -> None:
        """Upgrade to TLS on the same socket; raises ``ssl.SSLError``, ``OSError``,
        ``TimeoutError`` or ``Closed``."""
        transport = self._protocol.transport
        if transport is None or self._protocol.lost:
            raise Closed("the server closed the connection before the TLS handshake")
        loop = asyncio.get_running_loop()
        tls = await loop.start_tls(
            transport,
            self._protocol,
            context,
            server_side=False,
            server_hostname=server_hostname,
            ssl_handshake_timeout=timeout,
        )
        if tls is None or self._protocol.lost:
            raise Closed("the server closed the connection during the TLS handshake")
        assert isinstance(tls, asyncio.Transport)
        self._protocol.transport = tls

    def abort(self) -> None:
        transport = self._protocol.transport
        if transport is not None:
            transport.abort()

    async def settle(self, timeout: float = 1.0) -> None:
        """Let an aborted connection finish closing, so no socket is left for the event
        loop's shutdown to complain about."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        spins = 0
        while self._protocol.transport is not None and loop.time() < deadline:
            await asyncio.sleep(0 if spins < 10 else 0.001)
            spins += 1


__all__ = ["Closed", "Connection", "FramingError"]
