"""``ReferenceServer``: the listeners of the contract's three ports, started and stopped."""

from __future__ import annotations

import asyncio
import logging
import weakref
from pathlib import Path

from .config import ServerConfig
from .handler import AnypostHandler
from .limits import AuthFailureLimiter
from .message_ids import IdGenerator
from .relay import Relayer
from .session import AnypostSMTP
from .spool import Spool
from .tls import server_context

log = logging.getLogger("reference_server")


class ReferenceServer:
    def __init__(
        self,
        config: ServerConfig,
        ids: IdGenerator | None = None,
        handler_class: type[AnypostHandler] = AnypostHandler,
        smtp_class: type[AnypostSMTP] = AnypostSMTP,
    ) -> None:
        # The classes are parameters so that tests can run variants that break one rule.
        self.config = config
        self._ids = ids
        self._handler_class = handler_class
        self._smtp_class = smtp_class
        self._servers: list[asyncio.Server] = []
        self._sessions: weakref.WeakSet[AnypostSMTP] = weakref.WeakSet()
        self.ports: list[int] = []
        self.ca_path: Path | None = None
        self.spool: Spool | None = None
        self.handler: AnypostHandler | None = None
        self._relayer: Relayer | None = None

    async def start(self) -> None:
        config = self.config
        context, self.ca_path = server_context(config)
        self.spool = Spool(config.spool)
        limiter = AuthFailureLimiter(
            config.limits.auth_failure_threshold, config.limits.auth_failure_cooldown
        )
        if config.relay is not None:
            self._relayer = Relayer(config.relay.host, config.relay.port)
        self.handler = self._handler_class(config, self.spool, limiter, self._ids, self._relayer)
        loop = asyncio.get_running_loop()
        handler = self.handler

        def factory() -> AnypostSMTP:
            smtp = self._smtp_class(
                handler,
                data_size_limit=config.limits.message_size,
                hostname=config.hostname,
                ident="Anypost reference server",
                tls_context=context,
                require_starttls=True,
                auth_required=True,
                auth_require_tls=True,
                timeout=config.limits.idle_timeout,
                loop=loop,
            )
            self._sessions.add(smtp)
            return smtp

        try:
            for port in config.ports:
                server = await loop.create_server(factory, host=config.host, port=port)
                self._servers.append(server)
                self.ports.append(server.sockets[0].getsockname()[1])
        except BaseException:
            await self.stop()
            raise

    async def stop(self, grace: float = 5.0) -> None:
        """Stop listening, let stores in progress finish, then close every session."""
        for server in self._servers:
            server.close()
        deadline = asyncio.get_running_loop().time() + grace
        while self.handler is not None and self.handler.in_flight:
            if asyncio.get_running_loop().time() >= deadline:
                break
            await asyncio.sleep(0.02)
        open_sessions = [s for s in self._sessions if s.transport is not None]
        for smtp in open_sessions:
            # Abort, not close: a TLS close waits for the peer's close_notify, which a client
            # that vanished never sends. The plaintext transport under TLS goes with it.
            for transport in (smtp.transport, getattr(smtp, "_original_transport", None)):
                if isinstance(transport, asyncio.Transport) and not transport.is_closing():
                    transport.abort()
        # A TLS close finishes asynchronously; let it, so no socket outlives the server.
        loop = asyncio.get_running_loop()
        closing_deadline = loop.time() + 2.0
        while (
            any(s.transport is not None for s in open_sessions) and loop.time() < closing_deadline
        ):
            await asyncio.sleep(0.01)
        self._sessions.clear()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        # Connections that ended just before stop() leave close callbacks queued: run them.
        for _ in range(3):
            await asyncio.sleep(0)
        if self._relayer is not None:
            await self._relayer.drain(grace)
        if self.spool is not None:
            self.spool.close()
            self.spool = None

    async def __aenter__(self) -> ReferenceServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
