"""``python -m reference_server``: run the reference server in the foreground.

When it listens it prints one JSON line on stdout (``{"event": "listening", ...}``) with the
bound ports and the CA file, so scripts can wait for it; SIGTERM or SIGINT stop it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

from .config import ConfigError, load_config
from .server import ReferenceServer

SAMPLE = Path(__file__).with_name("sample-config.yaml")


def _ports(text: str) -> tuple[int, ...]:
    try:
        ports = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise ConfigError(f"--ports: expected comma-separated port numbers, got {text!r}") from None
    if not all(0 <= p <= 65535 for p in ports):
        raise ConfigError(f"--ports: {text!r} holds a number that is not a port")
    return ports


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reference_server", description="The Anypost SMTP reference server."
    )
    parser.add_argument("--config", type=Path, default=SAMPLE, help="YAML configuration file")
    parser.add_argument(
        "--ports",
        help="comma-separated ports overriding the configuration (0 = any free port; the "
        "contract's 587,2587,25 need root)",
    )
    parser.add_argument(
        "--spool",
        type=Path,
        help="spool folder overriding the configuration (default: "
        "$XDG_STATE_HOME/anypost-reference-server)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every SMTP line")
    return parser


async def serve(server: ReferenceServer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    line = {
        "event": "listening",
        "host": server.config.host,
        "ports": server.ports,
        "ca": str(server.ca_path) if server.ca_path else None,
        "spool": str(server.config.spool),
        "pid": os.getpid(),
    }
    print(json.dumps(line), flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()
        print(json.dumps({"event": "stopped"}), flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if not args.verbose:
        # aiosmtpd logs each line at INFO, AUTH payloads included: keep that out of logs.
        logging.getLogger("mail.log").setLevel(logging.ERROR)
    try:
        config = load_config(args.config)
        if args.ports:
            config = replace(config, ports=_ports(args.ports))
        if args.spool:
            config = replace(config, spool=args.spool)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(ReferenceServer(config)))
    except PermissionError as exc:
        low = [p for p in config.ports if 0 < p < 1024]
        hint = (
            f" (ports {low} need root; run as an ordinary user with --ports 10587,2587,10025,"
            " or 0 for free ports)"
            if low
            else ""
        )
        print(f"error: cannot listen or write the spool: {exc}{hint}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot listen or write the spool: {exc}", file=sys.stderr)
        return 2
    return 0
