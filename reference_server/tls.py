"""The server's TLS context: a certificate from files, or a trustme CA made at start-up."""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme

from .config import ServerConfig


def server_context(config: ServerConfig) -> tuple[ssl.SSLContext, Path | None]:
    """The context to serve STARTTLS with, and the CA file clients should trust (if made)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    # BRIEF §4: only TLS 1.2 and 1.3 are accepted.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.tls_cert is not None and config.tls_key is not None:
        context.load_cert_chain(config.tls_cert, config.tls_key)
        return context, None
    ca = trustme.CA()
    names = sorted({"localhost", "127.0.0.1", "::1", config.hostname})
    ca.issue_cert(*names).configure_cert(context)
    ca_path = config.ca_out or (config.spool / "ca.pem")
    ca_path.parent.mkdir(parents=True, exist_ok=True)
    ca.cert_pem.write_to_path(str(ca_path))
    return context, ca_path
