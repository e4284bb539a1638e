"""What the target says about itself, for the report's header: on each port, the banner, the
EHLO extensions before and after STARTTLS, and the TLS version, cipher and certificate subject.

One short polite session per port (EHLO, STARTTLS, EHLO, QUIT): no login, no mail. A port that
does not answer is described by what went wrong, never an exception: the report still gets
written.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .driver import Driver, tls_context
from .errors import TransportError
from .model import Profile
from .transcript import Redactor, Transcript

EHLO_NAME = "conformance.invalid"


async def _probe_port(profile: Profile, port: int) -> dict[str, Any]:
    ca = str(profile.tls.ca_file) if profile.tls.ca_file else None
    driver = Driver(
        profile.host,
        port,
        min(profile.timeout, 10),
        Transcript(Redactor([])),
        lambda: tls_context(ca, profile.tls.system, profile.tls.insecure),
        profile.tls.server_name,
    )
    found: dict[str, Any] = {"port": port}
    try:
        banner = await driver.connect()
        found["banner"] = str(banner)
        ehlo = await driver.command(f"EHLO {EHLO_NAME}")
        found["extensions"] = sorted(f"{k} {v}".strip() for k, v in ehlo.extensions().items())
        if "STARTTLS" in ehlo.extensions():
            reply = await driver.starttls()
            if reply.code == 220:
                found["tls"] = driver.tls_details()
                after = await driver.command(f"EHLO {EHLO_NAME}")
                found["extensions_after_tls"] = sorted(
                    f"{k} {v}".strip() for k, v in after.extensions().items()
                )
    except TransportError as exc:
        found["error"] = exc.message
    finally:
        try:
            await asyncio.wait_for(driver.finish(), driver.timeout + 1)
        except (TimeoutError, TransportError):
            driver.abort()
    return found


def probe_target(profile: Profile) -> dict[str, Any]:
    """Each named port's banner, extensions and TLS details, keyed by the port's name."""

    async def probe_all() -> dict[str, Any]:
        results = await asyncio.gather(
            *(_probe_port(profile, port) for port in profile.ports.values())
        )
        return dict(zip(profile.ports, results, strict=True))

    try:
        return asyncio.run(probe_all())
    except Exception as exc:  # the header of a report is never worth losing the report for
        return {"error": f"{type(exc).__name__}: {exc}"}
