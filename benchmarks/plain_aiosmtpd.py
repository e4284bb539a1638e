"""Plain aiosmtpd doing the same STARTTLS + AUTH exchange with no policy: the baseline.

Prints one JSON line with its port and CA file, then serves until killed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import sys
from pathlib import Path
from typing import Any

import trustme
from aiosmtpd.smtp import SMTP, AuthResult


class Accept:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


def accept_all(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    return AuthResult(success=True)


async def main(folder: Path) -> None:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    ca_path = folder / "plain-ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    loop = asyncio.get_running_loop()
    handler = Accept()

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
    asyncio.run(main(Path(sys.argv[1])))
