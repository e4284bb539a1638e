"""Optional relay of stored messages to a smart host, so a capture sink can observe delivery.

Relaying happens after the message is stored and answered: a relay failure is logged and never
changes the answer to the client.
"""

from __future__ import annotations

import asyncio
import logging

import aiosmtplib

log = logging.getLogger("reference_server.relay")


class Relayer:
    def __init__(self, host: str, port: int, timeout: float = 30.0) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self._tasks: set[asyncio.Task[None]] = set()
        self._failing = False

    def relay(self, mail_from: str, recipients: tuple[str, ...], message: bytes) -> None:
        """Forward a stored message, as delivered (the Maildir copy may not be written yet:
        the 250 follows the journal's commit, the copy follows the 250)."""
        task = asyncio.get_running_loop().create_task(self._send(mail_from, recipients, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, mail_from: str, recipients: tuple[str, ...], message: bytes) -> None:
        try:
            await aiosmtplib.send(
                message,
                sender=mail_from,
                recipients=list(recipients),
                hostname=self.host,
                port=self.port,
                timeout=self.timeout,
                start_tls=False,
                use_tls=False,
            )
        except Exception as exc:  # a relay failure must not reach the SMTP session
            if not self._failing:
                log.warning(
                    "relay to %s:%s failing: %s (logged again once it recovers)",
                    self.host,
                    self.port,
                    exc,
                )
            self._failing = True
        else:
            if self._failing:
                log.warning("relay to %s:%s works again", self.host, self.port)
            self._failing = False

    async def drain(self, timeout: float) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
