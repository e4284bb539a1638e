"""Read delivered copies of a submitted message, to check what recipients would see.

``maildir``: a folder the target delivers into; the copy is found by the Message-ID the harness
gave the message. Without an observer, checks of delivered copies are "not verified".
"""

from __future__ import annotations

import asyncio
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

_POLL = 0.05
_FIRST_POLL = 0.002


def _find(root: Path, message_id: str, limit: int = 20000) -> Path | None:
    needle = message_id.encode()
    for count, path in enumerate(root.rglob("*")):
        if count >= limit:
            break
        if path.parent.name in ("new", "cur") and path.is_file():
            with open(path, "rb") as fh:
                head = fh.read(65536)
            if needle in head:
                return path
    return None


async def delivered_copy(root: Path, message_id: str, timeout: float) -> EmailMessage | None:
    """The delivered copy with this Message-ID, waiting up to ``timeout`` for it to arrive."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pause = _FIRST_POLL
    while True:
        path = await asyncio.to_thread(_find, root, message_id)
        if path is not None:
            data = await asyncio.to_thread(path.read_bytes)
            parsed = BytesParser(policy=policy.default).parsebytes(data)
            assert isinstance(parsed, EmailMessage)
            return parsed
        if loop.time() >= deadline:
            return None
        # A server may deliver a moment after its 250 (the reference server writes its
        # Maildir copy right after the commit that the 250 follows): look again soon, then
        # back off to the usual pace.
        await asyncio.sleep(pause)
        pause = min(pause * 2, _POLL)
